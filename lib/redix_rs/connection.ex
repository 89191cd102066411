defmodule RedixRs.Connection do
  # The process behind a `RedixRs` connection. It owns the native handle: it connects, publishes the
  # handle for callers (`RedixRs.Handles`), reconnects with backoff and emits the connection telemetry.
  # It is never on the path of a command or a reply, except for callers on other nodes (a native handle
  # cannot cross nodes), whose calls it runs on their behalf.
  @moduledoc false
  use GenServer

  alias RedixRs.{ConnectionError, Connector, Handles, Native}

  defstruct [
    :opts,
    :handle,
    :id,
    :status,
    :backoff,
    keys: [],
    waiting: [],
    remote_calls: %{},
    # the health check in progress: %{ref, token} while its PING is out, %{ref} while probing
    health: nil,
    connected_before: false
  ]

  def start_link(opts), do: Connector.start_link(__MODULE__, opts)

  @impl true
  def init(opts) do
    name = opts[:name]
    keys = if is_atom(name) and name != nil, do: [self(), name], else: [self()]
    Handles.watch()
    opts = RedixRs.Cache.setup(opts)
    RedixRs.Cache.publish(keys, opts)

    state = %__MODULE__{opts: start_side_connections(opts), keys: keys, status: :connecting}

    if opts[:sync_connect] do
      connect_synchronously(state)
    else
      {:ok, state, {:continue, :connect}}
    end
  end

  @impl true
  def handle_continue(:connect, state), do: {:noreply, start_attempt(state)}

  @impl true
  def handle_call(:handle, from, %{status: status} = state) do
    case status do
      :connected -> {:reply, {:ok, state.handle, self()}, state}
      :connecting -> {:noreply, %{state | waiting: [from | state.waiting]}}
      :backoff -> {:reply, {:error, %ConnectionError{reason: :closed}}, state}
    end
  end

  def handle_call(:cache_stats, _from, state) do
    {:reply, RedixRs.Cache.stats_of(state.opts), state}
  end

  def handle_call({:run, commands, kind, timeout}, from, state) do
    if state.status == :connected do
      {:noreply, run_for_remote_caller(commands, kind, timeout, from, state)}
    else
      {:reply, {:error, %ConnectionError{reason: :closed}}, state}
    end
  end

  @impl true
  def handle_info({:redix_rs_native, id, event}, %{id: id} = state),
    do: Connector.native_event(event, state, &handle_event/2)

  def handle_info({:redix_rs_native, _stale_id, _event}, state), do: {:noreply, state}
  def handle_info(:reconnect, state), do: {:noreply, start_attempt(state)}

  # Health checks (`health_check_interval`): a PING on the connection; if it is not answered within
  # the interval, it may be waiting behind a blocking command (BLPOP 0), so a fresh connection asks the
  # server directly. Only when that fails too is the connection declared dead.
  # Checks are tagged with the connection's id: a timer left from an earlier connection is ignored,
  # so each connection has one chain of checks.
  def handle_info({:health_check, id}, %{id: id, status: :connected, health: nil} = state) do
    ref = make_ref()

    case RedixRs.Call.submit_for_self(state.handle, ref, [["PING"]]) do
      {:ok, token} ->
        Process.send_after(self(), {:health_deadline, ref}, state.opts[:health_check_interval])
        {:noreply, %{state | health: %{ref: ref, token: token}}}

      # Closed (a disconnection event follows) or the write queue is full: try at the next tick.
      {:error, _} ->
        {:noreply, schedule_health_check(state)}
    end
  end

  def handle_info({:health_check, _id}, state), do: {:noreply, state}

  def handle_info({ref, _result, _reply}, %{health: %{ref: ref}} = state) do
    {:noreply, healthy(state)}
  end

  def handle_info({:health_deadline, ref}, %{health: %{ref: ref, token: token}} = state) do
    if Native.cancel(token) == :sent do
      # The PING's answer was sent just now: it is (or will be) in the mailbox; handled above.
      {:noreply, state}
    else
      {opts, parent} = {state.opts, self()}

      spawn(fn ->
        probe = fn -> Connector.probe(opts, opts[:health_check_interval]) end
        send(parent, {:health_probe, ref, RedixRs.Redact.scrub(probe)})
      end)

      {:noreply, %{state | health: %{ref: ref}}}
    end
  end

  def handle_info({:health_probe, ref, :ok}, %{health: %{ref: ref}} = state) do
    {:noreply, healthy(state)}
  end

  def handle_info({:health_probe, ref, {:error, _}}, %{health: %{ref: ref}} = state) do
    # The disconnection event follows, with reason :health_check_timeout; then the usual reconnect.
    Native.close(state.handle, :health_check_timeout)
    {:noreply, %{state | health: nil}}
  end

  def handle_info({ref, tag, payload}, state) when is_map_key(state.remote_calls, ref) do
    {from, remote_calls} = Map.pop(state.remote_calls, ref)
    GenServer.reply(from, remote_reply(tag, payload))
    {:noreply, %{state | remote_calls: remote_calls}}
  end

  def handle_info(_unexpected, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    Handles.delete(state.keys)
    RedixRs.Cache.forget(state.keys, state.opts)
    # Callers in flight learn this process's exit reason through RedixRs.Handles.
    if state.handle, do: Native.close(state.handle, :owner_down)
  end

  # Crash reports and `:sys.get_status/1` show the state, the crash reason and the last message
  # with passwords redacted; the state itself is unchanged. (A crash report's stack trace is printed
  # as it is: the state among its arguments is redacted by the Inspect implementation below.)
  # OTP 25+ calls format_status/1 (Elixir 1.14's GenServer does not declare it, hence no @impl);
  # older OTPs call format_status/2.
  def format_status(status), do: RedixRs.Redact.status(status)

  @impl true
  def format_status(reason, pdict_and_state), do: RedixRs.Redact.status(reason, pdict_and_state)

  defp connect_synchronously(state) do
    state = start_attempt(state)

    case Connector.await_connection(state.id, state.opts) do
      {:connected, opts} ->
        {:ok, connected(%{state | opts: opts})}

      {:error, error} ->
        # `terminate/2` does not run when `init/1` fails: what `init/1` published goes here.
        RedixRs.Cache.forget(state.keys, state.opts)
        {:stop, error}
    end
  end

  defp handle_event(:connected, state), do: {:noreply, connected(state)}

  defp handle_event({:disconnected, reason}, state) do
    Handles.delete(state.keys)
    state = %{state | health: nil}
    error = %ConnectionError{reason: reason}
    Connector.emit(:disconnection, state.opts, %{reason: error})
    state = fail_remote_calls(%{state | handle: nil})

    if state.opts[:exit_on_disconnection] do
      {:stop, error, state}
    else
      {:noreply, schedule_reconnect(state, reason)}
    end
  end

  # An error reply to AUTH or SELECT is fatal, as in Redix: retrying cannot fix a wrong password.
  defp handle_event({:connect_failed, %RedixRs.Error{} = error}, state) do
    Connector.emit(:failed_connection, state.opts, %{reason: %ConnectionError{reason: error}})
    {:stop, error, answer_waiting(%{state | handle: nil}, closed())}
  end

  defp handle_event({:connect_failed, reason}, state) do
    error = %ConnectionError{reason: reason}
    Connector.emit(:failed_connection, state.opts, %{reason: error})
    state = answer_waiting(%{state | handle: nil}, closed())

    if state.opts[:exit_on_disconnection] do
      {:stop, error, state}
    else
      {:noreply, schedule_reconnect(state)}
    end
  end

  defp healthy(state) do
    schedule_health_check(%{state | health: nil})
  end

  defp schedule_health_check(state) do
    case state.opts[:health_check_interval] do
      interval when is_integer(interval) ->
        Process.send_after(self(), {:health_check, state.id}, interval)

      _off ->
        :ok
    end

    state
  end

  defp connected(state) do
    Handles.put(state.keys, state.handle)
    schedule_health_check(state)
    Connector.emit(:connection, state.opts, %{reconnection: state.connected_before})
    state = %{state | status: :connected, backoff: nil, connected_before: true}
    answer_waiting(state, {:ok, state.handle, self()})
  end

  defp closed, do: {:error, %ConnectionError{reason: :closed}}

  # Blocking commands go to side connections, lent by a process of their own (`:side_pool`).
  defp start_side_connections(opts) do
    case opts[:max_side_connections] do
      max when is_integer(max) and max > 0 ->
        {:ok, pool} = RedixRs.SideConnections.start_link(opts)
        Keyword.put(opts, :side_pool, pool)

      _off ->
        opts
    end
  end

  defp answer_waiting(state, reply) do
    Enum.each(state.waiting, &GenServer.reply(&1, reply))
    %{state | waiting: []}
  end

  defp start_attempt(state) do
    {handle, id} = RedixRs.Redact.scrub(fn -> Connector.connect(state.opts, :plain) end)
    %{state | handle: handle, id: id, status: :connecting}
  end

  defp schedule_reconnect(state, reason \\ nil) do
    backoff = Connector.schedule_reconnect(state.backoff, state.opts, reason)
    %{state | status: :backoff, backoff: backoff}
  end

  # Remote callers: this process submits for them and forwards the answer.
  defp run_for_remote_caller(commands, kind, timeout, from, state) do
    ref = make_ref()

    case RedixRs.Call.submit_for_self(state.handle, ref, commands, kind) do
      {:ok, _token} ->
        %{state | remote_calls: Map.put(state.remote_calls, ref, from)}

      # A blocking command: run on a side connection by a process of its own, not this one (with
      # no telemetry event here: the caller emits the call's events on its node).
      {:side, _pool} ->
        conn = self()

        spawn(fn ->
          GenServer.reply(from, RedixRs.Call.run_untraced(conn, commands, kind, timeout))
        end)

        state

      {:error, _} = error ->
        GenServer.reply(from, error)
        state
    end
  end

  defp remote_reply(:ok, replies), do: {:ok, replies}
  defp remote_reply(:error, _reason), do: {:error, %ConnectionError{reason: :disconnected}}

  defp fail_remote_calls(state) do
    Enum.each(state.remote_calls, fn {_ref, from} ->
      GenServer.reply(from, remote_reply(:error, nil))
    end)

    %{state | remote_calls: %{}}
  end
end

defimpl Inspect, for: RedixRs.Connection do
  # The options hold the connection's passwords: shown redacted.
  def inspect(state, opts), do: RedixRs.Redact.inspect_struct(state, opts)
end
