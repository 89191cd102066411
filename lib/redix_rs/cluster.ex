defmodule RedixRs.Cluster do
  @moduledoc """
  A Redis Cluster client with `Redix.Cluster`'s API (Redix 1.6), routing in Rust.

  Start it under your supervisor with the cluster's name and one or more seed nodes; the rest of
  the cluster is discovered (`CLUSTER SHARDS`, or `CLUSTER SLOTS` on servers before 7):

      children = [
        {RedixRs.Cluster, name: :cache, nodes: ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]}
      ]

  and send commands by name, as with `RedixRs`:

      iex> RedixRs.Cluster.command(:cluster, ["SET", "user:1", "Alice"])
      {:ok, "OK"}
      iex> RedixRs.Cluster.command(:cluster, ["GET", "user:1"])
      {:ok, "Alice"}
      iex> RedixRs.command(:cluster, ["GET", "user:1"])
      {:ok, "Alice"}

  (Examples in these docs use a cluster started as `{RedixRs.Cluster, name: :cluster, nodes:
  [...]}`, and `RedixRs.Doctest.Cluster.nodes()` stands for your seed nodes.)

  ## How a call is routed

  Each command goes to the primary that owns the hash slot of its first key: CRC16 (XMODEM) of the
  key modulo 16384, hashing only the content of the first non-empty `{...}` (a *hash tag*, so
  `{user:1}:name` and `{user:1}:email` share a slot). Where a command's key is comes from the
  cluster's own command table (`COMMAND`), read once and applied locally, so `EVALSHA sha 1 key`
  routes by `key` with no extra round trip; only a command whose keys the specs cannot locate
  (`MIGRATE ... KEYS k`) costs a `COMMAND GETKEYS` first. Keyless commands go to a random primary
  (in a pipeline, to the node of the command before them). A multi-key
  command goes by its first key: if its keys span slots, Redis answers `CROSSSLOT`.

  The routing happens in the NIF call that queues the command, in the caller's process: there is no
  process hop, and each node has one multiplexed connection shared by every caller (as a `RedixRs`
  connection is). Pipelines are split by node, the parts sent in parallel and the replies put back
  in the caller's order.

  ## Redirects, retries, failures

  A `MOVED` reply (the slot has a new owner) makes the command go to the new owner and the
  topology be refreshed; `ASK` (a slot being migrated) sends `ASKING` and the command to the
  target, without a refresh. At most 5 redirects are followed per command; past that, its reply is
  `%RedixRs.ConnectionError{reason: :too_many_redirections}`. `TRYAGAIN` and `CLUSTERDOWN` replies
  are sent again after a short pause, within the call's `:timeout`. None of this is a retry of
  something the server ran: a node that redirects ran nothing. One deadline, the call's
  `:timeout`, covers the whole call with its redirects.

  When a node's connection fails, the calls waiting for it get
  `%RedixRs.ConnectionError{reason: :disconnected}` (and `:closed` while it reconnects); the
  topology is refreshed (at most once a second) so that a promoted replica takes over its slots.
  In a pipeline that went to several nodes, a failed node's commands hold the error and the others
  their replies (`{:ok, list}`); a call that went to one node gets `{:error, reason}`.

  ## Reading from replicas

  With `read_from_replicas: true`, every replica is connected too (with `READONLY`), and the
  `:route` option of a call may send it to one: `:replica` (a random replica of the slot, or
  `%RedixRs.ConnectionError{reason: :no_replica_connection}`) or `:prefer_replica` (a replica, else
  the primary). Use them for reads only, and expect replication lag.

  ## Limitations (as `Redix.Cluster`)

  Database 0 only; no `noreply_*` functions; pub/sub is not part of this module. Options that name
  one server (`:host`, `:port`) or that a cluster cannot honour (`:sentinel`,
  `:exit_on_disconnection`) raise `ArgumentError`. A `:password` given as `{module, function,
  args}` is evaluated once, when the cluster starts. `:health_check_interval` checks every node
  connection as it checks a `RedixRs` connection.

  ## Options

  Cluster options:

  #{RedixRs.Options.cluster_docs()}

  Every other `RedixRs.start_link/1` option (`:password`, `:username`, `:ssl`, `:socket_opts`,
  `:timeout`, `:backoff_initial`, `:backoff_max`, `:client_name`, `:protocol`, ...) applies to each
  node connection. `:backoff_initial`/`:backoff_max` also pace rediscovery after a failed first
  discovery.

  ## Telemetry

  Under the configured prefix (`[:redix_rs]` by default, see `RedixRs.Telemetry`):
  `prefix ++ [:cluster, :topology_change]` (`%{cluster, nodes}`: the primaries' `"host:port"`),
  `[:cluster, :failed_topology_refresh]` (`%{cluster, reason}`: `{:no_reachable_node, [{host,
  port, reason}]}`), `[:cluster, :node_connection_failed]` (`%{cluster, address, reason}`), and
  `[:cluster, :redirection]` (`%{cluster, type: :moved | :ask, slot, target_address}`).
  """

  alias RedixRs.Cluster.Call

  @typedoc "A seed node: a URI, or `[host: host, port: port]`."
  @type endpoint() :: String.t() | [{:host, String.t()} | {:port, :inet.port_number()}]

  @doc """
  Starts a cluster client: a supervisor registered under `:name`. See "Options" above; invalid
  options raise `ArgumentError`. With `sync_connect: true` the first discovery happens before this
  returns, and fails it (`{:error, _}`) if no seed answers.

  ## Examples

      iex> {:ok, pid} = RedixRs.Cluster.start_link(name: :my_cluster, nodes: RedixRs.Doctest.Cluster.nodes(), sync_connect: true)
      iex> is_pid(pid)
      true
      iex> RedixRs.Cluster.stop(:my_cluster)
      :ok
  """
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts) do
    {cluster_opts, node_opts} = RedixRs.Options.validate_cluster!(opts)
    RedixRs.Native.ensure_loaded!()
    RedixRs.Telemetry.load_prefix!()

    children = [
      %{
        id: RedixRs.Cluster.Manager,
        start: {RedixRs.Cluster.Manager, :start_link, [{cluster_opts, node_opts}]}
      }
    ]

    Supervisor.start_link(children, name: cluster_opts[:name], strategy: :one_for_one)
  end

  @doc """
  A child specification: a supervisor whose id is the cluster's name.

  ## Examples

      iex> RedixRs.Cluster.child_spec(name: :cache, nodes: ["redis://localhost:7000"])
      %{id: :cache, type: :supervisor, start: {RedixRs.Cluster, :start_link, [[name: :cache, nodes: ["redis://localhost:7000"]]]}}
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) when is_list(opts) do
    %{
      id: Keyword.fetch!(opts, :name),
      type: :supervisor,
      start: {__MODULE__, :start_link, [opts]}
    }
  end

  @doc """
  Stops the cluster client and closes every node connection.

  ## Examples

      iex> {:ok, _} = RedixRs.Cluster.start_link(name: :short_lived, nodes: RedixRs.Doctest.Cluster.nodes())
      iex> RedixRs.Cluster.stop(:short_lived)
      :ok
  """
  @spec stop(atom(), timeout()) :: :ok
  def stop(cluster, timeout \\ 60_000) when is_atom(cluster),
    do: Supervisor.stop(cluster, :normal, timeout)

  @doc """
  Sends one command to the node that serves its key. Options: `:timeout` (ms, default 5,000,
  redirects included) and `:route` (`:primary`, the default, `:replica` or `:prefer_replica`).

  ## Examples

      iex> RedixRs.Cluster.command(:cluster, ["SET", "{user:2}:name", "Bob"])
      {:ok, "OK"}
      iex> RedixRs.Cluster.command(:cluster, ["GET", "{user:2}:name"])
      {:ok, "Bob"}
      iex> {:error, %RedixRs.Error{message: "CROSSSLOT" <> _}} = RedixRs.Cluster.command(:cluster, ["MGET", "a", "b"])
  """
  @spec command(atom(), RedixRs.command(), keyword()) ::
          {:ok, RedixRs.redis_value()} | {:error, RedixRs.Error.t() | RedixRs.ConnectionError.t()}
  def command(cluster, command, opts \\ []) when is_atom(cluster) do
    case pipeline(cluster, [command], opts) do
      {:ok, [%error_module{} = error]}
      when error_module in [RedixRs.Error, RedixRs.ConnectionError] ->
        {:error, error}

      {:ok, [value]} ->
        {:ok, value}

      {:error, _} = error ->
        error
    end
  end

  @doc """
  Like `command/3`, but returns the value or raises.

  ## Examples

      iex> RedixRs.Cluster.command!(:cluster, ["PING"])
      "PONG"
  """
  @spec command!(atom(), RedixRs.command(), keyword()) :: RedixRs.redis_value()
  def command!(cluster, command, opts \\ []),
    do: RedixRs.Command.ok!(command(cluster, command, opts))

  @doc """
  Sends several commands, each to the node of its key, and returns the replies in order.

  Commands for different nodes go in parallel. Redis errors stay inline as `%RedixRs.Error{}`.
  When the commands went to several nodes and one of them failed, its commands hold a
  `%RedixRs.ConnectionError{}` and the result is still `{:ok, list}`; when they all went to one
  node, its failure is `{:error, %RedixRs.ConnectionError{}}`. Options as for `command/3`.

  ## Examples

      iex> RedixRs.Cluster.pipeline(:cluster, [["SET", "a", "1"], ["SET", "b", "2"], ["MGET", "{x}1", "{x}2"]])
      {:ok, ["OK", "OK", [nil, nil]]}
  """
  @spec pipeline(atom(), [RedixRs.command()], keyword()) ::
          {:ok, [RedixRs.redis_value()]} | {:error, RedixRs.ConnectionError.t()}
  def pipeline(cluster, commands, opts \\ []) when is_atom(cluster),
    do: Call.run(cluster, commands, :pipeline, opts)

  @doc """
  Like `pipeline/3`, but returns the replies or raises.

  ## Examples

      iex> RedixRs.Cluster.pipeline!(:cluster, [["PING"], ["ECHO", "hi"]])
      ["PONG", "hi"]
  """
  @spec pipeline!(atom(), [RedixRs.command()], keyword()) :: [RedixRs.redis_value()]
  def pipeline!(cluster, commands, opts \\ []),
    do: RedixRs.Command.ok!(pipeline(cluster, commands, opts))

  @doc """
  Runs commands in `MULTI`/`EXEC` on the primary of their slot and returns `EXEC`'s replies.

  Every command with a key must hash to the same slot (use hash tags); otherwise nothing is sent
  and the result is `{:error, %RedixRs.Error{message: "CROSSSLOT Keys in request don't hash to the
  same slot"}}`. At least one command must have a key. After `MOVED` or `ASK` the whole
  transaction runs again at the target. Only `route: :primary` is accepted.

  ## Examples

      iex> RedixRs.Cluster.transaction_pipeline(:cluster, [["SET", "{t}a", "1"], ["INCR", "{t}a"]])
      {:ok, ["OK", 2]}
      iex> RedixRs.Cluster.transaction_pipeline(:cluster, [["SET", "a", "1"], ["SET", "b", "2"]])
      {:error, %RedixRs.Error{message: "CROSSSLOT Keys in request don't hash to the same slot"}}
  """
  @spec transaction_pipeline(atom(), [RedixRs.command()], keyword()) ::
          {:ok, [RedixRs.redis_value()]}
          | {:error, RedixRs.Error.t() | RedixRs.ConnectionError.t()}
  def transaction_pipeline(cluster, [_ | _] = commands, opts \\ []) when is_atom(cluster) do
    Call.run(cluster, commands, :transaction, opts)
    |> RedixRs.Command.transaction_result()
  end

  @doc """
  Like `transaction_pipeline/3`, but returns the replies or raises.

  ## Examples

      iex> RedixRs.Cluster.transaction_pipeline!(:cluster, [["DEL", "{u}n"], ["INCR", "{u}n"]])
      [0, 1]
  """
  @spec transaction_pipeline!(atom(), [RedixRs.command()], keyword()) ::
          [RedixRs.redis_value()] | nil
  def transaction_pipeline!(cluster, commands, opts \\ []),
    do: RedixRs.Command.ok!(transaction_pipeline(cluster, commands, opts))

  @doc """
  A lazy `Stream` of the keys of every primary (`SCAN` runs per node, one node after another).

  Options: `:match` (a glob pattern), `:count` (the `COUNT` hint), `:type` (Redis 6+), `:timeout`
  (per `SCAN` call, default 5,000 ms). As with `SCAN`, a key may come more than once if the cluster
  changes during the scan. A failed `SCAN` raises its error when the stream is run.

  ## Examples

      iex> RedixRs.Cluster.command!(:cluster, ["SET", "scan:doc", "1"])
      "OK"
      iex> RedixRs.Cluster.scan(:cluster, match: "scan:doc*") |> Enum.to_list()
      ["scan:doc"]
  """
  @spec scan(atom(), keyword()) :: Enumerable.t()
  def scan(cluster, opts \\ []) when is_atom(cluster) and is_list(opts) do
    {args, timeout} = scan_options!(opts)

    Stream.resource(
      fn -> {primaries(cluster), "0", :next} end,
      &scan_step(cluster, &1, args, timeout),
      fn _ -> :ok end
    )
  end

  defp scan_step(_cluster, {[], _, _}, _args, _timeout), do: {:halt, nil}

  defp scan_step(cluster, {[node | rest] = nodes, cursor, _}, args, timeout) do
    case Call.run_on(cluster, [["SCAN", cursor | args]], :pipeline, {:node, node}, timeout) do
      {:ok, [[next, keys]]} when is_binary(next) and is_list(keys) ->
        if next == "0", do: {keys, {rest, "0", :next}}, else: {keys, {nodes, next, :more}}

      {:ok, [%RedixRs.Error{} = error]} ->
        raise error

      {:ok, [%RedixRs.ConnectionError{} = error]} ->
        raise error

      {:error, error} ->
        raise error
    end
  end

  defp primaries(cluster) do
    case RedixRs.Cluster.Manager.lookup(cluster) do
      {:ok, handle, _owner} ->
        {primaries, _conns} = RedixRs.Native.cluster_info(handle)
        primaries

      :error ->
        exit({:redix_exited_during_call, :noproc})
    end
  end

  defp scan_options!(opts) do
    Enum.reduce(opts, {[], 5_000}, fn
      {:match, pattern}, {args, t} when is_binary(pattern) -> {args ++ ["MATCH", pattern], t}
      {:count, n}, {args, t} when is_integer(n) and n > 0 -> {args ++ ["COUNT", n], t}
      {:type, type}, {args, t} when is_binary(type) -> {args ++ ["TYPE", type], t}
      {:timeout, t}, {args, _} when (is_integer(t) and t >= 0) or t == :infinity -> {args, t}
      other, _ -> raise ArgumentError, "invalid scan option: #{inspect(other)}"
    end)
  end

  @doc false
  # For tests and introspection: the primaries' addresses and every node connection
  # (`{"host:port", readonly, connected}`).
  def info(cluster) do
    case RedixRs.Cluster.Manager.lookup(cluster) do
      {:ok, handle, _owner} -> RedixRs.Native.cluster_info(handle)
      :error -> nil
    end
  end
end
