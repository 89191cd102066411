defmodule RedixRs.Test.PubSubClusterServers do
  @moduledoc false
  # A real Redis Cluster for the cluster pub/sub tests: `primaries * (1 + replicas)` redis-server
  # processes (`RedixRs.Test.RedisServer`, each on a free 127.0.0.1 port, its cluster bus on
  # port + 10000) joined by `redis-cli --cluster create`, with `cluster-node-timeout 2000`. The
  # servers die with the process that called `start/1` (a test module's `setup_all`).
  #
  # Tests talk to the nodes through plain `RedixRs` connections, one per node (`conn/2`).

  alias RedixRs.Test.RedisServer

  defstruct [:servers, :conns]

  @node_timeout 2_000
  @wait 30_000

  def start(opts \\ []) do
    primaries = Keyword.get(opts, :primaries, 3)
    replicas = Keyword.get(opts, :replicas, 1)

    servers =
      for _ <- 1..(primaries * (1 + replicas)) do
        RedisServer.start(
          args: [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            Integer.to_string(@node_timeout)
          ]
        )
      end

    conns =
      Map.new(servers, fn s ->
        {:ok, conn} = RedixRs.start_link(port: s.port, sync_connect: true)
        Process.unlink(conn)
        {s.port, conn}
      end)

    cluster = %__MODULE__{servers: servers, conns: conns}
    create!(cluster, replicas)

    wait_until("cluster_state:ok on every node", fn ->
      Enum.all?(servers, &(info(cluster, &1.port) =~ "cluster_state:ok"))
    end)

    wait_until("every node knows every node, and every replica its role", fn ->
      Enum.all?(servers, fn s ->
        nodes = nodes(cluster, s.port)
        length(nodes) == length(servers) and Enum.count(nodes, & &1.primary?) == primaries
      end)
    end)

    # A replica that never synced with its primary would not take over from it (its data would be
    # too old): each must say its link is up.
    wait_until("every replica in sync with its primary", fn ->
      roles = Enum.map(servers, &RedixRs.command(conn(cluster, &1.port), ["ROLE"]))
      linked = for {:ok, ["slave" | _] = role} <- roles, do: role

      length(linked) == primaries * replicas and
        Enum.all?(linked, &(Enum.at(&1, 3) == "connected"))
    end)

    cluster
  end

  def stop(%__MODULE__{servers: servers, conns: conns}) do
    Enum.each(conns, fn {_, conn} -> RedixRs.stop(conn) end)
    Enum.each(servers, &RedisServer.stop/1)
  end

  defp create!(cluster, replicas) do
    addresses = Enum.map(cluster.servers, &"127.0.0.1:#{&1.port}")
    cli = System.find_executable("redis-cli") || "/usr/bin/redis-cli"

    args =
      ["--cluster", "create"] ++
        addresses ++ ["--cluster-replicas", "#{replicas}", "--cluster-yes"]

    task = Task.async(fn -> System.cmd(cli, args, stderr_to_stdout: true) end)

    case Task.yield(task, 60_000) || Task.shutdown(task, :brutal_kill) do
      {:ok, {_out, 0}} -> :ok
      other -> raise "redis-cli --cluster create failed: #{inspect(other)}"
    end
  end

  @doc "The plain connection to the node on `port`."
  def conn(%__MODULE__{conns: conns}, port), do: Map.fetch!(conns, port)

  @doc "Runs a command on the node on `port`."
  def command!(cluster, port, command), do: RedixRs.command!(conn(cluster, port), command)

  def info(cluster, port) do
    case RedixRs.command(conn(cluster, port), ["CLUSTER", "INFO"]) do
      {:ok, text} -> text
      _ -> ""
    end
  end

  @doc "`CLUSTER NODES` of the node on `port`: `%{id, port, primary?, slots: [first..last]}` each."
  def nodes(cluster, port) do
    case RedixRs.command(conn(cluster, port), ["CLUSTER", "NODES"]) do
      {:ok, text} -> text |> String.split("\n", trim: true) |> Enum.map(&parse_line/1)
      _ -> []
    end
  end

  defp parse_line(line) do
    [id, address, flags, primary, _ping, _pong, _epoch, _link | slots] = String.split(line, " ")
    [_host, rest] = String.split(address, ":", parts: 2)
    [port | _] = String.split(rest, "@")

    ranges =
      for spec <- slots, not String.starts_with?(spec, "[") do
        case String.split(spec, "-") do
          [a, b] -> String.to_integer(a)..String.to_integer(b)
          [a] -> String.to_integer(a)..String.to_integer(a)
        end
      end

    %{
      id: id,
      port: String.to_integer(port),
      primary?: flags =~ "master" and not (flags =~ "fail"),
      primary_id: if(primary == "-", do: nil, else: primary),
      slots: ranges
    }
  end

  @doc "The ports of the primaries that own slots, as the node on `observer` sees them."
  def primaries(cluster, observer \\ nil) do
    observer = observer || hd(cluster.servers).port
    for n <- nodes(cluster, observer), n.primary?, n.slots != [], do: n.port
  end

  @doc "The port of a replica of the primary on `port`."
  def replica_of(cluster, port) do
    nodes = nodes(cluster, port)
    %{id: id} = Enum.find(nodes, &(&1.port == port))
    Enum.find_value(nodes, &(&1.primary_id == id && &1.port))
  end

  @doc "Every node's port."
  def ports(%__MODULE__{servers: servers}), do: Enum.map(servers, & &1.port)

  @doc "The port of the primary owning `slot`, as the node on `observer` sees it."
  def owner(cluster, slot, observer \\ nil) do
    observer = observer || hd(cluster.servers).port

    Enum.find_value(nodes(cluster, observer), fn n ->
      n.primary? and Enum.any?(n.slots, &(slot in &1)) and n.port
    end)
  end

  @doc "A name (`prefix` and a number) whose slot the primary on `port` owns."
  def name_on(cluster, port, prefix) do
    Enum.find_value(1..100_000, fn i ->
      name = "#{prefix}#{i}"
      owner(cluster, RedixRs.Native.key_slot(name)) == port && name
    end)
  end

  @doc """
  Moves the (empty) `slot` to the primary on `to`, as a resharding tool does: IMPORTING at the
  target, MIGRATING at the source, then `SETSLOT NODE` at the target, the source and every other
  primary; waits until every node agrees.
  """
  def move_slot!(cluster, slot, to) do
    from = owner(cluster, slot)
    to_id = command!(cluster, to, ["CLUSTER", "MYID"])
    from_id = command!(cluster, from, ["CLUSTER", "MYID"])
    "OK" = command!(cluster, to, ["CLUSTER", "SETSLOT", slot, "IMPORTING", from_id])
    "OK" = command!(cluster, from, ["CLUSTER", "SETSLOT", slot, "MIGRATING", to_id])
    "OK" = command!(cluster, to, ["CLUSTER", "SETSLOT", slot, "NODE", to_id])
    "OK" = command!(cluster, from, ["CLUSTER", "SETSLOT", slot, "NODE", to_id])

    for port <- primaries(cluster, to), port not in [from, to] do
      command!(cluster, port, ["CLUSTER", "SETSLOT", slot, "NODE", to_id])
    end

    wait_until("every node sees slot #{slot} at #{to}", fn ->
      Enum.all?(ports(cluster), &(owner(cluster, slot, &1) == to))
    end)

    from
  end

  @doc """
  A process (on whatever node this runs, e.g. a peer through `:erpc`) that forwards every message it
  receives to `test` as `{:forwarded, self(), message}`.
  """
  def forwarder(test), do: spawn(fn -> forward(test) end)

  defp forward(test) do
    receive do
      message -> send(test, {:forwarded, self(), message})
    end

    forward(test)
  end

  @doc "Polls `fun` every 50 ms until it is true; raises after 30 s."
  def wait_until(what, fun, deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + @wait

    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        raise "timed out waiting for: #{what}"

      true ->
        Process.sleep(50)
        wait_until(what, fun, deadline)
    end
  end
end
