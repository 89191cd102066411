defmodule RedixRs.Telemetry do
  @moduledoc """
  Telemetry events, as Redix emits them, under the `:redix_rs` prefix.

  Events are sent through [`:telemetry`](https://hexdocs.pm/telemetry) when it is available at run
  time (redix_rs does not depend on it: add `:telemetry` to your own dependencies to get events).

    * `[:redix_rs, :connection]` - a connection was established. Measurements: `%{}`. Metadata:
      `:connection` (pid), `:connection_name` (the `:name` option or `nil`), `:address`
      (`"host:port"` as given, or the socket path), `:reconnection` (boolean).

    * `[:redix_rs, :disconnection]` - an established connection was lost. Metadata: `:connection`,
      `:connection_name`, `:address`, `:reason` (a `RedixRs.ConnectionError`).

    * `[:redix_rs, :failed_connection]` - a connection attempt failed. Metadata: `:connection`,
      `:connection_name`, `:address`, `:reason` (a `RedixRs.ConnectionError`).

    * `[:redix_rs, :pipeline, :start]` - a call starts, in the caller's process; emitted once its
      commands are accepted (invalid commands raise with no event, as in Redix), which is just
      after they are queued. Measurements: `%{system_time: native_time}` (taken when the call began). Metadata: `:connection` (pid), `:connection_name` (the name
      when the call used one, else `nil`), `:commands` (the commands, wrapped in `MULTI`/`EXEC` or
      `CLIENT REPLY OFF`/`ON` for transactions and noreply pipelines), `:extra_metadata` (the
      call's `:telemetry_metadata` option, default `%{}`).

    * `[:redix_rs, :pipeline, :stop]` - a call ended. Measurements: `%{duration: native_time}`.
      Metadata: as for `:start`, plus `kind: :error` and `:reason` when the call returned
      `{:error, reason}`.
  """

  require Logger

  @compile {:no_warn_undefined, :telemetry}

  @handler_id "redix_rs-default-telemetry-handler"

  @doc """
  Attaches a handler that logs disconnections and failed connections (as errors) and reconnections
  (as info), in Redix's wording.

  Returns `{:error, :already_exists}` if it is attached already, and
  `{:error, :telemetry_not_available}` when `:telemetry` is not loaded.

  ## Examples

      iex> RedixRs.Telemetry.attach_default_handler()
      :ok
      iex> RedixRs.Telemetry.attach_default_handler()
      {:error, :already_exists}
      iex> :telemetry.detach("redix_rs-default-telemetry-handler")
      :ok
  """
  @spec attach_default_handler() :: :ok | {:error, :already_exists | :telemetry_not_available}
  def attach_default_handler do
    if enabled?() do
      events = [
        [:redix_rs, :disconnection],
        [:redix_rs, :failed_connection],
        [:redix_rs, :connection]
      ]

      :telemetry.attach_many(@handler_id, events, &__MODULE__.handle_event/4, :no_config)
    else
      {:error, :telemetry_not_available}
    end
  end

  @doc false
  def handle_event([:redix_rs, event], _measurements, meta, :no_config) do
    who = inspect(meta.connection_name || meta.connection)

    case {event, meta} do
      {:disconnection, %{address: address, reason: reason}} ->
        Logger.error(
          "Connection #{who} disconnected from Redis at #{address}: #{Exception.message(reason)}"
        )

      {:failed_connection, %{address: address, reason: reason}} ->
        Logger.error(
          "Connection #{who} failed to connect to Redis at #{address}: #{Exception.message(reason)}"
        )

      {:connection, %{address: address, reconnection: true}} ->
        Logger.info("Connection #{who} reconnected to Redis at #{address}")

      _ ->
        :ok
    end
  end

  @doc false
  # Whether `:telemetry` is loaded; checked once, then read from a persistent term.
  def enabled? do
    case :persistent_term.get({__MODULE__, :enabled}, nil) do
      nil ->
        enabled = Code.ensure_loaded?(:telemetry)
        :persistent_term.put({__MODULE__, :enabled}, enabled)
        enabled

      enabled ->
        enabled
    end
  end

  @doc false
  def execute(event, measurements, metadata) do
    if enabled?(), do: :telemetry.execute(event, measurements, metadata)
    :ok
  end

  @doc false
  # Wraps one call in `[:redix_rs, :pipeline, :start | :stop]` events, emitted in the caller. `fun`
  # gets a function that emits `:start` (measured from now), to call once the commands are known to
  # be valid; if `fun` raises before that, no event is emitted (as Redix validates first). Otherwise
  # `:start` is emitted at the latest just before `:stop`.
  def span_pipeline(conn, commands, extra, fun) do
    {pid, name} = if is_pid(conn), do: {conn, nil}, else: {GenServer.whereis(conn), conn}

    meta = %{connection: pid, connection_name: name, commands: commands, extra_metadata: extra}
    start = System.monotonic_time()
    key = {__MODULE__, :pending_start, make_ref()}
    Process.put(key, %{system_time: System.system_time()})

    started = fn ->
      case Process.delete(key) do
        nil -> :ok
        measurements -> :telemetry.execute([:redix_rs, :pipeline, :start], measurements, meta)
      end
    end

    result =
      try do
        fun.(started)
      catch
        kind, reason ->
          Process.delete(key)
          :erlang.raise(kind, reason, __STACKTRACE__)
      end

    started.()

    stop_meta =
      case result do
        {:error, reason} -> Map.merge(meta, %{kind: :error, reason: reason})
        _ -> meta
      end

    duration = max(System.monotonic_time() - start, 1)
    :telemetry.execute([:redix_rs, :pipeline, :stop], %{duration: duration}, stop_meta)
    result
  end
end
