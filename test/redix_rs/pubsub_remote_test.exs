defmodule RedixRs.PubSubRemoteTest do
  # Subscribers on another node (a real peer node, started with :peer) of a local RedixRs.PubSub, against a
  # real redis-server: their messages, in order, through the relay that stands in for them; cleanup when
  # they exit; and callers' bad input refused in the caller while the pub/sub process keeps serving
  # everyone else. Not async: it makes this VM a distributed node.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias RedixRs.PubSub
  alias RedixRs.Test.{Helpers, Servers}

  # Runs on the peer node, whose code path lacks this test file: its object code is loaded there.
  {:module, _, beam, _} =
    defmodule Remote do
      @moduledoc false

      # A process on the peer that subscribes itself to `channel` on `pubsub` (a pid of the test
      # node), tells `test` the ref it got, and forwards every message it receives to `test`.
      def subscriber(pubsub, channel, test) do
        spawn(fn ->
          {:ok, ref} = RedixRs.PubSub.subscribe(pubsub, channel, self())
          send(test, {:remote_ref, self(), ref})
          loop(pubsub, channel, test)
        end)
      end

      # A process on the peer that only forwards what it receives.
      def forwarder(test), do: spawn(fn -> loop(nil, nil, test) end)

      defp loop(pubsub, channel, test) do
        receive do
          :unsubscribe ->
            :ok = RedixRs.PubSub.unsubscribe(pubsub, channel, self())
            loop(pubsub, channel, test)

          message ->
            send(test, {:remote, self(), message})
            loop(pubsub, channel, test)
        end
      end
    end

  @remote_beam beam

  # Messages per round of the relay-replacement test.
  @burst 300

  setup do
    {peer, node} = RedixRs.Test.PeerNode.start!()
    {:module, _} = :erpc.call(node, :code, :load_binary, [Remote, ~c"nofile", @remote_beam])
    {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    {:ok, pubsub} = PubSub.start_link(port: Servers.port(), sync_connect: true)
    %{node: node, peer: peer, conn: conn, pubsub: pubsub, channel: unique("remote")}
  end

  test "a subscriber on another node: :subscribed, 1,000 messages in order, :unsubscribed",
       context do
    %{node: node, conn: conn, pubsub: pubsub, channel: channel} = context

    # A local subscriber of the same channel, served alongside.
    {:ok, local_ref} = PubSub.subscribe(pubsub, channel, self())
    assert_receive {:redix_pubsub, ^pubsub, ^local_ref, :subscribed, _}, 5_000

    remote = :erpc.call(node, Remote, :subscriber, [pubsub, channel, self()])
    assert node(remote) == node
    assert_receive {:remote_ref, ^remote, ref}, 5_000
    # The ref is the one subscribe/3 returned: the pub/sub process's monitor of the remote pid.
    assert next_remote(remote) == {:redix_pubsub, pubsub, ref, :subscribed, %{channel: channel}}

    # The relay standing in for it is a local process.
    relay = relay_of(pubsub, remote)
    assert node(relay) == node()

    {:ok, replies} =
      RedixRs.pipeline(conn, for(i <- 1..1_000, do: ["PUBLISH", channel, Integer.to_string(i)]))

    assert replies == List.duplicate(1, 1_000)

    # Each is the next message the remote subscriber got: in publish order, nothing in between.
    for i <- 1..1_000 do
      message = %{channel: channel, payload: Integer.to_string(i)}
      assert next_remote(remote) == {:redix_pubsub, pubsub, ref, :message, message}
      assert_receive {:redix_pubsub, ^pubsub, ^local_ref, :message, ^message}, 5_000
    end

    # Its unsubscription, through the same relay, which then ends.
    relay_ref = Process.monitor(relay)
    send(remote, :unsubscribe)

    assert next_remote(remote) == {:redix_pubsub, pubsub, ref, :unsubscribed, %{channel: channel}}
    assert_receive {:DOWN, ^relay_ref, :process, ^relay, :normal}, 5_000
    refute_received {:remote, ^remote, _}

    # The pub/sub process is alive, and the local subscriber keeps receiving.
    assert Process.alive?(pubsub)
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", channel, "after"])
    assert_receive {:redix_pubsub, ^pubsub, ^local_ref, :message, %{payload: "after"}}, 5_000
    refute_received {:remote, ^remote, _}
    assert %{relays: relays} = :sys.get_state(pubsub)
    assert relays == %{}
  end

  test "subscribing again right after unsubscribing from everything keeps the order", context do
    %{node: node, conn: conn, pubsub: pubsub, channel: channel} = context
    remote = :erpc.call(node, Remote, :forwarder, [self()])

    # A local subscriber keeps the channel confirmed, so each :subscribed below is sent at once,
    # in the subscribe call, while the previous relay may still be forwarding its round's burst.
    {:ok, local_ref} = PubSub.subscribe(pubsub, channel, self())
    assert_receive {:redix_pubsub, ^pubsub, ^local_ref, :subscribed, _}, 5_000

    # Round after round, a new relay replaces one that is still stopping.
    refs =
      for round <- 1..10 do
        {:ok, ref} = PubSub.subscribe(pubsub, channel, remote)
        publish = for i <- 1..@burst, do: ["PUBLISH", channel, "#{round}:#{i}"]
        {:ok, _} = RedixRs.pipeline(conn, publish)
        # Once the local subscriber has the last one, the remote's copies are queued too.
        last = "#{round}:#{@burst}"
        assert_receive {:redix_pubsub, ^pubsub, ^local_ref, :message, %{payload: ^last}}, 5_000
        :ok = PubSub.unsubscribe(pubsub, channel, remote)
        ref
      end

    assert length(Enum.uniq(refs)) == 10

    # Each round's messages, with its ref, strictly after the previous round's.
    for {ref, round} <- Enum.with_index(refs, 1) do
      assert next_remote(remote) == {:redix_pubsub, pubsub, ref, :subscribed, %{channel: channel}}

      for i <- 1..@burst do
        message = %{channel: channel, payload: "#{round}:#{i}"}
        assert next_remote(remote) == {:redix_pubsub, pubsub, ref, :message, message}
      end

      assert next_remote(remote) ==
               {:redix_pubsub, pubsub, ref, :unsubscribed, %{channel: channel}}
    end

    assert Helpers.eventually(fn -> :sys.get_state(pubsub).retiring == %{} end)
  end

  test "a remote subscriber that exits, or whose node goes away, is cleaned up", context do
    %{node: node, peer: peer, conn: conn, pubsub: pubsub, channel: channel} = context
    other = channel <> ":other"

    first = :erpc.call(node, Remote, :subscriber, [pubsub, channel, self()])
    second = :erpc.call(node, Remote, :subscriber, [pubsub, other, self()])
    assert_receive {:remote, ^first, {:redix_pubsub, ^pubsub, _, :subscribed, _}}, 5_000
    assert_receive {:remote, ^second, {:redix_pubsub, ^pubsub, _, :subscribed, _}}, 5_000
    assert numsub(conn, channel) == 1

    # Killed: its subscription goes (Redis is told), and so does its relay.
    relay = relay_of(pubsub, first)
    relay_ref = Process.monitor(relay)
    :erpc.call(node, Process, :exit, [first, :kill])
    assert_receive {:DOWN, ^relay_ref, :process, ^relay, _}, 5_000
    assert Helpers.eventually(fn -> numsub(conn, channel) == 0 end)
    assert Process.alive?(pubsub)

    # The whole node goes away: its subscriber is dropped on the :noconnection DOWN.
    relay = relay_of(pubsub, second)
    relay_ref = Process.monitor(relay)
    :ok = :peer.stop(peer)
    assert_receive {:DOWN, ^relay_ref, :process, ^relay, _}, 5_000
    assert Helpers.eventually(fn -> numsub(conn, other) == 0 end)

    # A pid of that node, now gone, subscribed again: taken, then dropped on its DOWN.
    assert {:ok, _} = PubSub.subscribe(pubsub, other, second)
    assert Helpers.eventually(fn -> :sys.get_state(pubsub).subscribers == %{} end)

    state = :sys.get_state(pubsub)
    assert state.subscribers == %{}
    assert state.relays == %{}
    assert state.refs == %{}
    assert state.subscriptions == %{}

    # And the pub/sub process serves the next subscriber.
    {:ok, ref} = PubSub.subscribe(pubsub, channel)
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, _}, 5_000
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", channel, "still here"])
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :message, %{payload: "still here"}}, 5_000
  end

  test "unsubscribing a remote pid while disconnected, or one that never subscribed", context do
    %{node: node, pubsub: pubsub, channel: channel} = context
    remote = :erpc.call(node, Remote, :forwarder, [self()])

    # Never subscribed: it still gets its :unsubscribed (as a local pid does), through a relay
    # that then stops.
    :ok = PubSub.unsubscribe(pubsub, [channel, "b"], remote)

    assert_receive {:remote, ^remote,
                    {:redix_pubsub, ^pubsub, ref, :unsubscribed, %{channel: ^channel}}},
                   5_000

    assert_receive {:remote, ^remote,
                    {:redix_pubsub, ^pubsub, ^ref, :unsubscribed, %{channel: "b"}}},
                   5_000

    assert Helpers.eventually(fn -> :sys.get_state(pubsub).retiring == %{} end)
    assert :sys.get_state(pubsub).relays == %{}

    # A pub/sub connection that never connects: its own :unsubscribed goes through the relay too.
    {:ok, down} = PubSub.start_link(port: Helpers.closed_port(), backoff_initial: 60_000)
    {:ok, ref} = PubSub.subscribe(down, channel, remote)
    {:ok, ^ref} = PubSub.psubscribe(down, "p:*", remote)
    relay = relay_of(down, remote)
    relay_ref = Process.monitor(relay)
    :ok = PubSub.unsubscribe(down, channel, remote)
    :ok = PubSub.punsubscribe(down, "p:*", remote)

    assert_receive {:remote, ^remote,
                    {:redix_pubsub, ^down, ^ref, :unsubscribed, %{channel: ^channel}}},
                   5_000

    assert_receive {:remote, ^remote,
                    {:redix_pubsub, ^down, ^ref, :punsubscribed, %{pattern: "p:*"}}},
                   5_000

    assert_receive {:DOWN, ^relay_ref, :process, ^relay, :normal}, 5_000
  end

  test "the pub/sub process stopping ends its relays", context do
    %{node: node, pubsub: pubsub, channel: channel} = context
    remote = :erpc.call(node, Remote, :forwarder, [self()])
    {:ok, _ref} = PubSub.subscribe(pubsub, channel, remote)
    relay = relay_of(pubsub, remote)
    relay_ref = Process.monitor(relay)

    # A normal stop (which a link alone would not propagate) ends the relay too.
    :ok = PubSub.stop(pubsub)
    assert_receive {:DOWN, ^relay_ref, :process, ^relay, :normal}, 5_000
  end

  test "what cannot be honoured is refused in the caller; the pub/sub process keeps serving",
       context do
    %{node: node, conn: conn, pubsub: pubsub, channel: channel} = context
    {:ok, ref} = PubSub.subscribe(pubsub, channel)
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, _}, 5_000
    Process.register(self(), :redix_rs_remote_test_subscriber)

    refused = [
      # Names, local or remote, and ports are not pids.
      fn -> PubSub.subscribe(pubsub, "a", :redix_rs_remote_test_subscriber) end,
      fn -> PubSub.subscribe(pubsub, "a", {:redix_rs_remote_test_subscriber, node()}) end,
      fn -> PubSub.subscribe(pubsub, "a", {:some_name, node}) end,
      fn -> PubSub.subscribe(pubsub, "a", {:global, :some_name}) end,
      fn -> PubSub.psubscribe(pubsub, "a", hd(Port.list())) end,
      fn -> PubSub.unsubscribe(pubsub, "a", {:some_name, node}) end,
      fn -> PubSub.sunsubscribe(pubsub, "a", nil) end,
      # The pub/sub process itself would receive its messages.
      fn -> PubSub.subscribe(pubsub, "a", pubsub) end,
      fn -> PubSub.unsubscribe(pubsub, "a", pubsub) end,
      # Names must be names, in a proper list.
      fn -> PubSub.subscribe(pubsub, ["a" | "b"]) end,
      fn -> PubSub.psubscribe(pubsub, [["nested"]]) end,
      fn -> PubSub.ssubscribe(pubsub, self()) end,
      fn -> PubSub.unsubscribe(pubsub, [{:a}]) end,
      # Timeouts.
      fn -> PubSub.ping(pubsub, -1) end,
      fn -> PubSub.ping(pubsub, :never) end,
      fn -> PubSub.stop(pubsub, "soon") end
    ]

    for fun <- refused, do: assert_raise(ArgumentError, fun)

    assert_raise ArgumentError, ~r/pub\/sub connection itself/, fn ->
      PubSub.subscribe(pubsub, "a", pubsub)
    end

    # A remote pid that is already dead, on a connected node: subscribed, then dropped on its DOWN.
    dead = :erpc.call(node, Remote, :forwarder, [self()])
    :erpc.call(node, Process, :exit, [dead, :kill])
    assert {:ok, _} = PubSub.subscribe(pubsub, channel <> ":dead", dead)
    assert Helpers.eventually(fn -> numsub(conn, channel <> ":dead") == 0 end)
    assert Helpers.eventually(fn -> :sys.get_state(pubsub).relays == %{} end)

    assert Process.alive?(pubsub)
    assert :ok = PubSub.ping(pubsub)
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", channel, "still"])
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :message, %{payload: "still"}}, 5_000
  end

  # The next message `remote` forwarded: order among them is checked, not just presence.
  defp next_remote(remote) do
    receive do
      {:remote, ^remote, message} -> message
    after
      5_000 -> flunk("nothing more from #{inspect(remote)}")
    end
  end

  defp relay_of(pubsub, remote) do
    %{relays: %{^remote => relay}} = :sys.get_state(pubsub)
    relay
  end

  defp numsub(conn, channel) do
    {:ok, [^channel, count]} = RedixRs.command(conn, ["PUBSUB", "NUMSUB", channel])
    count
  end

  defp unique(prefix), do: "#{prefix}:#{System.unique_integer([:positive])}"
end
