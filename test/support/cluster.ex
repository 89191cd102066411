defmodule RedixRs.Test.Cluster do
  @moduledoc false
  # A real Redis Cluster for tests: `redis-server --cluster-enabled yes` processes (started with
  # `RedixRs.Test.RedisServer`, so they die with their owner) joined by
  # `redis-cli --cluster create`, every slot assigned, every node agreeing and every replica
  # online as node 0 sees it. `cluster-node-timeout` is 2,000 ms, so failures are noticed fast.

  alias RedixRs.Test.RedisServer

  @node_timeout 2_000

  defstruct [:nodes]

  @doc "Starts `primaries` primaries with `replicas` replicas each (3 × 1 by default)."
  def start(opts \\ []) do
    primaries = Keyword.get(opts, :primaries, 3)
    replicas = Keyword.get(opts, :replicas, 1)
    owner = Keyword.get(opts, :owner, self())

    nodes =
      for _ <- 1..(primaries * (1 + replicas)) do
        RedisServer.start(
          owner: owner,
          args: [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            Integer.to_string(@node_timeout),
            "--cluster-port",
            Integer.to_string(RedixRs.Test.Helpers.closed_port())
          ]
        )
      end

    cluster = %__MODULE__{nodes: nodes}
    create!(cluster, replicas)

    wait!("cluster_state:ok on every node", fn ->
      Enum.all?(nodes, &(info(&1) =~ "cluster_state:ok"))
    end)

    wait!("every node knows every node, and every primary its role", fn ->
      Enum.all?(0..(length(nodes) - 1), fn observer ->
        seen = nodes(cluster, observer)

        length(seen) == length(nodes) and
          Enum.count(seen, &(&1.primary? and not &1.failed?)) == primaries
      end)
    end)

    wait_in_sync!(cluster, primaries * replicas)

    # A replica that never synced with its primary would not take over from it (its data would be
    # too old): each must say its link is up.
    wait!("every replica in sync with its primary", fn ->
      linked = for node <- nodes, ["slave" | _] = role <- [role(node)], do: role

      length(linked) == primaries * replicas and
        Enum.all?(linked, &(Enum.at(&1, 3) == "connected"))
    end)

    cluster
  end

  defp role(node) do
    command!(node, ["ROLE"])
  rescue
    _ -> nil
  end

  @doc "Stops every node."
  def stop(%__MODULE__{nodes: nodes}), do: Enum.each(nodes, &RedisServer.stop/1)

  @doc "Seed URIs for `RedixRs.Cluster.start_link/1`."
  def uris(%__MODULE__{nodes: nodes}), do: Enum.map(nodes, &"redis://127.0.0.1:#{&1.port}")

  @doc "Every node's port."
  def ports(%__MODULE__{nodes: nodes}), do: Enum.map(nodes, & &1.port)

  defp create!(cluster, replicas) do
    args =
      ["--cluster", "create"] ++
        Enum.map(cluster.nodes, &"127.0.0.1:#{&1.port}") ++
        ["--cluster-replicas", Integer.to_string(replicas), "--cluster-yes"]

    {out, status} = System.cmd("redis-cli", args, stderr_to_stdout: true)
    if status != 0, do: raise("redis-cli --cluster create failed (#{status}):\n#{out}")
  end

  @doc """
  Waits until node 0 sees `replicas` replicas and every node online. A replica shows as `loading`
  until its offset, as gossiped, is non-zero: a key is written through every node to get
  replication going.
  """
  def wait_in_sync!(%__MODULE__{nodes: nodes} = cluster, replicas, observer \\ 0) do
    for node <- nodes, i <- 1..16, do: cli(node, ["SET", "warm:#{i}", "1"])
    count = length(nodes)

    wait!("every replica known and every node online", fn ->
      shards = cli(Enum.at(cluster.nodes, observer), ["CLUSTER", "SHARDS"])

      occurrences(shards, "\r\nreplica\r\n") == replicas and
        occurrences(shards, "\r\nonline\r\n") == count
    end)
  end

  defp occurrences(text, pattern), do: length(String.split(text, pattern)) - 1

  @doc "A raw command on a node (RESP text back), or `nil` if it cannot be reached."
  def cli(node, args) do
    RedisServer.redis_cli(node, args, timeout: 2_000)
  rescue
    _ -> nil
  end

  @doc "A command on a node, its reply parsed; raises on an error reply or when it cannot be reached."
  def command!(node, args) do
    case RedixRs.Protocol.parse(RedisServer.redis_cli(node, args, timeout: 2_000)) do
      {:ok, %RedixRs.Error{} = error, ""} -> raise error
      {:ok, value, ""} -> value
    end
  end

  @doc "The text of a bulk-string reply."
  def text("$" <> rest) do
    [_len, body] = String.split(rest, "\r\n", parts: 2)
    String.trim_trailing(body, "\r\n")
  end

  def text(other), do: other

  @doc "`CLUSTER INFO` of a node (empty when it does not answer)."
  def info(node), do: text(cli(node, ["CLUSTER", "INFO"]) || "")

  @doc """
  `CLUSTER NODES` as node `observer` (an index or a server) sees it: `%{id, port, primary?,
  failed?, primary_id, slots}` per node, slots as inclusive ranges.
  """
  def nodes(cluster, observer \\ 0) do
    server = if is_integer(observer), do: Enum.at(cluster.nodes, observer), else: observer
    text = text(cli(server, ["CLUSTER", "NODES"]) || "")

    for line <- String.split(text, "\n", trim: true) do
      [id, address, flags, primary | rest] = String.split(line, " ")
      [_host, port] = address |> String.split("@") |> hd() |> String.split(":")
      flags = String.split(flags, ",")

      slots =
        rest
        |> Enum.drop(4)
        |> Enum.reject(&String.starts_with?(&1, "["))
        |> Enum.map(fn range ->
          case String.split(range, "-") do
            [a, b] -> {String.to_integer(a), String.to_integer(b)}
            [a] -> {String.to_integer(a), String.to_integer(a)}
          end
        end)

      %{
        id: id,
        port: String.to_integer(port),
        primary?: "master" in flags,
        failed?: "fail" in flags,
        primary_id: if(primary == "-", do: nil, else: primary),
        slots: slots
      }
    end
  end

  @doc "The server listening on `port`."
  def by_port(%__MODULE__{nodes: nodes}, port), do: Enum.find(nodes, &(&1.port == port))

  @doc "The hash slot of `key`, as node 0 computes it."
  def slot(cluster, key) do
    ":" <> rest = cli(hd(cluster.nodes), ["CLUSTER", "KEYSLOT", key])
    rest |> String.trim() |> String.to_integer()
  end

  @doc "The server that owns `slot`, as node 0 sees it."
  def owner(cluster, slot, observer \\ 0) do
    node =
      Enum.find(nodes(cluster, observer), fn n ->
        n.primary? and Enum.any?(n.slots, fn {a, b} -> slot in a..b end)
      end)

    node && by_port(cluster, node.port)
  end

  @doc "The replicas of the primary on `port`, as node 0 sees them."
  def replicas_of(cluster, port) do
    all = nodes(cluster)
    primary = Enum.find(all, &(&1.port == port))
    for n <- all, n.primary_id == primary.id, do: by_port(cluster, n.port)
  end

  @doc """
  Sends the calling process `{:event, name, metadata}` for each `[:redix_rs, :cluster, event]` of
  `events`, until it exits.
  """
  def attach_events(events) do
    parent = self()
    id = "cluster-events-#{inspect(make_ref())}"
    names = for e <- events, do: [:redix_rs, :cluster, e]

    :telemetry.attach_many(
      id,
      names,
      fn name, _, meta, _ -> send(parent, {:event, name, meta}) end,
      nil
    )

    RedixRs.Test.Helpers.detach_on_exit(id)
  end

  @doc "Polls `fun` every 50 ms for up to `timeout` ms; raises `what` when it never holds."
  def wait!(what, fun, timeout \\ 30_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_wait(what, fun, deadline)
  end

  defp do_wait(what, fun, deadline) do
    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        raise "timed out waiting for: #{what}"

      true ->
        Process.sleep(50)
        do_wait(what, fun, deadline)
    end
  end
end

defmodule RedixRs.Doctest.Cluster do
  @moduledoc false
  # The seeds of the cluster the docs' examples use (started by the cluster tests).
  def put(uris), do: :persistent_term.put(__MODULE__, uris)
  def nodes, do: :persistent_term.get(__MODULE__)
end
