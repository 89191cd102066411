defmodule RedixRs.Cluster.FailoverTest do
  # Failures on real clusters, one per test (each test breaks its cluster): a manual CLUSTER
  # FAILOVER under a 20-process SET stream, and the SIGKILL of a primary.
  use ExUnit.Case, async: false

  alias RedixRs.Test.{Cluster, RedisServer}

  @moduletag timeout: 240_000
  @call_timeout 5_000

  setup do
    cluster = Cluster.start()
    on_exit(fn -> Cluster.stop(cluster) end)
    %{cluster: cluster}
  end

  # Writes unique keys until told to stop; reports every acknowledged SET and the longest call.
  defp writer(parent, name, p) do
    spawn_link(fn -> write(parent, name, p, 0, [], 0) end)
  end

  defp write(parent, name, p, i, acked, longest) do
    receive do
      {:stop, from} -> send(from, {:written, p, acked, longest})
    after
      0 ->
        key = "fo:#{p}:#{i}"
        started = System.monotonic_time(:millisecond)
        result = RedixRs.Cluster.command(name, ["SET", key, i], timeout: @call_timeout)
        took = System.monotonic_time(:millisecond) - started
        acked = if result == {:ok, "OK"}, do: [{key, Integer.to_string(i)} | acked], else: acked
        if rem(i, 25) == 0, do: send(parent, {:progress, p, i})
        write(parent, name, p, i + 1, acked, max(longest, took))
    end
  end

  defp progress_after(count) do
    # Every writer reports progress again (after whatever happened before this call).
    for _ <- 1..count, reduce: MapSet.new() do
      seen -> wait_progress(seen)
    end
  end

  defp wait_progress(seen) do
    receive do
      {:progress, p, _} -> if p in seen, do: wait_progress(seen), else: MapSet.put(seen, p)
    after
      30_000 -> flunk("a writer made no progress for 30 s")
    end
  end

  defp flush_progress do
    receive do
      {:progress, _, _} -> flush_progress()
    after
      0 -> :ok
    end
  end

  test "CLUSTER FAILOVER under a 20-process SET stream: every acknowledged SET is readable, no call hangs",
       %{cluster: cluster} do
    Cluster.attach_events([:topology_change])

    # Replicas connected too, to see each node reconnected in its new role.
    {:ok, _} =
      RedixRs.Cluster.start_link(
        name: :fo,
        nodes: Cluster.uris(cluster),
        sync_connect: true,
        read_from_replicas: true
      )

    assert_receive {:event, _, %{cluster: :fo}}

    slot = Cluster.slot(cluster, "fo:1:0")
    primary = Cluster.owner(cluster, slot)
    [replica] = Cluster.replicas_of(cluster, primary.port)

    parent = self()
    writers = for p <- 1..20, do: writer(parent, :fo, p)
    progress_after(20)

    assert Cluster.cli(replica, ["CLUSTER", "FAILOVER"]) == "+OK\r\n"

    Cluster.wait!("the replica is a primary", fn ->
      Enum.any?(
        Cluster.nodes(cluster, replica),
        &(&1.port == replica.port and &1.primary? and &1.slots != [])
      )
    end)

    # The client follows: a new topology with the replica as a primary.
    replica_address = "127.0.0.1:#{replica.port}"

    Cluster.wait!("the client's topology has the new primary", fn ->
      receive do
        {:event, _, %{nodes: nodes}} -> replica_address in nodes
      after
        0 -> false
      end
    end)

    flush_progress()
    progress_after(20)

    # The new primary is connected as a primary, the former one as a (read-only) replica.
    primary_address = "127.0.0.1:#{primary.port}"

    Cluster.wait!("both nodes reconnected in their new roles", fn ->
      {_primaries, conns} = RedixRs.Cluster.info(:fo)
      {replica_address, false, true} in conns and {primary_address, true, true} in conns
    end)

    for w <- writers, do: send(w, {:stop, self()})

    {acked, longest} =
      Enum.reduce(writers, {[], 0}, fn _, {acked, longest} ->
        assert_receive {:written, _p, mine, took}, 30_000
        {mine ++ acked, max(longest, took)}
      end)

    assert longest <= @call_timeout + 1_000, "a call took #{longest} ms"
    assert length(acked) > 200

    acked
    |> Enum.chunk_every(500)
    |> Enum.each(fn chunk ->
      {keys, values} = Enum.unzip(chunk)

      assert {:ok, ^values} =
               RedixRs.Cluster.pipeline(:fo, Enum.map(keys, &["GET", &1]), timeout: 10_000)
    end)
  end

  test "SIGKILL of a primary: its commands fail inline, then succeed within 10 s of the promotion",
       %{cluster: cluster} do
    Cluster.attach_events([:topology_change, :node_connection_failed])

    {:ok, _} =
      RedixRs.Cluster.start_link(name: :killed, nodes: Cluster.uris(cluster), sync_connect: true)

    slot = Cluster.slot(cluster, "victim")
    primary = Cluster.owner(cluster, slot)
    [replica] = Cluster.replicas_of(cluster, primary.port)
    {:ok, "OK"} = RedixRs.Cluster.command(:killed, ["SET", "victim", "before"])

    # Keys on every shard, some on the primary about to die.
    keys = for i <- 1..30, do: "spread:#{i}"
    {:ok, _} = RedixRs.Cluster.pipeline(:killed, Enum.map(keys, &["SET", &1, &1]))
    on_victim = Enum.filter(keys, &(Cluster.owner(cluster, Cluster.slot(cluster, &1)) == primary))
    assert on_victim != [] and length(on_victim) < length(keys)

    :ok = RedisServer.os_kill(primary, "KILL")
    address = "127.0.0.1:#{primary.port}"

    # A pipeline over every shard: the dead node's commands hold a connection error, the others
    # their replies (until the cluster declares the node failed, 2 s later).
    assert {:ok, replies} = RedixRs.Cluster.pipeline(:killed, Enum.map(keys, &["GET", &1]))

    for {key, reply} <- Enum.zip(keys, replies) do
      if key in on_victim do
        assert %RedixRs.ConnectionError{reason: reason} = reply
        assert reason in [:disconnected, :closed]
      else
        assert reply == key
      end
    end

    # A call that went to the dead node alone: {:error, _}.
    assert {:error, %RedixRs.ConnectionError{}} =
             RedixRs.Cluster.command(:killed, ["GET", "victim"])

    assert_receive {:event, [:redix_rs, :cluster, :node_connection_failed],
                    %{cluster: :killed, address: ^address, reason: %RedixRs.ConnectionError{}}},
                   10_000

    Cluster.wait!(
      "the replica is promoted",
      fn ->
        Enum.any?(
          Cluster.nodes(cluster, replica),
          &(&1.port == replica.port and &1.primary? and &1.slots != [])
        )
      end,
      60_000
    )

    promoted_at = System.monotonic_time(:millisecond)

    Cluster.wait!(
      "SET succeeds again",
      fn ->
        RedixRs.Cluster.command(:killed, ["SET", "victim", "after"], timeout: 1_000) ==
          {:ok, "OK"}
      end,
      10_000
    )

    assert System.monotonic_time(:millisecond) - promoted_at < 10_000
    assert {:ok, "after"} = RedixRs.Cluster.command(:killed, ["GET", "victim"])
    replica_address = "127.0.0.1:#{replica.port}"

    # A topology with the replica among the primaries was announced.
    assert wait_topology(replica_address)
  end

  test "health_check_interval: callers of a frozen node get :disconnected, not a timeout", %{
    cluster: cluster
  } do
    {:ok, _} =
      RedixRs.Cluster.start_link(
        name: :health,
        nodes: Cluster.uris(cluster),
        sync_connect: true,
        health_check_interval: 200
      )

    slot = Cluster.slot(cluster, "frozen")
    primary = Cluster.owner(cluster, slot)
    {:ok, "OK"} = RedixRs.Cluster.command(:health, ["SET", "frozen", "x"])
    # A blocking command does not fail a health check: its PING waits, a fresh connection answers.
    blocked =
      Task.async(fn -> RedixRs.Cluster.command(:health, ["BLPOP", "frozen:list", "1"]) end)

    assert {:ok, nil} = Task.await(blocked, 5_000)

    :ok = RedisServer.os_kill(primary, "STOP")
    on_exit(fn -> RedisServer.os_kill(primary, "CONT") end)
    started = System.monotonic_time(:millisecond)
    result = RedixRs.Cluster.command(:health, ["GET", "frozen"], timeout: 15_000)
    took = System.monotonic_time(:millisecond) - started
    RedisServer.os_kill(primary, "CONT")

    assert {:error, %RedixRs.ConnectionError{reason: :disconnected}} = result
    assert took < 10_000, "noticed after #{took} ms"
  end

  defp wait_topology(address) do
    receive do
      {:event, [:redix_rs, :cluster, :topology_change], %{nodes: nodes}} ->
        address in nodes or wait_topology(address)
    after
      5_000 -> false
    end
  end
end
