defmodule RedixRs.SideConnections do
  # Side connections: where a `RedixRs` connection sends blocking commands (`BLPOP`, `XREAD ...
  # BLOCK`, ...; the table is in native/redix_rs_core/src/conn/side.rs), and pipelines or
  # transactions holding one, so that one caller's `BLPOP q 0` never stalls the callers sharing the
  # main connection.
  #
  # Where it is built, and why:
  # - Recognising a blocking command is native: the submit NIF looks at each command's name before
  #   anything is queued (one length test for a GET: nothing measurable on the hot path) and, on a
  #   connection with side connections, answers `{:side, pool}` instead of queuing.
  # - Lending connections is this process, one per `RedixRs` connection (started by it, linked, and
  #   gone with it). It opens side connections on demand with `Connector.connect/2`, the code the main
  #   connection uses, so they get the same settings: address (or Sentinel), TLS and socket options,
  #   protocol, username and password (a `{m, f, a}` password is called for each side connection, as
  #   for each reconnection), database and client name. It monitors the callers that hold one and
  #   keeps the idle timers: processes, monitors and timers are what the VM does well, and a blocking
  #   call affords two messages to this process (micro-seconds) next to a wait that is the point of
  #   the command. The replies do not pass through here: the caller submits to the side connection's
  #   own native handle and waits for its reply as on the main connection.
  #
  # Rules: at most `:max_side_connections` side connections; one caller at a time on each (a blocking
  # command holds the socket anyway); when all are busy, callers queue here, each within its own
  # timeout. A side connection whose caller timed out, got an error or died is closed, never lent
  # again (its command may still be blocked in Redis, and would take an element pushed later); one
  # idle for `:side_connection_idle_timeout` ms is closed. Side connections never reconnect: a new one
  # is opened when needed. They emit no `[:connection]`, `[:disconnection]` or `[:failed_connection]`
  # telemetry (the main connection's events keep their meaning for dashboards); the calls on them
  # emit `[:pipeline, :start | :stop]` like any call, with the main connection as `:connection`.
  @moduledoc false
  use GenServer

  alias RedixRs.{ConnectionError, Connector, Native}

  defstruct [:parent, :opts, :max, :idle_ms, conns: %{}, waiting: :queue.new()]

  @doc "Starts the lender for a connection with options `opts`, linked to the calling process."
  def start_link(opts), do: GenServer.start_link(__MODULE__, {self(), opts})

  @doc """
  Borrows a side connection for the calling process, waiting at most `timeout` ms: `{:ok, handle,
  id}` (give it back with `checkin/3`), `{:error, %RedixRs.ConnectionError{}}`, or `:gone` when
  the pool ended (with its connection) meanwhile.
  """
  def checkout(pool, timeout) do
    ref = Process.monitor(pool)
    send(pool, {:checkout, self(), ref})

    receive do
      {^ref, reply} ->
        Process.demonitor(ref, [:flush])
        reply

      {:DOWN, ^ref, :process, _, _} ->
        :gone
    after
      timeout -> cancel(pool, ref)
    end
  end

  # The wait is over: withdraw the request. If a connection was lent meanwhile, its message is in the
  # mailbox once the pool answers (it sent that first): it goes back unused, so it is clean.
  defp cancel(pool, ref) do
    try do
      GenServer.call(pool, {:cancel, ref})
    catch
      :exit, _ -> :gone
    end

    Process.demonitor(ref, [:flush])

    receive do
      {^ref, {:ok, _handle, id}} -> send(pool, {:checkin, id, :clean})
      {^ref, _} -> :ok
    after
      0 -> :ok
    end

    {:error, %ConnectionError{reason: :timeout}}
  end

  @doc """
  Gives back the side connection `id` after a call that ended with `result`: a connection whose call
  did not end with a reply is closed.
  """
  def checkin(pool, id, result) do
    send(pool, {:checkin, id, if(match?({:ok, _}, result), do: :clean, else: :dead)})
    :ok
  end

  @impl true
  def init({parent, opts}) do
    Process.monitor(parent)
    # The side connections themselves have none, and never exit their owner (this process).
    # A side connection shares neither the pool nor the client-side cache (its tracking would empty
    # the shared cache whenever it closed).
    side_opts =
      opts
      |> Keyword.delete(:cache_resource)
      |> Keyword.merge(side_pool: nil, exit_on_disconnection: false)

    state = %__MODULE__{
      parent: parent,
      opts: side_opts,
      max: opts[:max_side_connections],
      idle_ms: opts[:side_connection_idle_timeout]
    }

    {:ok, state}
  end

  @impl true
  def handle_call({:cancel, ref}, _from, state) do
    {gone, waiting} = take_waiting(state.waiting, ref)
    Enum.each(gone, fn {_pid, _ref, mon} -> Process.demonitor(mon, [:flush]) end)
    {:reply, :ok, %{state | waiting: waiting}}
  end

  @impl true
  def handle_info({:checkout, pid, ref}, state) do
    mon = Process.monitor(pid)
    state = %{state | waiting: :queue.in({pid, ref, mon}, state.waiting)}
    {:noreply, state |> lend() |> open_for_waiting()}
  end

  def handle_info({:checkin, id, outcome}, state) do
    case state.conns do
      %{^id => %{status: {:lent, _pid, mon}} = conn} ->
        Process.demonitor(mon, [:flush])

        state =
          if outcome == :clean,
            do: idle(state, id, conn),
            else: close(state, id)

        {:noreply, state |> lend() |> open_for_waiting()}

      # Already closed (its caller died, or the connection ended).
      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:redix_rs_native, id, event}, state) when is_map_key(state.conns, id) do
    conn = state.conns[id]

    case event do
      :connected ->
        {:noreply, state |> idle(id, conn) |> lend()}

      {:connect_failed, reason} ->
        state = %{state | conns: Map.delete(state.conns, id)}
        {:noreply, fail_unservable(state, %ConnectionError{reason: reason})}

      {:disconnected, _reason} ->
        # Its caller, if any, got `:disconnected` from the native side and checks it in; ignored then.
        with %{status: {:lent, _pid, mon}} <- conn, do: Process.demonitor(mon, [:flush])
        state = %{state | conns: Map.delete(state.conns, id)}
        {:noreply, open_for_waiting(state)}

      # Sentinel events: the main connection reports them.
      _other ->
        {:noreply, state}
    end
  end

  def handle_info({:idle, id, uses}, state) do
    case state.conns do
      %{^id => %{status: :idle, uses: ^uses}} -> {:noreply, close(state, id)}
      _ -> {:noreply, state}
    end
  end

  def handle_info({:DOWN, _mon, :process, pid, _reason}, %{parent: pid} = state) do
    # The side connections close with this process (their native handles monitor it).
    {:stop, :normal, state}
  end

  def handle_info({:DOWN, mon, :process, _pid, _reason}, state) do
    # A caller died: while waiting (its request goes), or holding a side connection (closed: its
    # command may still block in Redis).
    waiting = :queue.filter(fn {_, _, m} -> m != mon end, state.waiting)
    state = %{state | waiting: waiting}

    lent =
      Enum.find_value(state.conns, fn
        {id, %{status: {:lent, _, ^mon}}} -> id
        _ -> nil
      end)

    state = if lent, do: close(state, lent), else: state
    {:noreply, state |> lend() |> open_for_waiting()}
  end

  def handle_info(_other, state), do: {:noreply, state}

  # Lends idle connections to waiting callers, oldest first.
  defp lend(state) do
    with {id, conn} <- Enum.find(state.conns, fn {_, c} -> c.status == :idle end),
         {{:value, {pid, ref, mon}}, waiting} <- :queue.out(state.waiting) do
      send(pid, {ref, {:ok, conn.handle, id}})
      conn = %{conn | status: {:lent, pid, mon}, uses: conn.uses + 1}
      lend(%{state | conns: Map.put(state.conns, id, conn), waiting: waiting})
    else
      _ -> state
    end
  end

  # Opens connections for the callers that no idle, lent or opening connection will serve, up to
  # the limit.
  defp open_for_waiting(state) do
    if :queue.len(state.waiting) > opening(state) and map_size(state.conns) < state.max do
      {handle, id} = RedixRs.Redact.scrub(fn -> Connector.connect(state.opts, :plain) end)
      conn = %{handle: handle, status: :opening, uses: 0}
      open_for_waiting(%{state | conns: Map.put(state.conns, id, conn)})
    else
      state
    end
  end

  defp opening(state), do: Enum.count(state.conns, fn {_, c} -> c.status == :opening end)

  # A connection could not be opened: the callers that no other connection (lent or opening) will
  # serve get the reason, oldest first.
  defp fail_unservable(state, error) do
    if :queue.len(state.waiting) > map_size(state.conns) do
      {{:value, {pid, ref, mon}}, waiting} = :queue.out(state.waiting)
      Process.demonitor(mon, [:flush])
      send(pid, {ref, {:error, error}})
      fail_unservable(%{state | waiting: waiting}, error)
    else
      state
    end
  end

  defp idle(state, id, conn) do
    if state.idle_ms != :infinity,
      do: Process.send_after(self(), {:idle, id, conn.uses}, state.idle_ms)

    %{state | conns: Map.put(state.conns, id, %{conn | status: :idle})}
  end

  defp close(state, id) do
    {conn, conns} = Map.pop(state.conns, id)
    Native.close(conn.handle, :owner_down)
    %{state | conns: conns}
  end

  defp take_waiting(waiting, ref) do
    {gone, kept} = Enum.split_with(:queue.to_list(waiting), fn {_, r, _} -> r == ref end)
    {gone, :queue.from_list(kept)}
  end
end
