defmodule RedixRs.Telemetry do
  @moduledoc """
  Telemetry events, as Redix emits them, under the `[:redix_rs]` prefix or one of your choice.

  Events are sent through [`:telemetry`](https://hexdocs.pm/telemetry) when it is available at run
  time (redix_rs does not depend on it: add `:telemetry` to your own dependencies to get events).

  ## The prefix

  Events start with `[:redix_rs]` by default. Handlers written for Redix (dashboards, tracers such
  as OpenTelemetry's Redix instrumentation, APM agents) attach to `[:redix, ...]` events: set

      config :redix_rs, telemetry_prefix: [:redix]

  and every event below starts with `[:redix]` instead, with the same measurements and metadata.
  The prefix is any non-empty list of atoms. It is read when a connection starts (a bad value
  raises `ArgumentError` there), and from then on every event uses it, the events of connections
  started earlier included. `attach_default_handler/0` reads it too.

  ## Events

  Below, `prefix` stands for the prefix.

    * `prefix ++ [:connection]` - a connection was established. Measurements: `%{}`. Metadata:
      `:connection` (pid), `:connection_name` (the `:name` option or `nil`), `:address`
      (`"host:port"` as given, or the socket path; through Sentinel, the server the sentinels
      named), `:reconnection` (boolean).

    * `prefix ++ [:disconnection]` - an established connection was lost. Metadata: `:connection`,
      `:connection_name`, `:address`, `:reason` (a `RedixRs.ConnectionError`).

    * `prefix ++ [:failed_connection]` - a connection attempt failed. Metadata: `:connection`,
      `:connection_name`, `:reason` (a `RedixRs.ConnectionError`), and either `:address` (the
      server that could not be used) or, through Sentinel, `:sentinel_address` (`"host:port"` of a
      sentinel that could not be used: one event per such sentinel, then, when none led to a
      usable server, one with `:address`: the server this connection last used, or `"sentinel"`
      when the sentinels never named one).

    * `prefix ++ [:pipeline, :start]` - a call starts, in the caller's process; emitted once its
      commands are accepted (invalid commands raise with no event, as in Redix), which is just
      after they are queued. Measurements: `%{system_time: native_time}` (taken when the call
      began). Metadata: `:connection` (the pid, or what `GenServer.whereis/1` gives for the name
      the call used: `nil` when nothing is registered under it), `:connection_name` (the name when
      the call used one, else `nil`), `:commands` (the commands, wrapped in `MULTI`/`EXEC` or
      `CLIENT REPLY OFF`/`ON` for transactions and noreply pipelines), `:extra_metadata` (the
      call's `:telemetry_metadata` option, default `%{}`).

    * `prefix ++ [:pipeline, :stop]` - a call ended. Measurements: `%{duration: native_time}`.
      Metadata: as for `:start`, plus `kind: :error` and `:reason` when the call returned
      `{:error, reason}`. A caller that exits (the connection process died or does not exist: see
      `RedixRs.pipeline/3`) gets no `:stop` event, as in Redix.

  `RedixRs.Cluster` emits, as `Redix.Cluster` does (measurements `%{}`):

    * `prefix ++ [:cluster, :topology_change]` - a new topology is in use (at the first discovery,
      and whenever a refresh finds slots, nodes or roles changed). Metadata: `:cluster` (the name),
      `:nodes` (the `"host:port"` of every primary that owns slots).

    * `prefix ++ [:cluster, :failed_topology_refresh]` - no node could say the topology. Metadata:
      `:cluster`, `:reason` (`{:no_reachable_node, [{host, port, reason}]}`, one per node tried).

    * `prefix ++ [:cluster, :node_connection_failed]` - a node connection could not be made.
      Metadata: `:cluster`, `:address` (`"host:port"`), `:reason` (a `RedixRs.ConnectionError`).

    * `prefix ++ [:cluster, :redirection]` - a `MOVED` or `ASK` was followed. Metadata: `:cluster`,
      `:type` (`:moved` or `:ask`), `:slot`, `:target_address` (`"host:port"`).
  """

  require Logger

  @compile {:no_warn_undefined, :telemetry}

  @handler_id "redix_rs-default-telemetry-handler"
  @cluster_events [
    :topology_change,
    :failed_topology_refresh,
    :node_connection_failed,
    :redirection
  ]
  @default_prefix [:redix_rs]
  @prefix_key {__MODULE__, :prefix}

  @doc """
  Attaches a handler that logs disconnections and failed connections (as errors) and reconnections
  (as info), in Redix's wording, for the events under the configured prefix; and for
  `RedixRs.Cluster`, failed topology refreshes (error), node connection failures (warning) and
  redirections (info).

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
      prefix = load_prefix!()

      events =
        for(event <- [:disconnection, :failed_connection, :connection], do: prefix ++ [event]) ++
          for event <- @cluster_events, do: prefix ++ [:cluster, event]

      :telemetry.attach_many(@handler_id, events, &__MODULE__.handle_event/4, :no_config)
    else
      {:error, :telemetry_not_available}
    end
  end

  @doc false
  # RedixRs.Cluster's events, in Redix.Cluster's words.
  def handle_event(event, _measurements, %{cluster: cluster} = meta, :no_config)
      when is_list(event) do
    case List.last(event) do
      :failed_topology_refresh ->
        Logger.error(fn ->
          "Cluster #{inspect(cluster)} failed to refresh topology: #{inspect(meta.reason)}"
        end)

      :node_connection_failed ->
        Logger.warning(fn ->
          "Cluster #{inspect(cluster)} failed to connect to node #{meta.address}: " <>
            Exception.message(meta.reason)
        end)

      :redirection ->
        Logger.info(fn ->
          "Cluster #{inspect(cluster)} #{meta.type} redirection for slot #{meta.slot} to " <>
            meta.target_address
        end)

      _ ->
        :ok
    end
  end

  def handle_event(event, _measurements, meta, :no_config) when is_list(event) do
    who = inspect(meta.connection_name || meta.connection)

    case {List.last(event), meta} do
      {:failed_connection, %{sentinel_address: sentinel, reason: reason}}
      when is_binary(sentinel) ->
        Logger.error(fn ->
          "Connection #{who} failed to connect to sentinel at #{sentinel}: " <>
            Exception.message(reason)
        end)

      {:failed_connection, %{address: address, reason: reason}} ->
        Logger.error(fn ->
          "Connection #{who} failed to connect to Redis at #{address}: #{Exception.message(reason)}"
        end)

      {:disconnection, %{address: address, reason: reason}} ->
        Logger.error(fn ->
          "Connection #{who} disconnected from Redis at #{address}: #{Exception.message(reason)}"
        end)

      {:connection, %{address: address, reconnection: true}} ->
        Logger.info(fn -> "Connection #{who} reconnected to Redis at #{address}" end)

      _ ->
        :ok
    end
  end

  @doc false
  # Reads `config :redix_rs, telemetry_prefix: ...` (checking it) and makes it the prefix of every
  # event. Called when a connection starts, in the caller of `start_link`, so that a bad value raises
  # there. The persistent term is only written when the prefix changes (writing one costs a scan of
  # every process when a previous value is replaced).
  @spec load_prefix!() :: [atom(), ...]
  def load_prefix! do
    prefix = Application.get_env(:redix_rs, :telemetry_prefix, @default_prefix)

    unless is_list(prefix) and prefix != [] and Enum.all?(prefix, &is_atom/1) do
      raise ArgumentError,
            "expected the :telemetry_prefix setting of :redix_rs to be a non-empty list of " <>
              "atoms, such as [:redix], got: #{inspect(prefix)}"
    end

    case :persistent_term.get(@prefix_key, nil) do
      {^prefix, _start, _stop} ->
        :ok

      _ ->
        # With the names of the pipeline events, made once rather than at each call.
        names = {prefix, prefix ++ [:pipeline, :start], prefix ++ [:pipeline, :stop]}
        :persistent_term.put(@prefix_key, names)
    end

    prefix
  end

  @doc false
  # The prefix of every event: as read when the last connection started.
  @spec prefix() :: [atom(), ...]
  def prefix, do: elem(names(), 0)

  defp names do
    case :persistent_term.get(@prefix_key, nil) do
      nil ->
        load_prefix!()
        :persistent_term.get(@prefix_key)

      names ->
        names
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
  # Emits an event named with the default prefix (`[:redix_rs, :connection]`) under the configured
  # one.
  def execute([:redix_rs | name], measurements, metadata) do
    if enabled?(), do: :telemetry.execute(prefix() ++ name, measurements, metadata)
    :ok
  end

  ## Pipeline events: the one place their measurements and metadata are made, for every kind of call
  ## (calls on a connection, and whatever else answers calls: cluster routing, cache hits).

  @typedoc false
  # What a call's events need from its start: `nil` when no event is emitted.
  @type trace() ::
          {started_at :: integer(), system_time :: integer(), extra :: term(), names :: tuple()}
          | nil

  @doc false
  # Taken when a call begins, if `enabled?/0`: the clocks for its `:start` and `:stop` events, its
  # `:telemetry_metadata` and the events' names.
  @spec begin_pipeline(term()) :: trace()
  def begin_pipeline(extra_metadata),
    do: {System.monotonic_time(), System.system_time(), extra_metadata, names()}

  @doc false
  # The metadata of a call's events, as Redix makes it: `conn` is what the caller passed (a pid or a
  # name), `pid` what it stands for (`GenServer.whereis/1`).
  @spec pipeline_metadata(GenServer.server(), term(), [term()], term()) :: map()
  def pipeline_metadata(conn, pid, commands, extra_metadata) do
    %{
      connection: pid,
      connection_name: if(is_pid(conn), do: nil, else: conn),
      commands: commands,
      extra_metadata: extra_metadata
    }
  end

  @doc false
  # Emits `prefix ++ [:pipeline, :start]` for the call begun with `trace` (not `nil`), once its
  # commands are known to be valid. Returns what `pipeline_stop/2` needs.
  def pipeline_start({started_at, system_time, extra, {_, start, stop}}, conn, pid, commands) do
    metadata = pipeline_metadata(conn, pid, commands, extra)
    :telemetry.execute(start, %{system_time: system_time}, metadata)
    {started_at, metadata, stop}
  end

  @doc false
  # Emits `prefix ++ [:pipeline, :stop]` for a call that returned `result`; returns `result`.
  def pipeline_stop({started_at, metadata, stop}, result) do
    metadata =
      case result do
        {:error, reason} -> Map.merge(metadata, %{kind: :error, reason: reason})
        _ -> metadata
      end

    duration = max(System.monotonic_time() - started_at, 1)
    :telemetry.execute(stop, %{duration: duration}, metadata)
    result
  end
end
