defmodule RedixRs.Connector do
  # What the two connection processes (`RedixRs.Connection` and `RedixRs.PubSub.Connection`) share:
  # the options the native side needs, the backoff sequence, the address shown in telemetry and logs,
  # and the connection telemetry events.
  @moduledoc false

  alias RedixRs.{ConnectionError, Telemetry}

  require Logger

  # `:infinity` as a connect timeout: one day is as good as forever for the native side.
  @forever_ms 86_400_000

  @gen_opts [:name, :hibernate_after, :spawn_opt, :debug]

  @doc "Starts `module` (a connection GenServer) with the GenServer options among `opts`."
  def start_link(module, opts) do
    # The telemetry prefix is read (and checked) when a connection starts, here in the caller.
    Telemetry.load_prefix!()
    warn_if_unverified(opts)
    gen_opts = for {key, value} <- Keyword.take(opts, @gen_opts), value != nil, do: {key, value}
    GenServer.start_link(module, opts, gen_opts)
  end

  # Once per connection started, not at each reconnection.
  defp warn_if_unverified(opts) do
    if opts[:ssl] and RedixRs.Options.TLS.verify_none?(opts[:socket_opts]) do
      Logger.warning(
        "redix_rs: TLS to #{address(opts)} with verify: :verify_none: the server's certificate " <>
          "is not checked, so the connection is encrypted but not authenticated (insecure: " <>
          "anyone on the path can impersonate the server)"
      )
    end
  end

  @doc """
  For `sync_connect`: waits, in `init/1`, for the attempt `id` to end. Returns `{:connected, opts}`
  or `{:error, %RedixRs.ConnectionError{}}` (after emitting `prefix ++ [:failed_connection]`).
  Sentinel events of the attempt are handled on the way, as `native_event/3` does, so `opts` say
  which server the sentinels named.
  """
  def await_connection(id, opts) do
    # The native side bounds the attempt by :timeout; the margin only guards against a lost event.
    timeout = if opts[:timeout] == :infinity, do: :infinity, else: opts[:timeout] + 1_000

    receive do
      {:redix_rs_native, ^id, :connected} ->
        {:connected, opts}

      {:redix_rs_native, ^id, {:connect_failed, reason}} ->
        error = %ConnectionError{reason: reason}
        emit(:failed_connection, opts, %{reason: error})
        {:error, error}

      {:redix_rs_native, ^id, {:sentinel_failed, _, _} = event} ->
        await_connection(id, sentinel_failed(event, opts))

      {:redix_rs_native, ^id, {:sentinel_answered, _, _, _} = event} ->
        await_connection(id, sentinel_answered(event, opts))
    after
      timeout -> {:error, %ConnectionError{reason: :timeout}}
    end
  end

  @doc """
  Schedules `:reconnect` to the calling process after the next backoff; returns that backoff.

  After a disconnection with `reason` `:sentinel_failover` or `{:wrong_role, _}` (the native
  side's Sentinel watcher closed the connection because the server is no longer the one to use),
  `:reconnect` is sent at once and the backoff stays as it was: the sentinels name the new server.
  """
  def schedule_reconnect(previous_backoff, opts, reason \\ nil)

  def schedule_reconnect(previous_backoff, _opts, reason)
      when reason == :sentinel_failover or
             (is_tuple(reason) and tuple_size(reason) == 2 and elem(reason, 0) == :wrong_role) do
    send(self(), :reconnect)
    previous_backoff
  end

  def schedule_reconnect(previous_backoff, opts, _reason) do
    backoff = next_backoff(previous_backoff, opts)
    Process.send_after(self(), :reconnect, backoff)
    backoff
  end

  @doc "Starts a connection attempt owned by the calling process; returns `{handle, id}`."
  def connect(opts, mode) when mode in [:plain, :pubsub] do
    {:ok, handle, id} = RedixRs.Native.connect(native_config(opts, mode), self())
    {handle, id}
  end

  @doc """
  Asks the server for a PING on a fresh connection with the same options (through Sentinel: to the
  server this connection uses). Connecting and the handshake get the connect `:timeout`; the PING then
  gets `ping_timeout`. Returns `:ok` or `{:error, reason}`; the connection dies with the caller.
  """
  def probe(opts, ping_timeout) do
    # The probe is a plain connection: no tracking, and the cache is not its sink.
    opts = Keyword.delete(opts, :cache_resource)

    opts =
      case opts[:sentinel_server] do
        {host, port} ->
          opts |> Keyword.put(:sentinel, nil) |> Keyword.merge(host: host, port: port)

        nil ->
          opts
      end

    {handle, id} = connect(opts, :plain)
    # The native side bounds the attempt by :timeout; the margin only guards against a lost event.
    connect_timeout = if opts[:timeout] == :infinity, do: :infinity, else: opts[:timeout] + 1_000

    receive do
      {:redix_rs_native, ^id, :connected} ->
        ref = make_ref()

        with {:ok, _token} <- RedixRs.Native.submit(handle, ref, [["PING"]], :pipeline) do
          receive do
            {^ref, :ok, _} -> :ok
            {^ref, :error, reason} -> {:error, reason}
          after
            ping_timeout -> {:error, :timeout}
          end
        end

      {:redix_rs_native, ^id, {:connect_failed, reason}} ->
        {:error, reason}
    after
      connect_timeout -> {:error, :timeout}
    end
  end

  @doc "The wait before the next attempt: `backoff_initial`, then ×1.5 up to `backoff_max`."
  def next_backoff(nil, opts), do: opts[:backoff_initial]

  def next_backoff(previous, opts) do
    case opts[:backoff_max] do
      :infinity -> round(previous * 1.5)
      max -> min(round(previous * 1.5), max)
    end
  end

  @doc """
  `host:port` as the user gave it, or the socket path. Through Sentinel: the server this connection
  last used (the one the sentinels named at its last successful attempt), or `"sentinel"` (Redix's
  word) when it never got one from them.
  """
  def address(opts) do
    case opts[:sentinel] && Keyword.get(opts, :sentinel_server, :none) do
      {host, port} -> "#{host}:#{port}"
      :none -> "sentinel"
      nil -> direct_address(opts)
    end
  end

  defp direct_address(opts) do
    case opts[:host] do
      {:local, path} -> path
      host -> "#{host}:#{opts[:port]}"
    end
  end

  @doc "Emits `prefix ++ [event]` with the connection's metadata plus `extra`."
  def emit(event, opts, extra) do
    metadata = %{connection: self(), connection_name: opts[:name], address: address(opts)}
    Telemetry.execute([:redix_rs, event], %{}, Map.merge(metadata, extra))
  end

  @doc "The options map the native side takes for a connection of `mode` (also each cluster node's)."
  def native_config(opts, mode) do
    {:ok, socket} = RedixRs.Options.Socket.parse(opts[:socket_opts])

    address =
      case opts[:host] do
        {:local, path} -> {:unix, path}
        host -> {:tcp, host, opts[:port]}
      end

    Map.merge(socket, %{
      address: address,
      username: opts[:username],
      password: resolve_password(opts[:password]),
      database: opts[:database] && Integer.to_string(opts[:database]),
      client_name: opts[:client_name],
      protocol: opts[:protocol],
      readonly: opts[:readonly],
      timeout: if(opts[:timeout] == :infinity, do: @forever_ms, else: opts[:timeout]),
      max_queued_bytes: opts[:write_queue_limit],
      reply_limits: RedixRs.Options.reply_limits(opts[:reply_limits]),
      tls: if(opts[:ssl], do: RedixRs.Options.TLS.native(opts[:socket_opts])),
      sentinel: opts[:sentinel] && sentinel_config(opts[:sentinel]),
      pubsub: mode == :pubsub,
      max_backlog_bytes: opts[:backlog_limit] || 0,
      # With exit_on_disconnection the process exits instead, and subscribers are not told (Redix).
      notify_disconnection: not opts[:exit_on_disconnection],
      # The process lending side connections for blocking commands (`RedixRs.SideConnections`).
      side_pool: opts[:side_pool],
      cache: opts[:cache_resource]
    })
  end

  defp sentinel_config(sentinel) do
    {:ok, socket} = RedixRs.Options.Socket.parse(sentinel[:socket_opts])

    Map.merge(socket, %{
      sentinels:
        Enum.map(sentinel[:sentinels], &{&1.host, &1.port, resolve_password(&1.password)}),
      group: sentinel[:group],
      role: sentinel[:role],
      password: resolve_password(sentinel[:password]),
      timeout: sentinel[:timeout],
      tls: if(sentinel[:ssl], do: RedixRs.Options.TLS.native(sentinel[:socket_opts]))
    })
  end

  @doc """
  Handles an event from the native side for a connection process whose state is `state` (with
  `:opts`), returning its `handle_info/2` result. Sentinel events are handled here: a failed sentinel
  is reported as `prefix ++ [:failed_connection]` with its `:sentinel_address`; the one that answered
  moves to the front of the list, to be asked first next time (as Redis's guidelines for clients say).
  Every other event (`:connected`, `{:disconnected, _}`, `{:connect_failed, _}`) goes to
  `handle_event`, the connection process's own.
  """
  def native_event(event, state, handle_event) do
    case event do
      {:sentinel_failed, _, _} ->
        {:noreply, %{state | opts: sentinel_failed(event, state.opts)}}

      {:sentinel_answered, _, _, _} ->
        {:noreply, %{state | opts: sentinel_answered(event, state.opts)}}

      _lifecycle ->
        handle_event.(event, state)
    end
  end

  defp sentinel_failed({:sentinel_failed, address, reason}, opts) do
    metadata = %{
      connection: self(),
      connection_name: opts[:name],
      sentinel_address: address,
      reason: %RedixRs.ConnectionError{reason: sentinel_reason(reason)}
    }

    Telemetry.execute([:redix_rs, :failed_connection], %{}, metadata)
    opts
  end

  # An error reply of a sentinel (to AUTH, say) or of the server it named is a `%RedixRs.Error{}`, as
  # in Redix.
  defp sentinel_reason({:redis_error, message}), do: %RedixRs.Error{message: message}
  defp sentinel_reason(reason), do: reason

  defp sentinel_answered({:sentinel_answered, index, host, port}, opts) do
    opts
    |> Keyword.update!(:sentinel, fn sentinel ->
      {answered, others} = List.pop_at(sentinel[:sentinels], index)
      Keyword.put(sentinel, :sentinels, [answered | others])
    end)
    # The server this connection uses, for health-check probes (not whatever sentinels say later).
    |> Keyword.put(:sentinel_server, {host, port})
  end

  # A `{m, f, a}` password is called at every connection attempt, so rotated secrets are picked up.
  defp resolve_password({mod, fun, args}), do: apply(mod, fun, args)
  defp resolve_password(password), do: password
end
