defmodule RedixRs.Connector do
  # What the two connection processes (`RedixRs.Connection` and `RedixRs.PubSub.Connection`) share:
  # the options the native side needs, the backoff sequence, the address shown in telemetry and logs,
  # and the connection telemetry events.
  @moduledoc false

  alias RedixRs.Telemetry

  # `:infinity` as a connect timeout: one day is as good as forever for the native side.
  @forever_ms 86_400_000

  @doc "Starts a connection attempt owned by the calling process; returns `{handle, id}`."
  def connect(opts, mode) when mode in [:plain, :pubsub] do
    {:ok, handle, id} = RedixRs.Native.connect(native_config(opts, mode), self())
    {handle, id}
  end

  @doc "The wait before the next attempt: `backoff_initial`, then ×1.5 up to `backoff_max`."
  def next_backoff(nil, opts), do: opts[:backoff_initial]

  def next_backoff(previous, opts) do
    case opts[:backoff_max] do
      :infinity -> round(previous * 1.5)
      max -> min(round(previous * 1.5), max)
    end
  end

  @doc "`host:port` as the user gave it, or the socket path."
  def address(opts) do
    case opts[:host] do
      {:local, path} -> path
      host -> "#{host}:#{opts[:port]}"
    end
  end

  @doc "Emits `[:redix_rs, event]` with the connection's metadata plus `extra`."
  def emit(event, opts, extra) do
    metadata = %{connection: self(), connection_name: opts[:name], address: address(opts)}
    Telemetry.execute([:redix_rs, event], %{}, Map.merge(metadata, extra))
  end

  defp native_config(opts, mode) do
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
      timeout: if(opts[:timeout] == :infinity, do: @forever_ms, else: opts[:timeout]),
      max_queued_bytes: opts[:write_queue_limit],
      pubsub: mode == :pubsub,
      # With exit_on_disconnection the process exits instead, and subscribers are not told (Redix).
      notify_disconnection: not opts[:exit_on_disconnection]
    })
  end

  # A `{m, f, a}` password is called at every connection attempt, so rotated secrets are picked up.
  defp resolve_password({mod, fun, args}), do: apply(mod, fun, args)
  defp resolve_password(password), do: password
end
