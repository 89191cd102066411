defmodule RedixRs.PubSub.Connection do
  # The process behind a `RedixRs.PubSub` connection. It owns the truth of who subscribed to what,
  # monitors subscribers, tells the native side (which tells Redis, and sends subscribers their
  # messages) and replays every subscription after a reconnect. Messages never pass through it.
  #
  # A subscriber on another node is reached through a local relay process (`RedixRs.PubSub.Relay`):
  # the native side knows the relay's pid in its place, and whatever this process sends that
  # subscriber goes through the relay too, so each subscriber has one sender.
  @moduledoc false
  use GenServer

  require Logger

  alias RedixRs.{ConnectionError, Connector, Native}
  alias RedixRs.PubSub.{Sender, Subscriptions}

  defstruct [
    :opts,
    :handle,
    :id,
    :status,
    :backoff,
    :client_id,
    :client_id_ref,
    # {kind, name} => MapSet of subscriber pids
    subscriptions: %{},
    # pid => monitor ref (the `ref` of Redix's messages)
    subscribers: %{},
    # The pids the native side sends to (a local subscriber, or a remote one's relay) => the ref
    # their messages carry: the map `Native.pubsub_drain/2` takes references from.
    refs: %{},
    # remote subscriber pid => its relay
    relays: %{},
    # remote pid => its last relay told to stop and not yet ended; relay monitor ref => remote pid
    retiring: %{},
    relay_monitors: %{},
    pings: %{},
    # The senders of lanes 1.. (lane 0 is this process): one lane per scheduler, see `Sender`.
    senders: {},
    # {:ping | :client_id, from}: calls made while connecting, or before the client id arrived
    waiting: [],
    connected_before: false
  ]

  def start_link(opts), do: Connector.start_link(__MODULE__, opts)

  @impl true
  def init(opts) do
    senders = for _ <- 2..System.schedulers_online()//1, do: Sender.start_link()
    state = %__MODULE__{opts: opts, status: :connecting, senders: List.to_tuple(senders)}

    if opts[:sync_connect] do
      connect_synchronously(state)
    else
      {:ok, state, {:continue, :connect}}
    end
  end

  @impl true
  def handle_continue(:connect, state), do: {:noreply, start_attempt(state)}

  # Messages sent to the connection itself would reach nobody.
  @impl true
  def handle_call({action, _kind, _names, pid}, _from, state)
      when action in [:subscribe, :unsubscribe] and pid == self() do
    {:reply, {:refused, "a subscriber cannot be the pub/sub connection itself"}, state}
  end

  def handle_call({:subscribe, kind, names, pid}, _from, state) do
    {ref, new, state} = Subscriptions.add(state, kind, names, pid)

    if state.status == :connected,
      do: op(state, :subscribe, kind, names, Subscriptions.target(state, pid), ref, new)

    {:reply, {:ok, ref}, state}
  end

  def handle_call({:unsubscribe, kind, names, pid}, _from, state) do
    ref = Map.get(state.subscribers, pid) || make_ref()
    # A remote pid that subscribed to nothing gets a relay for this call's messages.
    {sender, state} = Subscriptions.sender(state, pid)
    {state, emptied} = Subscriptions.remove(state, kind, names, pid)

    if state.status == :connected do
      op(state, :unsubscribe, kind, names, sender, ref, emptied)
    else
      # No native connection to send through: nothing else can reach the subscriber meanwhile.
      Enum.each(
        names,
        &send(sender, Subscriptions.unsubscribed(ref, kind, &1))
      )
    end

    {:reply, :ok, Subscriptions.forget_if_idle(state, pid)}
  end

  def handle_call(:get_client_id, from, state) do
    cond do
      state.status == :connected and is_integer(state.client_id) ->
        {:reply, {:ok, state.client_id}, state}

      state.status == :connecting or (state.status == :connected and state.client_id_ref != nil) ->
        {:noreply, %{state | waiting: [{:client_id, from} | state.waiting]}}

      state.status == :connected ->
        {:reply, {:error, %ConnectionError{reason: :client_id_not_stored}}, state}

      true ->
        {:reply, {:error, %ConnectionError{reason: :closed}}, state}
    end
  end

  # As with commands on a `RedixRs` connection, a ping made while connecting waits for it (bounded by
  # the caller's timeout).
  def handle_call(:ping, from, state) do
    case state.status do
      :connected -> {:noreply, ping(state, from)}
      :connecting -> {:noreply, %{state | waiting: [{:ping, from} | state.waiting]}}
      :backoff -> {:reply, {:error, %ConnectionError{reason: :closed}}, state}
    end
  end

  @impl true
  def handle_info({:redix_rs_native, id, event}, %{id: id} = state),
    do: Connector.native_event(event, state, &handle_event/2)

  def handle_info({:redix_rs_native, _stale_id, _event}, state), do: {:noreply, state}
  def handle_info(:reconnect, state), do: {:noreply, start_attempt(state)}

  # The native side queued messages for subscribers: send them, a bounded batch per NIF call.
  def handle_info({:redix_rs_pubsub_drain, id}, %{id: id, handle: handle} = state)
      when handle != nil do
    case Native.pubsub_drain(handle, state.refs) do
      {:more, _sent} -> send(self(), {:redix_rs_pubsub_drain, id})
      {:done, _sent} -> :ok
    end

    {:noreply, state}
  end

  def handle_info({:redix_rs_pubsub_drain, _stale_id}, state), do: {:noreply, state}

  # The same for a lane another process sends: handed to that one.
  def handle_info({:redix_rs_pubsub_drain, id, lane}, %{id: id, handle: handle} = state)
      when handle != nil do
    send(elem(state.senders, lane - 1), {:drain, handle, lane})
    {:noreply, state}
  end

  def handle_info({:redix_rs_pubsub_drain, _stale_id, _lane}, state), do: {:noreply, state}

  def handle_info({ref, result, reply}, %{client_id_ref: ref} = state) do
    {:noreply, client_id_arrived(state, result, reply)}
  end

  def handle_info({ref, result, _}, state) when is_map_key(state.pings, ref) do
    {from, pings} = Map.pop(state.pings, ref)
    reply = if result == :ok, do: :ok, else: {:error, %ConnectionError{reason: :disconnected}}
    GenServer.reply(from, reply)
    {:noreply, %{state | pings: pings}}
  end

  def handle_info({:DOWN, ref, :process, pid, _reason}, state) do
    case state.subscribers do
      %{^pid => ^ref} -> {:noreply, drop_subscriber(state, pid, ref)}
      _ -> {:noreply, Subscriptions.relay_ended(state, ref, pid)}
    end
  end

  # Redis refused a (p|s)subscribe: its subscribers will not get `:subscribed`; say why.
  def handle_info({:redix_rs_pubsub_rejected, %RedixRs.Error{message: message}, _what}, state) do
    Logger.error(
      "RedixRs.PubSub #{inspect(state.opts[:name] || self())}: Redis refused a subscription: #{message}"
    )

    {:noreply, state}
  end

  def handle_info(_unexpected, state), do: {:noreply, state}

  # Crash reports and `:sys.get_status/1` show the state, the crash reason and the last message
  # with passwords redacted; the state itself is unchanged. (A crash report's stack trace is printed
  # as it is: the state among its arguments is redacted by the Inspect implementation below.)
  # OTP 25+ calls format_status/1 (Elixir 1.14's GenServer does not declare it, hence no @impl);
  # older OTPs call format_status/2.
  def format_status(status), do: RedixRs.Redact.status(status)

  @impl true
  def format_status(reason, pdict_and_state), do: RedixRs.Redact.status(reason, pdict_and_state)

  # Lifecycle.

  defp connect_synchronously(state) do
    state = start_attempt(state)

    case Connector.await_connection(state.id, state.opts) do
      {:connected, opts} ->
        {:ok, %{state | opts: opts} |> connected() |> await_client_id(opts[:timeout])}

      {:error, error} ->
        {:stop, error}
    end
  end

  defp handle_event(:connected, state), do: {:noreply, connected(state)}

  # The native side already told each subscriber `:disconnected`.
  defp handle_event({:disconnected, reason}, state) do
    error = %ConnectionError{reason: reason}
    Connector.emit(:disconnection, state.opts, %{reason: error})
    Enum.each(state.pings, fn {_, from} -> GenServer.reply(from, {:error, error}) end)
    state = answer_waiting(state, :all, {:error, %ConnectionError{reason: :closed}})
    # What the connection owed subscribers (its last messages, then `:disconnected`) goes out now,
    # in every lane, before anything of the next connection.
    Subscriptions.drain_all(state.handle, state.refs)
    flush_lanes(state, :all)
    state = %{state | handle: nil, client_id: nil, pings: %{}}

    if state.opts[:exit_on_disconnection] do
      {:stop, error, state}
    else
      {:noreply, schedule_reconnect(state, reason)}
    end
  end

  # An error reply to AUTH or SELECT is fatal, as in Redix.
  defp handle_event({:connect_failed, %RedixRs.Error{} = error}, state) do
    Connector.emit(:failed_connection, state.opts, %{reason: %ConnectionError{reason: error}})
    {:stop, error, %{state | handle: nil}}
  end

  # As in Redix, failed attempts keep being retried even with `exit_on_disconnection`.
  defp handle_event({:connect_failed, reason}, state) do
    Connector.emit(:failed_connection, state.opts, %{reason: %ConnectionError{reason: reason}})
    state = answer_waiting(state, :all, {:error, %ConnectionError{reason: :closed}})
    {:noreply, schedule_reconnect(%{state | handle: nil})}
  end

  # With sync_connect, the client id is there when start_link returns.
  defp await_client_id(%{client_id_ref: nil} = state, _timeout), do: state

  defp await_client_id(%{client_id_ref: ref} = state, timeout) do
    receive do
      {^ref, result, reply} -> client_id_arrived(state, result, reply)
    after
      timeout -> state
    end
  end

  defp client_id_arrived(state, result, reply) do
    {client_id, answer} =
      case {result, reply} do
        {:ok, [id]} when is_integer(id) -> {id, {:ok, id}}
        _ -> {nil, {:error, %ConnectionError{reason: :client_id_not_stored}}}
      end

    state = %{state | client_id: client_id, client_id_ref: nil}
    answer_waiting(state, :client_id, answer)
  end

  defp ping(state, from) do
    ref = make_ref()

    case RedixRs.Call.submit_for_self(state.handle, ref, [["PING"]]) do
      {:ok, _token} ->
        %{state | pings: Map.put(state.pings, ref, from)}

      {:error, _} ->
        GenServer.reply(from, {:error, %ConnectionError{reason: :closed}})
        state
    end
  end

  # Answers the waiting calls of `kind` (or all, with `:all`) with `reply`; a ping waiting for a
  # connection that is now up is sent instead.
  defp answer_waiting(state, kind, reply) do
    {answered, waiting} =
      Enum.split_with(state.waiting, fn {k, _} -> kind == :all or k == kind end)

    state = %{state | waiting: waiting}

    Enum.reduce(Enum.reverse(answered), state, fn
      {:ping, from}, state when reply == :connected -> ping(state, from)
      {_, from}, state -> tap(state, fn _ -> GenServer.reply(from, reply) end)
    end)
  end

  defp connected(state) do
    # One lane per sender, set before any subscription of this connection.
    if tuple_size(state.senders) > 0,
      do: Native.pubsub_lanes(state.handle, tuple_size(state.senders) + 1)

    Connector.emit(:connection, state.opts, %{reconnection: state.connected_before})
    state = %{state | status: :connected, backoff: nil, connected_before: true}
    state = fetch_client_id(state)
    resubscribe(state)
    state = answer_waiting(state, :ping, :connected)

    if state.client_id_ref,
      do: state,
      else:
        answer_waiting(
          state,
          :client_id,
          {:error, %ConnectionError{reason: :client_id_not_stored}}
        )
  end

  defp fetch_client_id(%{opts: opts} = state) do
    if opts[:fetch_client_id_on_connect] do
      ref = make_ref()
      # Refused only when the connection has just died: its disconnection event follows.
      case RedixRs.Call.submit_for_self(state.handle, ref, [["CLIENT", "ID"]]) do
        {:ok, _token} -> %{state | client_id_ref: ref}
        {:error, _} -> state
      end
    else
      state
    end
  end

  # Every subscription again, each Redis-side name once; the writer sends them in one write.
  defp resubscribe(state) do
    state.subscriptions
    |> Enum.flat_map(fn {{kind, name}, pids} -> Enum.map(pids, &{&1, kind, name}) end)
    |> Enum.group_by(fn {pid, kind, _} -> {pid, kind} end, fn {_, _, name} -> name end)
    |> Enum.reduce(MapSet.new(), fn {{pid, kind}, names}, told ->
      redis_names = Enum.reject(names, &MapSet.member?(told, {kind, &1}))
      ref = Map.fetch!(state.subscribers, pid)
      op(state, :subscribe, kind, names, Subscriptions.target(state, pid), ref, redis_names)
      Enum.reduce(redis_names, told, &MapSet.put(&2, {kind, &1}))
    end)
  end

  defp start_attempt(state) do
    {handle, id} = RedixRs.Redact.scrub(fn -> Connector.connect(state.opts, :pubsub) end)
    %{state | handle: handle, id: id, status: :connecting}
  end

  defp schedule_reconnect(state, reason \\ nil) do
    backoff = Connector.schedule_reconnect(state.backoff, state.opts, reason)
    %{state | status: :backoff, backoff: backoff}
  end

  # Subscriptions.

  defp drop_subscriber(state, pid, ref) do
    state =
      Enum.reduce(Subscriptions.of(state, pid), state, fn {kind, names}, state ->
        {state, emptied} = Subscriptions.remove(state, kind, names, pid)

        if state.status == :connected,
          do: op(state, :drop, kind, names, Subscriptions.target(state, pid), ref, emptied)

        state
      end)

    Subscriptions.forget(state, pid)
  end

  # Applies a change natively, then sends what it owes subscribers (`:subscribed` for a channel Redis
  # already confirmed, `:unsubscribed`) before the caller gets its reply, as Redix does.
  defp op(state, action, kind, names, pid, ref, redis_names) do
    case Native.pubsub_op(state.handle, {action, kind, names, pid, ref, redis_names}) do
      {lane, queued} -> Sender.flush(elem(state.senders, lane - 1), state.handle, lane, queued)
      queued -> drain(state, queued)
    end
  end

  # Sends at least `count` queued messages (those up to the op's own), however many keep arriving
  # after them; the rest go out on the next drain wake-up.
  defp drain(state, count) do
    case Native.pubsub_drain(state.handle, state.refs) do
      {:more, sent} when sent < count -> drain(state, count - sent)
      {:more, _sent} -> send(self(), {:redix_rs_pubsub_drain, state.id})
      {:done, _sent} -> :ok
    end
  end

  defp flush_lanes(state, count) do
    state.senders
    |> Tuple.to_list()
    |> Enum.with_index(1)
    |> Enum.each(fn {sender, lane} -> Sender.flush(sender, state.handle, lane, count) end)
  end
end

defimpl Inspect, for: RedixRs.PubSub.Connection do
  # The options hold the connection's passwords: shown redacted.
  def inspect(state, opts), do: RedixRs.Redact.inspect_struct(state, opts)
end
