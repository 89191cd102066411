defmodule RedixRs.PubSubClusterTest do
  # `RedixRs.PubSub` started with `:nodes`, against a real Redis Cluster of 6 redis-server
  # processes (3 primaries, 3 replicas) started for this module.
  use ExUnit.Case, async: false

  alias RedixRs.{ConnectionError, PubSub}
  alias RedixRs.Test.PubSubClusterServers, as: Cluster

  @moduletag :cluster
  @moduletag timeout: 120_000

  setup_all do
    cluster = Cluster.start()
    on_exit(fn -> Cluster.stop(cluster) end)
    %{cluster: cluster}
  end

  defp start_pubsub(cluster, opts \\ []) do
    seeds = cluster |> Cluster.ports() |> Enum.take(1) |> Enum.map(&"redis://127.0.0.1:#{&1}")
    spec = PubSub.child_spec(Keyword.merge([nodes: seeds], opts))
    start_supervised!(%{spec | id: make_ref()})
  end

  # Whether one of the nodes on `ports` has a client subscribed to `channel` (PUBSUB NUMSUB is per
  # node).
  defp subscribed_somewhere?(cluster, ports, channel) do
    Enum.any?(
      ports,
      &(Cluster.command!(cluster, &1, ["PUBSUB", "NUMSUB", channel]) == [channel, 1])
    )
  end

  defp flush do
    receive do
      _ -> flush()
    after
      0 -> :ok
    end
  end

  defp forward_all(parent, tag) do
    receive do
      message -> send(parent, {tag, message})
    end

    forward_all(parent, tag)
  end

  defp spublish(cluster, channel, payload) do
    port = Cluster.owner(cluster, RedixRs.Native.key_slot(channel))
    Cluster.command!(cluster, port, ["SPUBLISH", channel, payload])
  end

  test "ssubscribe routes each shard channel to its slot's node, on every shard", %{cluster: c} do
    pubsub = start_pubsub(c)
    [p1, p2, p3] = Cluster.primaries(c)
    assert length(Enum.uniq([p1, p2, p3])) == 3

    channels =
      for {p, i} <- Enum.with_index([p1, p2, p3]), do: Cluster.name_on(c, p, "shard#{i}:")

    # Two channels of one slot, by their hash tag, in the same call.
    tagged = ["{orders}.created", "{orders}.paid"]

    {:ok, ref} = PubSub.ssubscribe(pubsub, channels ++ tagged, self())

    for channel <- channels ++ tagged do
      assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}
    end

    for channel <- channels ++ tagged do
      assert spublish(c, channel, "hello #{channel}") == 1
      payload = "hello #{channel}"

      assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                      %{channel: ^channel, payload: ^payload}}
    end

    # The connections are the owners' own: each counts its one subscriber.
    for {channel, port} <- Enum.zip(channels, [p1, p2, p3]) do
      assert [^channel, 1] = Cluster.command!(c, port, ["PUBSUB", "SHARDNUMSUB", channel])
    end

    [first | _] = channels
    assert :ok = PubSub.sunsubscribe(pubsub, first, self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :sunsubscribed, %{channel: ^first}}

    Cluster.wait_until("Redis dropped the shard subscription", fn ->
      spublish(c, first, "gone") == 0
    end)

    assert spublish(c, List.last(channels), "still") == 1
    last = List.last(channels)
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage, %{channel: ^last, payload: "still"}}
    refute_received {:redix_pubsub, _, _, :smessage, %{channel: ^first}}
  end

  test "a shard channel follows its slot when it moves to another node", %{cluster: c} do
    pubsub = start_pubsub(c)
    # RESP3 (where Redis ends the subscription with a push frame) follows the slot too.
    resp3 = start_pubsub(c, protocol: :resp3)
    [from, to | _] = Cluster.primaries(c)
    channel = Cluster.name_on(c, from, "moving:")
    other = Cluster.name_on(c, from, "staying:")
    slot = RedixRs.Native.key_slot(channel)
    assert RedixRs.Native.key_slot(other) != slot

    {:ok, ref} = PubSub.ssubscribe(pubsub, [channel, other], self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^other}}
    {:ok, ref3} = PubSub.ssubscribe(resp3, channel, self())
    assert_receive {:redix_pubsub, ^resp3, ^ref3, :ssubscribed, %{channel: ^channel}}
    # A second subscriber of the channel on the same pub/sub moves with it.
    parent = self()

    spawn_link(fn ->
      {:ok, _} = PubSub.ssubscribe(pubsub, channel, self())
      forward_all(parent, :second)
    end)

    assert_receive {:second, {:redix_pubsub, ^pubsub, _, :ssubscribed, %{channel: ^channel}}}
    assert spublish(c, channel, "before") == 2

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^channel, payload: "before"}}

    assert_receive {:redix_pubsub, ^resp3, ^ref3, :smessage,
                    %{channel: ^channel, payload: "before"}}

    ^from = Cluster.move_slot!(c, slot, to)
    moved = System.monotonic_time(:millisecond)

    # Redis ended the subscriptions at the old owner; they are made again at the new one.
    for {ps, r} <- [{pubsub, ref}, {resp3, ref3}] do
      assert_receive {:redix_pubsub, ^ps, ^r, :disconnected,
                      %{error: %ConnectionError{reason: :slot_moved}}}

      assert_receive {:redix_pubsub, ^ps, ^r, :ssubscribed, %{channel: ^channel}}
    end

    resubscribed_ms = System.monotonic_time(:millisecond) - moved

    IO.puts(
      "\n[cluster pubsub] every node agreed on the move → :ssubscribed at the new owner in #{resubscribed_ms} ms"
    )

    assert Cluster.owner(c, slot) == to
    assert spublish(c, channel, "after") == 2

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^channel, payload: "after"}}

    assert_receive {:second, {:redix_pubsub, ^pubsub, _, :disconnected, _}}
    assert_receive {:second, {:redix_pubsub, ^pubsub, _, :ssubscribed, %{channel: ^channel}}}
    assert_receive {:second, {:redix_pubsub, ^pubsub, _, :smessage, %{payload: "after"}}}

    assert_receive {:redix_pubsub, ^resp3, ^ref3, :smessage,
                    %{channel: ^channel, payload: "after"}}

    # The channel of the slot that stayed was not touched.
    assert spublish(c, other, "untouched") == 1

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^other, payload: "untouched"}}

    refute_received {:redix_pubsub, _, _, :ssubscribed, %{channel: ^other}}

    # Back to where it was (a refresh within a second of the last one waits for the rest of that
    # second): followed again.
    Cluster.move_slot!(c, slot, from)
    moved = System.monotonic_time(:millisecond)

    for {ps, r} <- [{pubsub, ref}, {resp3, ref3}] do
      assert_receive {:redix_pubsub, ^ps, ^r, :disconnected, %{error: %ConnectionError{}}}
      assert_receive {:redix_pubsub, ^ps, ^r, :ssubscribed, %{channel: ^channel}}
    end

    resubscribed_ms = System.monotonic_time(:millisecond) - moved

    IO.puts(
      "[cluster pubsub] second move → :ssubscribed at the new owner in #{resubscribed_ms} ms"
    )

    assert spublish(c, channel, "back") == 2

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^channel, payload: "back"}}

    assert_receive {:redix_pubsub, ^resp3, ^ref3, :smessage,
                    %{channel: ^channel, payload: "back"}}
  end

  test "a channel routed by an out-of-date slot map is subscribed at the slot's owner after MOVED",
       %{cluster: c} do
    pubsub = start_pubsub(c)
    # The pub/sub learns the slot map; then a slot it has no subscription in moves.
    {:ok, ref} = PubSub.subscribe(pubsub, "warm", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "warm"}}
    [from, _, to] = Cluster.primaries(c)
    channel = Cluster.name_on(c, from, "stale:")
    slot = RedixRs.Native.key_slot(channel)
    Cluster.move_slot!(c, slot, to)

    {:ok, ^ref} = PubSub.ssubscribe(pubsub, channel, self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}
    assert spublish(c, channel, "routed") == 1

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^channel, payload: "routed"}}

    # It was never subscribed anywhere else: nothing was missed, so no :disconnected.
    refute_received {:redix_pubsub, _, _, :disconnected, _}
    Cluster.move_slot!(c, slot, from)
  end

  # A node whose view of the cluster lacks a slot (here: CLUSTER DELSLOTS of another of its slots,
  # seen by that node only) answers SSUBSCRIBE with CLUSTERDOWN when it is configured so.
  @tag :capture_log
  test "a shard channel refused with CLUSTERDOWN is subscribed once the node serves it again",
       %{cluster: c} do
    [_, port | _] = Cluster.primaries(c)
    # The node is the seed, so classic subscriptions and pings go through its connection too.
    pubsub = start_supervised!({PubSub, nodes: [[host: "127.0.0.1", port: port]]})
    {:ok, ref} = PubSub.subscribe(pubsub, "down", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "down"}}

    channel = Cluster.name_on(c, port, "down:")
    other = Cluster.name_on(c, port, "deleted:")
    deleted = RedixRs.Native.key_slot(other)
    assert deleted != RedixRs.Native.key_slot(channel)
    config = ["CONFIG", "SET", "cluster-allow-pubsubshard-when-down"]
    "OK" = Cluster.command!(c, port, config ++ ["no"])
    "OK" = Cluster.command!(c, port, ["CLUSTER", "DELSLOTS", deleted])

    on_exit(fn ->
      restore_slot(c, port, deleted)
      Cluster.command!(c, port, config ++ ["yes"])
    end)

    Cluster.wait_until("the node says the cluster is down", fn ->
      Cluster.info(c, port) =~ "cluster_state:fail"
    end)

    {:ok, ^ref} = PubSub.ssubscribe(pubsub, channel, self())
    # The ping's reply follows the SSUBSCRIBE's refusal on the same connection.
    assert PubSub.ping(pubsub) == :ok
    refute_received {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, _}

    restore_slot(c, port, deleted)
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}, 10_000
    assert spublish(c, channel, "served") == 1

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^channel, payload: "served"}}

    refute_received {:redix_pubsub, _, _, :disconnected, _}
  end

  test "a shard channel whose slot no node owns is subscribed once a node takes the slot",
       %{cluster: c} do
    [owner | _] = Cluster.primaries(c)
    channel = Cluster.name_on(c, owner, "orphan:")
    slot = RedixRs.Native.key_slot(channel)
    for port <- Cluster.ports(c), do: Cluster.command!(c, port, ["CLUSTER", "DELSLOTS", slot])

    on_exit(fn ->
      if Cluster.owner(c, slot, owner) == nil,
        do: Cluster.command!(c, owner, ["CLUSTER", "ADDSLOTS", slot])

      Cluster.wait_until("every node sees the slot owned again", fn ->
        Enum.all?(Cluster.ports(c), &(Cluster.info(c, &1) =~ "cluster_state:ok"))
      end)
    end)

    pubsub = start_pubsub(c)
    {:ok, ref} = PubSub.ssubscribe(pubsub, channel, self())
    # The slot map (read before the ping's node was connected to) has the slot unowned.
    assert PubSub.ping(pubsub) == :ok
    refute_received {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, _}

    "OK" = Cluster.command!(c, owner, ["CLUSTER", "ADDSLOTS", slot])
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}, 10_000
    assert Cluster.command!(c, owner, ["SPUBLISH", channel, "adopted"]) == 1

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^channel, payload: "adopted"}}
  end

  defp restore_slot(c, port, slot) do
    if Cluster.owner(c, slot, port) == nil do
      "OK" = Cluster.command!(c, port, ["CLUSTER", "ADDSLOTS", slot])
    end

    Cluster.wait_until("the node serves every slot again", fn ->
      Cluster.info(c, port) =~ "cluster_state:ok"
    end)
  end

  test "a single-server PubSub still ssubscribes at one node, and outlives the end of a moved slot",
       %{cluster: c} do
    [from, to | _] = Cluster.primaries(c)
    single = start_supervised!({PubSub, port: from})
    channel = Cluster.name_on(c, from, "single:")
    slot = RedixRs.Native.key_slot(channel)
    {:ok, ref} = PubSub.ssubscribe(single, channel, self())
    assert_receive {:redix_pubsub, ^single, ^ref, :ssubscribed, %{channel: ^channel}}
    assert spublish(c, channel, "one node") == 1

    assert_receive {:redix_pubsub, ^single, ^ref, :smessage,
                    %{channel: ^channel, payload: "one node"}}

    # Redis ends the subscription; a single-server connection has nowhere to follow it.
    Cluster.move_slot!(c, slot, to)

    Cluster.wait_until("the old owner dropped the subscription", fn ->
      Cluster.command!(c, from, ["PUBSUB", "SHARDNUMSUB", channel]) == [channel, 0]
    end)

    assert PubSub.ping(single) == :ok
    refute_received {:redix_pubsub, ^single, _, _, _}
    Cluster.move_slot!(c, slot, from)
  end

  test "subscribe and psubscribe receive what is published on any node", %{cluster: c} do
    pubsub = start_pubsub(c, name: :cluster_pubsub_test)
    {:ok, ref} = PubSub.subscribe(:cluster_pubsub_test, "news", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "news"}}
    {:ok, ^ref} = PubSub.psubscribe(pubsub, "events:*", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :psubscribed, %{pattern: "events:*"}}

    # Every node, replicas included: a cluster broadcasts PUBLISH.
    for port <- Cluster.ports(c) do
      Cluster.command!(c, port, ["PUBLISH", "news", "from #{port}"])
      payload = "from #{port}"

      assert_receive {:redix_pubsub, ^pubsub, ^ref, :message,
                      %{channel: "news", payload: ^payload}}

      Cluster.command!(c, port, ["PUBLISH", "events:#{port}", "e"])
      channel = "events:#{port}"

      assert_receive {:redix_pubsub, ^pubsub, ^ref, :pmessage,
                      %{channel: ^channel, pattern: "events:*", payload: "e"}}
    end

    assert :ok = PubSub.unsubscribe(pubsub, "news", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :unsubscribed, %{channel: "news"}}
    assert :ok = PubSub.punsubscribe(pubsub, "events:*", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :punsubscribed, %{pattern: "events:*"}}
    assert PubSub.ping(pubsub) == :ok
  end

  test "a killed node connection reconnects and subscribes again", %{cluster: c} do
    pubsub = start_pubsub(c, backoff_initial: 50)
    [port | _] = Cluster.primaries(c)
    channel = Cluster.name_on(c, port, "killed:")
    {:ok, ref} = PubSub.ssubscribe(pubsub, channel, self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}
    {:ok, ^ref} = PubSub.subscribe(pubsub, "broadcast", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "broadcast"}}

    killed = Cluster.command!(c, port, ["CLIENT", "KILL", "TYPE", "pubsub"])
    assert killed >= 1

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :disconnected, %{error: %ConnectionError{}}}
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}
    assert spublish(c, channel, "again") == 1

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^channel, payload: "again"}}

    # Every node's pub/sub clients killed: the classic subscription comes back too. (When it was on
    # the node killed above, it came back then: those messages go first.)
    Cluster.wait_until("the classic subscription is made", fn ->
      subscribed_somewhere?(c, Cluster.ports(c), "broadcast")
    end)

    flush()
    for p <- Cluster.ports(c), do: Cluster.command!(c, p, ["CLIENT", "KILL", "TYPE", "pubsub"])
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :disconnected, %{error: %ConnectionError{}}}
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "broadcast"}}, 5_000

    assert subscribed_somewhere?(c, Cluster.ports(c), "broadcast")

    Cluster.command!(c, port, ["PUBLISH", "broadcast", "hi"])

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :message,
                    %{channel: "broadcast", payload: "hi"}}
  end

  # A cluster of its own: its primary is killed.
  test "after a failover (CLUSTER FAILOVER, then a primary killed), shard channels follow their slots to the promoted replica" do
    c = Cluster.start()
    on_exit(fn -> Cluster.stop(c) end)
    pubsub = start_pubsub(c, backoff_initial: 100, backoff_max: 1_000)

    # A manual failover: the old primary, now a replica, ends the subscription (its connection stays).
    [_, old_primary | _] = Cluster.ports(c)
    assert old_primary in Cluster.primaries(c)
    replica = Cluster.replica_of(c, old_primary)
    switched = Cluster.name_on(c, old_primary, "switched:")
    {:ok, ref} = PubSub.ssubscribe(pubsub, switched, self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^switched}}
    "OK" = Cluster.command!(c, replica, ["CLUSTER", "FAILOVER"])

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :disconnected,
                    %{error: %ConnectionError{reason: :slot_moved}}}

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^switched}}
    assert Cluster.owner(c, RedixRs.Native.key_slot(switched), replica) == replica
    assert Cluster.command!(c, replica, ["SPUBLISH", switched, "promoted"]) == 1

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^switched, payload: "promoted"}}

    # The seed: the node of classic subscriptions too.
    [victim | _] = Cluster.ports(c)
    assert victim in Cluster.primaries(c)
    channel = Cluster.name_on(c, victim, "failover:")
    slot = RedixRs.Native.key_slot(channel)
    {:ok, ^ref} = PubSub.ssubscribe(pubsub, channel, self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}
    {:ok, ^ref} = PubSub.subscribe(pubsub, "everyone", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "everyone"}}

    server = RedixRs.Test.Cluster.by_port(c, victim)
    killed = System.monotonic_time(:millisecond)
    RedixRs.Test.RedisServer.os_kill(server, "KILL")
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :disconnected, %{error: %ConnectionError{}}}

    survivor = Enum.find(Cluster.ports(c), &(&1 != victim))

    Cluster.wait_until("a replica took over the victim's slots", fn ->
      owner = Cluster.owner(c, slot, survivor)
      owner != nil and owner != victim
    end)

    promoted = System.monotonic_time(:millisecond)
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}, 10_000
    back = System.monotonic_time(:millisecond)

    IO.puts(
      "\n[cluster pubsub] primary killed → replica owns its slots after #{promoted - killed} ms " <>
        "→ :ssubscribed there #{back - promoted} ms later"
    )

    new_owner = Cluster.owner(c, slot, survivor)
    assert Cluster.command!(c, new_owner, ["SPUBLISH", channel, "on the new primary"]) == 1

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage,
                    %{channel: ^channel, payload: "on the new primary"}}

    # The classic subscription (it was on the seed, which the victim is) is on a live node again.
    live = Cluster.ports(c) -- [victim]
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "everyone"}}
    assert subscribed_somewhere?(c, live, "everyone")
    Cluster.command!(c, survivor, ["PUBLISH", "everyone", "ping"])

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :message,
                    %{channel: "everyone", payload: "ping"}}
  end

  test "a subscriber on another node gets its shard messages through its relay, across a slot move",
       %{cluster: c} do
    {_peer, node} = RedixRs.Test.PeerNode.start!()
    pubsub = start_pubsub(c)
    remote = :erpc.call(node, Cluster, :forwarder, [self()])
    assert node(remote) == node
    [from, to | _] = Cluster.primaries(c)
    channel = Cluster.name_on(c, from, "remote:")
    slot = RedixRs.Native.key_slot(channel)

    {:ok, ref} = PubSub.ssubscribe(pubsub, channel, remote)

    assert_receive {:forwarded, ^remote,
                    {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}}

    assert spublish(c, channel, "far") == 1

    assert_receive {:forwarded, ^remote,
                    {:redix_pubsub, ^pubsub, ^ref, :smessage,
                     %{channel: ^channel, payload: "far"}}}

    Cluster.move_slot!(c, slot, to)

    assert_receive {:forwarded, ^remote,
                    {:redix_pubsub, ^pubsub, ^ref, :disconnected,
                     %{error: %ConnectionError{reason: :slot_moved}}}}

    assert_receive {:forwarded, ^remote,
                    {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}}

    assert spublish(c, channel, "farther") == 1

    assert_receive {:forwarded, ^remote,
                    {:redix_pubsub, ^pubsub, ^ref, :smessage, %{payload: "farther"}}}

    :ok = PubSub.sunsubscribe(pubsub, channel, remote)

    assert_receive {:forwarded, ^remote,
                    {:redix_pubsub, ^pubsub, ^ref, :sunsubscribed, %{channel: ^channel}}}

    Cluster.wait_until("the relay ended", fn -> :sys.get_state(pubsub).relays == %{} end)
    Cluster.move_slot!(c, slot, from)
  end

  test "a replica as the only seed is enough", %{cluster: c} do
    [primary | _] = Cluster.primaries(c)
    replica = Cluster.replica_of(c, primary)
    pubsub = start_supervised!({PubSub, nodes: [[host: "127.0.0.1", port: replica]]})
    channel = Cluster.name_on(c, primary, "via-replica:")
    {:ok, ref} = PubSub.ssubscribe(pubsub, channel, self())
    {:ok, ^ref} = PubSub.subscribe(pubsub, "via-replica", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}}
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "via-replica"}}
    assert spublish(c, channel, "s") == 1
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :smessage, %{channel: ^channel, payload: "s"}}
    Cluster.command!(c, primary, ["PUBLISH", "via-replica", "p"])

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :message,
                    %{channel: "via-replica", payload: "p"}}
  end

  test "stopping the pub/sub closes its connection to every node", %{cluster: c} do
    {:ok, pubsub} = PubSub.start_link(nodes: ["redis://127.0.0.1:#{hd(Cluster.ports(c))}"])
    primaries = Cluster.primaries(c)
    channels = for p <- primaries, do: Cluster.name_on(c, p, "stopping:")
    {:ok, ref} = PubSub.ssubscribe(pubsub, channels, self())
    {:ok, ^ref} = PubSub.subscribe(pubsub, "stopping", self())

    for channel <- channels,
        do: assert_receive({:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: ^channel}})

    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "stopping"}}
    assert :ok = PubSub.stop(pubsub)

    Cluster.wait_until("no node has the pub/sub's subscriptions", fn ->
      Enum.all?(Enum.zip(primaries, channels), fn {p, channel} ->
        Cluster.command!(c, p, ["PUBSUB", "SHARDNUMSUB", channel]) == [channel, 0]
      end) and not subscribed_somewhere?(c, Cluster.ports(c), "stopping")
    end)
  end

  test "a subscriber that exits is unsubscribed at its channel's node", %{cluster: c} do
    pubsub = start_pubsub(c)
    [_, port | _] = Cluster.primaries(c)
    channel = Cluster.name_on(c, port, "exiting:")
    parent = self()

    subscriber =
      spawn(fn ->
        {:ok, _ref} = PubSub.ssubscribe(pubsub, channel, self())
        receive do: ({:redix_pubsub, _, _, :ssubscribed, _} -> send(parent, :subscribed))
        receive do: (:stop -> :ok)
      end)

    assert_receive :subscribed
    assert [^channel, 1] = Cluster.command!(c, port, ["PUBSUB", "SHARDNUMSUB", channel])
    send(subscriber, :stop)

    Cluster.wait_until("the node dropped the subscription", fn ->
      Cluster.command!(c, port, ["PUBSUB", "SHARDNUMSUB", channel]) == [channel, 0]
    end)
  end

  test "sync_connect: one reachable seed is enough; none gives a ConnectionError", %{cluster: c} do
    closed = RedixRs.Test.Helpers.closed_port()
    [port | _] = Cluster.ports(c)

    {:ok, pubsub} =
      PubSub.start_link(
        nodes: ["redis://127.0.0.1:#{closed}", [host: "127.0.0.1", port: port]],
        sync_connect: true
      )

    {:ok, ref} = PubSub.ssubscribe(pubsub, "sync:1", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :ssubscribed, %{channel: "sync:1"}}
    PubSub.stop(pubsub)

    Process.flag(:trap_exit, true)

    assert {:error, %ConnectionError{reason: :econnrefused}} =
             PubSub.start_link(nodes: ["redis://127.0.0.1:#{closed}"], sync_connect: true)

    # A server that is not a cluster node says so.
    plain = RedixRs.Test.Servers.port(:plain)

    assert {:error, %ConnectionError{reason: %RedixRs.Error{message: message}}} =
             PubSub.start_link(nodes: [[host: "127.0.0.1", port: plain]], sync_connect: true)

    assert message =~ "cluster support disabled"
  end

  test "bad options raise ArgumentError" do
    # The checks and messages of RedixRs.Cluster's options (RedixRs.Options.Cluster), plus
    # :fetch_client_id_on_connect, which a pub/sub has.
    node = ["redis://localhost:7000"]

    bad = [
      {[nodes: []], ~r/:nodes/},
      {[nodes: "redis://localhost:7000"], ~r/:nodes/},
      {[nodes: [:nope]], ~r/seed node/},
      {[nodes: [[host: "localhost", port: 0]]], ~r/seed node/},
      {[nodes: ["redis://localhost:0"]], ~r/seed node/},
      {[nodes: ["unix:///tmp/redis.sock"]], ~r/TCP address/},
      {[nodes: [[host: "localhost", port: 7000, password: "s3cret"]]], ~r/seed node/},
      {[nodes: ["redis://:s3cret@localhost:7000"]], ~r/credentials/},
      {[nodes: ["redis://localhost:7000/2"]], ~r/database 0/},
      {[nodes: ["http://localhost:7000"]], ~r/scheme/},
      {[nodes: ["rediss://localhost:7000"], ssl: false], ~r/rediss/},
      {[nodes: node, host: "localhost"], ~r/:nodes/},
      {[nodes: node, port: 7001], ~r/:nodes/},
      {[nodes: node, database: 1], ~r/database 0/},
      {[nodes: node, exit_on_disconnection: true], ~r/exit_on_disconnection/},
      # Refused when given at all, as :host and :port are.
      {[nodes: node, exit_on_disconnection: false], ~r/exit_on_disconnection/},
      {[nodes: node, fetch_client_id_on_connect: true], ~r/fetch_client_id_on_connect/},
      {[nodes: node, fetch_client_id_on_connect: false], ~r/fetch_client_id_on_connect/},
      {[nodes: node, sentinel: [sentinels: ["redis://localhost:26379"], group: "g"]],
       ~r/Sentinel/},
      {[nodes: node, backoff_initial: -1], ~r/backoff_initial/},
      {[nodes: node, topology_refresh_interval: 1_000], ~r/unknown options/},
      {[nodes: node, unknown: 1], ~r/unknown options/}
    ]

    for {opts, message} <- bad do
      error = assert_raise ArgumentError, message, fn -> PubSub.start_link(opts) end
      refute error.message =~ "s3cret"
    end

    # database 0 is fine; a rediss:// seed turns TLS on for every node connection.
    opts =
      RedixRs.Options.validate_cluster!(
        [
          nodes: ["rediss://a.example:7000", [host: "b.example", port: 7001]],
          database: "0",
          socket_opts: [verify: :verify_none],
          name: :cluster_pubsub_opts
        ],
        :pubsub
      )

    assert opts[:nodes] == [{"a.example", 7000}, {"b.example", 7001}]
    assert opts[:ssl] == true and opts[:name] == :cluster_pubsub_opts
    assert opts[:database] == nil
    assert opts[:backlog_limit] == 256 * 1024 * 1024
  end

  test "key_slot is Redis's CLUSTER KEYSLOT", %{cluster: c} do
    [port | _] = Cluster.ports(c)

    for key <- [
          "",
          "a",
          "user:1000",
          "{user1000}.following",
          "foo{}{bar}",
          "foo{{bar}}",
          "{a}{b}",
          <<0, 255, 10>>
        ] do
      assert RedixRs.Native.key_slot(key) ==
               Cluster.command!(c, port, ["CLUSTER", "KEYSLOT", key])
    end
  end

  # CRC16 costs about 3 ns a byte: the NIF on a normal scheduler hashes at most 16 KiB, and
  # answers `:dirty` for more (hashed on a dirty scheduler).
  test "a long shard channel name is hashed off the normal schedulers", %{cluster: c} do
    [port | _] = Cluster.ports(c)
    inline = :binary.copy("x", 16 * 1024)
    long = :binary.copy("long channel name ", 1_000_000)
    tagged = "{" <> binary_part(long, 0, 20_000) <> "}" <> long

    assert is_integer(RedixRs.Native.key_slot(inline))
    assert RedixRs.Native.key_slot(inline <> "x") == :dirty
    assert RedixRs.Native.key_slot(long) == :dirty

    for key <- [inline, inline <> "x", long, tagged] do
      assert RedixRs.PubSub.Cluster.slot(key) ==
               Cluster.command!(c, port, ["CLUSTER", "KEYSLOT", key])
    end
  end
end
