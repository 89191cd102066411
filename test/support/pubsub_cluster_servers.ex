defmodule RedixRs.Test.PubSubClusterServers do
  @moduledoc false
  # The cluster pub/sub tests' view of a `RedixRs.Test.Cluster` (which starts, stops and reads the
  # topology of the cluster): nodes named by their port, plus what only those tests use (moving a
  # slot, a name whose slot a given node owns, a forwarding process).

  alias RedixRs.Test.Cluster

  defdelegate start(opts \\ []), to: Cluster
  defdelegate stop(cluster), to: Cluster
  defdelegate ports(cluster), to: Cluster

  @doc "Polls `fun` every 50 ms until it is true; raises after 30 s."
  defdelegate wait_until(what, fun), to: Cluster, as: :wait!

  @doc "Runs a command on the node on `port`."
  def command!(cluster, port, command), do: Cluster.command!(server(cluster, port), command)

  @doc "`CLUSTER INFO` of the node on `port`."
  def info(cluster, port), do: Cluster.info(server(cluster, port))

  @doc "The ports of the primaries that own slots, as the node on `observer` sees them."
  def primaries(cluster, observer \\ nil) do
    for n <- Cluster.nodes(cluster, observer(cluster, observer)),
        n.primary? and not n.failed? and n.slots != [],
        do: n.port
  end

  @doc "The port of a replica of the primary on `port`."
  def replica_of(cluster, port) do
    case Cluster.replicas_of(cluster, port) do
      [replica | _] -> replica.port
      [] -> nil
    end
  end

  @doc "The port of the primary owning `slot`, as the node on `observer` sees it."
  def owner(cluster, slot, observer \\ nil) do
    case Cluster.owner(cluster, slot, observer(cluster, observer)) do
      nil -> nil
      server -> server.port
    end
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

  defp server(cluster, port), do: Cluster.by_port(cluster, port) || raise("no node on #{port}")

  defp observer(_cluster, nil), do: 0
  defp observer(cluster, port), do: server(cluster, port)
end
