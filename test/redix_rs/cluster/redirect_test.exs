defmodule RedixRs.Cluster.RedirectTest do
  # Redirects on a real cluster of its own (slots are moved here): MOVED during a live slot
  # migration under 20 processes, ASK for a key already migrated, and `:too_many_redirections`
  # from a fake node that always answers MOVED.
  use ExUnit.Case, async: false

  alias RedixRs.Test.{Cluster, ClusterFakeNode}

  @moduletag timeout: 180_000

  setup_all do
    cluster = Cluster.start()

    {:ok, _} =
      RedixRs.Cluster.start_link(name: :moving, nodes: Cluster.uris(cluster), sync_connect: true)

    on_exit(fn -> Cluster.stop(cluster) end)
    %{cluster: cluster}
  end

  defp node_id(cluster, server) do
    Enum.find(Cluster.nodes(cluster), &(&1.port == server.port)).id
  end

  defp other_primary(cluster, server) do
    Cluster.nodes(cluster)
    |> Enum.find(&(&1.primary? and &1.slots != [] and &1.port != server.port))
    |> then(&Cluster.by_port(cluster, &1.port))
  end

  # Moves the keys of `slot` from `source` to `target` (MIGRATE), `batch` at a time, calling
  # `between` after each batch.
  defp migrate_keys(cluster, slot, source, target, between \\ fn -> :ok end) do
    case Cluster.cli(source, ["CLUSTER", "GETKEYSINSLOT", slot, 50]) do
      "*0\r\n" ->
        :ok

      reply ->
        {:ok, keys, ""} = RedixRs.Protocol.parse(reply)

        "+OK\r\n" =
          Cluster.cli(source, ["MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS" | keys])

        between.()
        migrate_keys(cluster, slot, source, target, between)
    end
  end

  defp assign(cluster, slot, target) do
    target_id = node_id(cluster, target)

    for n <- Cluster.nodes(cluster), n.primary?, not n.failed? do
      Cluster.cli(Cluster.by_port(cluster, n.port), [
        "CLUSTER",
        "SETSLOT",
        slot,
        "NODE",
        target_id
      ])
    end

    Cluster.wait!("every primary sees slot #{slot} on #{target.port}", fn ->
      Enum.all?(Cluster.nodes(cluster), fn n ->
        not n.primary? or n.failed? or
          Cluster.owner(cluster, slot, Cluster.by_port(cluster, n.port)) == target
      end)
    end)
  end

  test "a live slot migration under 20 processes: every call succeeds (ASK, then MOVED)", %{
    cluster: cluster
  } do
    Cluster.attach_events([:redirection])
    slot = Cluster.slot(cluster, "{live}")
    source = Cluster.owner(cluster, slot)
    target = other_primary(cluster, source)

    # Keys in the slot before the migration starts.
    for i <- 1..200,
        do: {:ok, "OK"} = RedixRs.Cluster.command(:moving, ["SET", "{live}pre:#{i}", i])

    parent = self()

    workers =
      for p <- 1..20 do
        spawn_link(fn ->
          results = work(parent, p, 0, [])
          send(parent, {:done, p, results})
        end)
      end

    # Let every worker get going before the slot moves.
    for _ <- 1..20, do: assert_receive({:working, _})

    "+OK\r\n" =
      Cluster.cli(target, ["CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(cluster, source)])

    "+OK\r\n" =
      Cluster.cli(source, ["CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(cluster, target)])

    migrate_keys(cluster, slot, source, target)
    assign(cluster, slot, target)

    # Workers keep going until the client has seen the move (a MOVED followed).
    Cluster.wait!("a MOVED to the target", fn ->
      receive do
        {:event, _, %{type: :moved, slot: ^slot}} -> true
      after
        0 -> false
      end
    end)

    for w <- workers, do: send(w, :stop)

    for _ <- workers do
      assert_receive {:done, p, results}, 30_000
      errors = for {:error, _} = e <- results, do: e
      assert errors == [], "worker #{p} got errors: #{inspect(Enum.take(errors, 3))}"
    end

    # Everything, old and new, is on the target now.
    for i <- 1..200,
        do:
          assert(
            {:ok, to_string(i)} == RedixRs.Cluster.command(:moving, ["GET", "{live}pre:#{i}"])
          )

    assert Cluster.cli(source, ["CLUSTER", "COUNTKEYSINSLOT", slot]) == ":0\r\n"
  end

  defp work(parent, p, i, acc) do
    receive do
      :stop -> Enum.reverse(acc)
    after
      0 ->
        key = "{live}w:#{p}:#{rem(i, 50)}"
        set = RedixRs.Cluster.command(:moving, ["SET", key, i])
        get = RedixRs.Cluster.command(:moving, ["GET", key])

        expected = Integer.to_string(i)

        result =
          case {set, get} do
            {{:ok, "OK"}, {:ok, ^expected}} -> :ok
            other -> {:error, other}
          end

        if i == 0, do: send(parent, {:working, p})
        work(parent, p, i + 1, [result | acc])
    end
  end

  test "ASK for a key already migrated out of a MIGRATING slot", %{cluster: cluster} do
    Cluster.attach_events([:redirection])
    slot = Cluster.slot(cluster, "{asked}")
    source = Cluster.owner(cluster, slot)
    target = other_primary(cluster, source)
    {:ok, "OK"} = RedixRs.Cluster.command(:moving, ["SET", "{asked}k", "here"])
    {:ok, "OK"} = RedixRs.Cluster.command(:moving, ["SET", "{asked}stays", "there"])

    "+OK\r\n" =
      Cluster.cli(target, ["CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(cluster, source)])

    "+OK\r\n" =
      Cluster.cli(source, ["CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(cluster, target)])

    "+OK\r\n" =
      Cluster.cli(source, ["MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", "{asked}k"])

    # The migrated key: ASK, then ASKING + GET on the target.
    assert {:ok, "here"} = RedixRs.Cluster.command(:moving, ["GET", "{asked}k"])
    target_address = "127.0.0.1:#{target.port}"

    assert_receive {:event, _,
                    %{type: :ask, slot: ^slot, target_address: ^target_address, cluster: :moving}}

    # The key not yet migrated is still served by the source, without a redirect.
    assert {:ok, "there"} = RedixRs.Cluster.command(:moving, ["GET", "{asked}stays"])
    refute_received {:event, _, _}
    # A transaction on the migrated key runs again at the target, after ASKING.
    assert {:ok, ["here", "OK"]} =
             RedixRs.Cluster.transaction_pipeline(:moving, [
               ["GET", "{asked}k"],
               ["SET", "{asked}k", "again"]
             ])

    assert {:ok, "again"} = RedixRs.Cluster.command(:moving, ["GET", "{asked}k"])
    # ASK changes no routing: the slot is still the source's until it is assigned.
    assert Cluster.owner(cluster, slot) == source

    # A multi-key command over a migrated and a not-yet-migrated key: TRYAGAIN, sent again until
    # the call's deadline (then the server's error is the reply)...
    mget = ["MGET", "{asked}k", "{asked}stays"]

    assert {:error, %RedixRs.Error{message: "TRYAGAIN" <> _}} =
             RedixRs.Cluster.command(:moving, mget, timeout: 300)

    # ... or until the migration ends, whichever comes first.
    task = Task.async(fn -> RedixRs.Cluster.command(:moving, mget, timeout: 20_000) end)
    refute Task.yield(task, 200)
    migrate_keys(cluster, slot, source, target)
    assign(cluster, slot, target)
    assert {:ok, ["again", "there"]} = Task.await(task, 25_000)
    assert {:ok, "there"} = RedixRs.Cluster.command(:moving, ["GET", "{asked}stays"])
  end

  test "the topology is refreshed periodically, with no redirect to prompt it", %{
    cluster: cluster
  } do
    Cluster.attach_events([:topology_change])

    {:ok, _} =
      RedixRs.Cluster.start_link(
        name: :periodic,
        nodes: Cluster.uris(cluster),
        sync_connect: true,
        topology_refresh_interval: 300
      )

    assert_receive {:event, _, %{cluster: :periodic}}
    # An empty slot changes owner; nobody sends anything to it.
    slot = Cluster.slot(cluster, "{periodic-empty}")
    source = Cluster.owner(cluster, slot)
    assign(cluster, slot, other_primary(cluster, source))
    assert_receive {:event, _, %{cluster: :periodic, nodes: nodes}}, 10_000
    assert length(nodes) == 3
    RedixRs.Cluster.stop(:periodic)
  end

  test "a node that always answers MOVED gives :too_many_redirections after 5 hops" do
    port = ClusterFakeNode.start()

    {:ok, _} =
      RedixRs.Cluster.start_link(
        name: :fake,
        nodes: ["redis://127.0.0.1:#{port}"],
        sync_connect: true
      )

    flush_fake()

    assert {:error, %RedixRs.ConnectionError{reason: :too_many_redirections}} =
             RedixRs.Cluster.command(:fake, ["GET", "k"])

    gets = count_fake(["GET", "k"], 0)
    assert gets == 6, "the first send and 5 redirects, got #{gets}"

    assert {:ok,
            [
              %RedixRs.ConnectionError{reason: :too_many_redirections},
              %RedixRs.ConnectionError{reason: :too_many_redirections}
            ]} = RedixRs.Cluster.pipeline(:fake, [["GET", "a"], ["SET", "b", "1"]])

    RedixRs.Cluster.stop(:fake)
  end

  test "MOVED to an unexpected node refreshes the topology, at most once a second" do
    # Two fakes that send every command to each other; the topology (from the first) says every
    # slot is the first's, so each MOVED to the second one asks for a refresh.
    second = :atomics.new(1, [])
    first = ClusterFakeNode.start(fn -> :atomics.get(second, 1) end)
    :atomics.put(second, 1, ClusterFakeNode.start(fn -> first end))

    {:ok, _} =
      RedixRs.Cluster.start_link(
        name: :bouncing,
        nodes: ["redis://127.0.0.1:#{first}"],
        sync_connect: true,
        topology_refresh_interval: :infinity
      )

    flush_fake()
    started = System.monotonic_time(:millisecond)

    for _ <- 1..40 do
      assert {:error, %RedixRs.ConnectionError{reason: :too_many_redirections}} =
               RedixRs.Cluster.command(:bouncing, ["GET", "k"])
    end

    # At least one refresh happens (the first MOVED), then no more than one a second.
    assert_receive {:fake_node, ^first, ["CLUSTER", "SLOTS"]}
    elapsed = System.monotonic_time(:millisecond) - started
    refreshes = 1 + count_fake(["CLUSTER", "SLOTS"], 0)
    assert refreshes <= div(elapsed, 1_000) + 2, "#{refreshes} refreshes in #{elapsed} ms"
    RedixRs.Cluster.stop(:bouncing)
  end

  defp flush_fake do
    receive do
      {:fake_node, _, _} -> flush_fake()
    after
      0 -> :ok
    end
  end

  defp count_fake(command, n) do
    receive do
      {:fake_node, _, ^command} -> count_fake(command, n + 1)
      {:fake_node, _, _} -> count_fake(command, n)
    after
      500 -> n
    end
  end
end
