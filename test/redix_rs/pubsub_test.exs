defmodule RedixRs.PubSubTest do
  # RedixRs.PubSub against real redis-server processes: the exact messages subscribers receive, their
  # order, fan-out at scale, subscriber exits, reconnection, and the rest of the public API.
  use ExUnit.Case, async: true

  import RedixRs.Test.Helpers, only: [closed_port: 0]

  # Connections that stop or lose their server on purpose log it, as Redix's do.
  @moduletag :capture_log

  alias RedixRs.{ConnectionError, PubSub}
  alias RedixRs.Test.{Helpers, RedisServer, Servers}

  doctest RedixRs.PubSub

  setup do
    {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    %{conn: conn}
  end

  describe "message shapes" do
    test "every message type, with exactly these properties", %{conn: conn} do
      ps = pubsub!()
      base = unique("shape")
      ch = base <> ":chan"
      pattern = base <> ":p*"
      pch = base <> ":pone"
      sch = base <> ":shard"

      {:ok, ref} = PubSub.subscribe(ps, ch)
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, props}, 5_000
      assert props == %{channel: ch}

      assert {:ok, ^ref} = PubSub.psubscribe(ps, pattern)
      assert_receive {:redix_pubsub, ^ps, ^ref, :psubscribed, props}, 5_000
      assert props == %{pattern: pattern}

      assert {:ok, ^ref} = PubSub.ssubscribe(ps, sch)
      assert_receive {:redix_pubsub, ^ps, ^ref, :ssubscribed, props}, 5_000
      assert props == %{channel: sch}

      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, "hello"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, props}, 5_000
      assert props == %{channel: ch, payload: "hello"}

      # Any bytes, as a binary.
      binary = <<0, 255, 1, "\r\n", 200>>
      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, binary])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, props}, 5_000
      assert props == %{channel: ch, payload: binary}

      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", pch, "p-hello"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :pmessage, props}, 5_000
      assert props == %{channel: pch, pattern: pattern, payload: "p-hello"}

      assert {:ok, 1} = RedixRs.command(conn, ["SPUBLISH", sch, "s-hello"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :smessage, props}, 5_000
      assert props == %{channel: sch, payload: "s-hello"}

      assert :ok = PubSub.unsubscribe(ps, ch)
      assert_receive {:redix_pubsub, ^ps, ^ref, :unsubscribed, props}, 5_000
      assert props == %{channel: ch}

      assert :ok = PubSub.punsubscribe(ps, pattern)
      assert_receive {:redix_pubsub, ^ps, ^ref, :punsubscribed, props}, 5_000
      assert props == %{pattern: pattern}

      assert :ok = PubSub.sunsubscribe(ps, sch)
      assert_receive {:redix_pubsub, ^ps, ^ref, :sunsubscribed, props}, 5_000
      assert props == %{channel: sch}

      # Redis was told: nobody receives these any more.
      assert Helpers.eventually(fn ->
               RedixRs.command!(conn, ["PUBLISH", ch, "x"]) == 0 and
                 RedixRs.command!(conn, ["PUBLISH", pch, "x"]) == 0 and
                 RedixRs.command!(conn, ["SPUBLISH", sch, "x"]) == 0
             end)

      refute_receive {:redix_pubsub, ^ps, _, _, _}, 100
    end

    test "a message on a channel and a matching pattern comes twice, once of each type",
         %{conn: conn} do
      ps = pubsub!()
      base = unique("both")
      ch = base <> ":x"
      pattern = base <> ":*"

      {:ok, ref} = PubSub.subscribe(ps, ch)
      {:ok, ^ref} = PubSub.psubscribe(ps, pattern)
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}}, 5_000
      assert_receive {:redix_pubsub, ^ps, ^ref, :psubscribed, %{pattern: ^pattern}}, 5_000

      # One pub/sub connection: Redis counts it once per subscription kind.
      assert {:ok, 2} = RedixRs.command(conn, ["PUBLISH", ch, "both"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, props}, 5_000
      assert props == %{channel: ch, payload: "both"}
      assert_receive {:redix_pubsub, ^ps, ^ref, :pmessage, props}, 5_000
      assert props == %{channel: ch, pattern: pattern, payload: "both"}
      refute_receive {:redix_pubsub, ^ps, ^ref, _, _}, 100
    end

    test "lists of channels and patterns; non-binary names go through to_string/1",
         %{conn: conn} do
      ps = pubsub!()
      base = unique("list")
      [a, b] = [base <> ":a", base <> ":b"]

      {:ok, ref} = PubSub.subscribe(ps, [a, b])
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^a}}, 5_000
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^b}}, 5_000

      {:ok, ^ref} = PubSub.subscribe(ps, [:atom_channel, 42])
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: "atom_channel"}}, 5_000
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: "42"}}, 5_000

      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", b, "to b"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{channel: ^b, payload: "to b"}}, 5_000

      :ok = PubSub.unsubscribe(ps, [a, b])
      assert_receive {:redix_pubsub, ^ps, ^ref, :unsubscribed, %{channel: ^a}}, 5_000
      assert_receive {:redix_pubsub, ^ps, ^ref, :unsubscribed, %{channel: ^b}}, 5_000
    end

    test "the ref is per subscriber pid: the same for all its subscriptions, another for others",
         %{conn: conn} do
      ps = pubsub!()
      base = unique("ref")
      ch = base <> ":c"
      other_ch = base <> ":other"

      {:ok, ref} = PubSub.subscribe(ps, ch)
      assert {:ok, ^ref} = PubSub.psubscribe(ps, base <> ":p*")
      assert {:ok, ^ref} = PubSub.ssubscribe(ps, base <> ":s")
      assert {:ok, ^ref} = PubSub.subscribe(ps, other_ch)

      other = forwarder()
      {:ok, other_ref} = PubSub.subscribe(ps, ch, other)
      assert is_reference(ref) and is_reference(other_ref)
      assert other_ref != ref
      assert {:ok, ^other_ref} = PubSub.psubscribe(ps, base <> ":q*", other)

      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}}, 5_000
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^other_ch}}, 5_000
      assert_receive {:redix_pubsub, ^ps, ^ref, :psubscribed, _}, 5_000
      assert_receive {:redix_pubsub, ^ps, ^ref, :ssubscribed, _}, 5_000
      assert_receive {:forwarded, ^other, {:redix_pubsub, ^ps, ^other_ref, :subscribed, _}}, 5_000

      assert_receive {:forwarded, ^other, {:redix_pubsub, ^ps, ^other_ref, :psubscribed, _}},
                     5_000

      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, "to both"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{payload: "to both"}}, 5_000

      assert_receive {:forwarded, ^other,
                      {:redix_pubsub, ^ps, ^other_ref, :message, %{payload: "to both"}}},
                     5_000

      # Another pub/sub connection gives the same pid another ref.
      ps2 = pubsub!()
      assert {:ok, ref2} = PubSub.subscribe(ps2, ch)
      assert ref2 != ref
      assert_receive {:redix_pubsub, ^ps2, ^ref2, :subscribed, %{channel: ^ch}}, 5_000
    end

    test "a second subscriber waits for Redis's confirmation too, and unsubscribe's message is there on return" do
      server = RedisServer.start()
      ps = pubsub!(port: server.port)
      ch = unique("pending")
      other = forwarder()

      # Frozen: the first SUBSCRIBE cannot be confirmed yet.
      :ok = RedisServer.os_kill(server, "STOP")

      try do
        {:ok, ref} = PubSub.subscribe(ps, ch)
        {:ok, other_ref} = PubSub.subscribe(ps, ch, other)
        refute_receive {:forwarded, ^other, {:redix_pubsub, _, _, :subscribed, _}}, 300
        refute_received {:redix_pubsub, _, _, :subscribed, _}
        :ok = RedisServer.os_kill(server, "CONT")
        assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}}, 5_000

        assert_receive {:forwarded, ^other,
                        {:redix_pubsub, ^ps, ^other_ref, :subscribed, %{channel: ^ch}}},
                       5_000

        # As in Redix, the :unsubscribed message is in the mailbox when unsubscribe/3 returns.
        :ok = PubSub.unsubscribe(ps, ch)
        assert_received {:redix_pubsub, ^ps, ^ref, :unsubscribed, %{channel: ^ch}}
      after
        RedisServer.os_kill(server, "CONT")
      end
    end

    test "an already subscribed channel is confirmed at once; unsubscribing too (even never-subscribed)" do
      server = RedisServer.start()
      {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)
      ps = pubsub!(port: server.port)
      ch = unique("again")
      pattern = unique("again") <> ":*"

      {:ok, ref} = PubSub.subscribe(ps, ch)
      {:ok, ^ref} = PubSub.psubscribe(ps, pattern)
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}}, 5_000
      assert_receive {:redix_pubsub, ^ps, ^ref, :psubscribed, %{pattern: ^pattern}}, 5_000

      other = forwarder()
      never = forwarder()

      # With Redis frozen, whatever arrives did not wait for a reply from it.
      :ok = RedisServer.os_kill(server, "STOP")

      try do
        {:ok, other_ref} = PubSub.subscribe(ps, ch, other)

        assert_receive {:forwarded, ^other, {:redix_pubsub, ^ps, ^other_ref, :subscribed, props}},
                       2_000

        assert props == %{channel: ch}

        {:ok, ^other_ref} = PubSub.psubscribe(ps, pattern, other)

        assert_receive {:forwarded, ^other,
                        {:redix_pubsub, ^ps, ^other_ref, :psubscribed, props}},
                       2_000

        assert props == %{pattern: pattern}

        # The same pid again.
        assert {:ok, ^ref} = PubSub.subscribe(ps, ch)
        assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, props}, 2_000
        assert props == %{channel: ch}

        assert :ok = PubSub.unsubscribe(ps, ch, other)

        assert_receive {:forwarded, ^other,
                        {:redix_pubsub, ^ps, ^other_ref, :unsubscribed, props}},
                       2_000

        assert props == %{channel: ch}

        # Never subscribed to these, by a subscriber and by a pid that never subscribed at all.
        assert :ok = PubSub.unsubscribe(ps, "never-subscribed")
        assert_receive {:redix_pubsub, ^ps, ^ref, :unsubscribed, props}, 2_000
        assert props == %{channel: "never-subscribed"}

        assert :ok = PubSub.punsubscribe(ps, "never:*")
        assert_receive {:redix_pubsub, ^ps, ^ref, :punsubscribed, props}, 2_000
        assert props == %{pattern: "never:*"}

        assert :ok = PubSub.sunsubscribe(ps, "never-shard")
        assert_receive {:redix_pubsub, ^ps, ^ref, :sunsubscribed, props}, 2_000
        assert props == %{channel: "never-shard"}

        assert :ok = PubSub.unsubscribe(ps, "nope", never)

        assert_receive {:forwarded, ^never,
                        {:redix_pubsub, ^ps, never_ref, :unsubscribed, props}},
                       2_000

        assert is_reference(never_ref)
        assert props == %{channel: "nope"}
      after
        RedisServer.os_kill(server, "CONT")
      end

      # Subscribing twice is one subscription: one unsubscribe ends it, and Redis hears of it.
      assert numsub(conn, ch) == 1
      :ok = PubSub.unsubscribe(ps, ch)
      assert_receive {:redix_pubsub, ^ps, ^ref, :unsubscribed, %{channel: ^ch}}, 5_000
      assert Helpers.eventually(fn -> numsub(conn, ch) == 0 end)
      assert {:ok, 0} = RedixRs.command(conn, ["PUBLISH", ch, "gone"])

      # The pattern is still subscribed.
      assert {:ok, 1} =
               RedixRs.command(conn, ["PUBLISH", String.trim_trailing(pattern, "*") <> "y", "p"])

      assert_receive {:redix_pubsub, ^ps, ^ref, :pmessage, %{payload: "p"}}, 5_000
      refute_received {:redix_pubsub, ^ps, ^ref, :message, _}
    end
  end

  describe "fan-out" do
    @tag timeout: 300_000
    test "200 subscribers each get all 2,000 messages, in publish order", %{conn: conn} do
      ps = pubsub!()
      ch = unique("fanout")
      count = 2_000
      parent = self()

      subscribers =
        for _ <- 1..200, do: spawn_link(fn -> fanout_subscriber(ps, ch, parent, count) end)

      for pid <- subscribers, do: assert_receive({:ready, ^pid}, 30_000)
      assert numsub(conn, ch) == 1

      1..count
      |> Enum.chunk_every(100)
      |> Enum.each(fn batch ->
        commands = Enum.map(batch, &["PUBLISH", ch, Integer.to_string(&1)])
        replies = RedixRs.pipeline!(conn, commands, timeout: 30_000)
        assert replies == List.duplicate(1, length(batch))
      end)

      results =
        for pid <- subscribers do
          receive do
            {:done, ^pid, result} -> result
          after
            120_000 -> {:no_answer, pid}
          end
        end

      assert Enum.reject(results, &(&1 == :ok)) == []
    end

    test "large payloads reach 250 subscribers intact, by channel and by pattern", %{conn: conn} do
      # From 256 KiB on, subscribers share one binary. Each publish makes 250 deliveries (125 by
      # channel, 125 by pattern), more than one drain batch (200), so the large payload's deliveries
      # are split across batches and its shared bytes must outlive the first.
      ps = pubsub!()
      base = unique("large")
      ch = base <> ":chan"
      parent = self()

      subscribers =
        for i <- 1..250 do
          spawn_link(fn ->
            {:ok, ref} =
              if rem(i, 2) == 0,
                do: PubSub.subscribe(ps, ch),
                else: PubSub.psubscribe(ps, base <> ":*")

            receive do
              {:redix_pubsub, ^ps, ^ref, type, _} when type in [:subscribed, :psubscribed] -> :ok
            end

            send(parent, {:ready, self()})

            payloads =
              for _ <- 1..2 do
                receive do
                  {:redix_pubsub, ^ps, ^ref, type, %{channel: ^ch, payload: p}}
                  when type in [:message, :pmessage] ->
                    p
                after
                  30_000 -> :timeout
                end
              end

            send(parent, {:payloads, self(), payloads})
          end)
        end

      for pid <- subscribers, do: assert_receive({:ready, ^pid}, 30_000)
      small = :binary.copy("s", 256 * 1024 - 1)
      large = :crypto.strong_rand_bytes(1024 * 1024)
      # One connection, matched once by the channel and once by the pattern.
      assert {:ok, 2} = RedixRs.command(conn, ["PUBLISH", ch, small])
      assert {:ok, 2} = RedixRs.command(conn, ["PUBLISH", ch, large])

      for pid <- subscribers do
        assert_receive {:payloads, ^pid, payloads}, 60_000
        assert payloads == [small, large]
      end
    end

    test "10,000 channels subscribed in one call", %{conn: conn} do
      ps = pubsub!()
      base = unique("many")
      channels = for i <- 1..10_000, do: "#{base}:#{i}"

      {:ok, ref} = PubSub.subscribe(ps, channels)
      confirmed = receive_subscribed(ps, ref, 10_000, MapSet.new())
      assert MapSet.size(confirmed) == 10_000
      assert confirmed == MapSet.new(channels)

      some = [hd(channels), Enum.at(channels, 4_999), List.last(channels)]

      assert {:ok, reply} = RedixRs.command(conn, ["PUBSUB", "NUMSUB" | some])
      assert reply == Enum.flat_map(some, &[&1, 1])

      last = List.last(channels)
      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", last, "to the last"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, props}, 5_000
      assert props == %{channel: last, payload: "to the last"}
    end
  end

  describe "order" do
    test "no :message for a channel before its :subscribed, while publishing goes on" do
      ps = pubsub!()
      ch = unique("order:sub")
      publisher = start_publisher(ch)
      parent = self()

      # The first subscriber makes Redis subscribe (confirmed by Redis); the others are confirmed at
      # once while messages for the channel keep flowing.
      subscribers =
        for _ <- 1..30 do
          Process.sleep(3)
          spawn_link(fn -> send(parent, {self(), subscribe_order_check(ps, ch)}) end)
        end

      results = for pid <- subscribers, do: await_result(pid)
      stop_publisher(publisher)
      assert Enum.reject(results, &(&1 == :ok)) == []
    end

    test "no :message after :unsubscribed, another pid staying subscribed", %{conn: conn} do
      ps = pubsub!()
      ch = unique("order:unsub")
      # Keeps the channel subscribed on Redis' side, so messages keep coming from it.
      keeper = sink()
      {:ok, _} = PubSub.subscribe(ps, ch, keeper)
      assert Helpers.eventually(fn -> numsub(conn, ch) == 1 end)

      publisher = start_publisher(ch)
      parent = self()

      subscribers =
        for _ <- 1..20,
            do: spawn_link(fn -> send(parent, {self(), unsubscribe_order_check(ps, ch)}) end)

      results = for pid <- subscribers, do: await_result(pid)
      stop_publisher(publisher)
      assert Enum.reject(results, &(&1 == :ok)) == []
      assert numsub(conn, ch) == 1
    end

    test "no :message after :unsubscribed when the last subscriber leaves", %{conn: conn} do
      ps = pubsub!()
      ch = unique("order:last")
      publisher = start_publisher(ch)
      parent = self()

      subscribers =
        for _ <- 1..10,
            do: spawn_link(fn -> send(parent, {self(), unsubscribe_order_check(ps, ch)}) end)

      results = for pid <- subscribers, do: await_result(pid)
      assert Enum.reject(results, &(&1 == :ok)) == []
      assert Helpers.eventually(fn -> numsub(conn, ch) == 0 end)
      stop_publisher(publisher)
    end
  end

  describe "bounded backlog" do
    test "a PubSub process that cannot keep up: the connection closes with :pubsub_backlog", %{
      conn: conn
    } do
      ps = pubsub!()
      ch = unique("backlog")
      subscribers = for _ <- 1..101, do: sink()
      Enum.each(subscribers, &PubSub.subscribe(ps, ch, &1))
      :ok = PubSub.ping(ps)

      handler = "backlog-#{System.unique_integer([:positive])}"
      test = self()

      :telemetry.attach(
        handler,
        [:redix_rs, :disconnection],
        fn _, _, meta, _ -> send(test, {:disconnection, meta}) end,
        nil
      )

      try do
        # Suspended, the PubSub process sends nothing: 20,000 messages x 101 subscribers pile up,
        # twice the limit.
        :sys.suspend(ps)

        for batch <- Enum.chunk_every(1..20_000, 1_000) do
          {:ok, _} = RedixRs.pipeline(conn, Enum.map(batch, &["PUBLISH", ch, "m#{&1}"]))
        end

        # Redis answered every PUBLISH; give the last messages time to reach the native queue on the
        # other socket before the PubSub process starts draining it again.
        Process.sleep(300)
        :sys.resume(ps)
        assert_receive {:disconnection, %{connection: ^ps, reason: reason}}, 10_000
        assert reason == %ConnectionError{reason: :pubsub_backlog}
        # It reconnects and resubscribes.
        assert Helpers.eventually(fn -> numsub(conn, ch) == 1 end, 250)
      after
        :telemetry.detach(handler)
      end
    end
  end

  describe "backlog bounded in bytes" do
    test "a payload shared by many subscribers counts once; past the bound the connection closes",
         %{conn: conn} do
      mib = 1024 * 1024
      ps = pubsub!(backlog_limit: 8 * mib)
      ch = unique("bytes")
      {:ok, ref} = PubSub.subscribe(ps, ch, self())
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 5_000
      # 49 more subscribers: counted per subscriber, 6 payloads of 1 MiB would be 300 MiB.
      for _ <- 1..49, do: PubSub.subscribe(ps, ch, sink())
      :ok = PubSub.ping(ps)
      payload = :binary.copy("p", mib)

      :sys.suspend(ps)
      for _ <- 1..6, do: {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, payload])
      wait_until_read(conn, ps)
      :sys.resume(ps)

      for _ <- 1..6 do
        assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{payload: ^payload}}, 5_000
      end

      refute_received {:redix_pubsub, ^ps, ^ref, :disconnected, _}

      # 12 MiB waiting: past the bound. Redis sees the connection go while the process is still
      # suspended (nothing but the byte bound can have closed it).
      :sys.suspend(ps)
      for _ <- 1..12, do: {:ok, _} = RedixRs.command(conn, ["PUBLISH", ch, payload])
      assert Helpers.eventually(fn -> numsub(conn, ch) == 0 end, 400)
      :sys.resume(ps)

      received = count_messages(ps, ref, 0)
      assert received in 8..9, "#{received} messages before :disconnected"
      # It reconnects and subscribes again.
      assert Helpers.eventually(fn -> numsub(conn, ch) == 1 end, 400)
    end
  end

  describe "subscriber exits" do
    test "a subscriber killed mid-stream is removed: Redis unsubscribes when it was the only one",
         %{conn: conn} do
      ps = pubsub!()
      ch = unique("killed:only")
      publisher = start_publisher(ch)
      victim = stream_subscriber(ps, ch)
      assert numsub(conn, ch) == 1

      Process.sleep(50)
      Process.exit(victim, :kill)
      assert Helpers.eventually(fn -> numsub(conn, ch) == 0 end)
      stop_publisher(publisher)
    end

    test "a subscriber killed mid-stream is removed; another pid keeps the channel", %{conn: conn} do
      ps = pubsub!()
      ch = unique("killed:shared")
      publisher = start_publisher(ch)
      victim = stream_subscriber(ps, ch)
      survivor = stream_subscriber(ps, ch)
      assert numsub(conn, ch) == 1

      Process.sleep(50)
      monitor = Process.monitor(victim)
      Process.exit(victim, :kill)
      assert_receive {:DOWN, ^monitor, :process, ^victim, :killed}
      Process.sleep(200)
      assert PubSub.ping(ps) == :ok
      assert numsub(conn, ch) == 1

      # The survivor still gets the stream.
      seen = last_seen(survivor)
      assert Helpers.eventually(fn -> last_seen(survivor) > seen end)
      stop_publisher(publisher)

      # ...and when it goes too, Redis unsubscribes: the victim left nothing behind.
      Process.exit(survivor, :kill)
      assert Helpers.eventually(fn -> numsub(conn, ch) == 0 end)
    end

    test "a subscriber that exits normally is removed as well", %{conn: conn} do
      ps = pubsub!()
      ch = unique("exits")
      pattern = unique("exits") <> ":*"
      parent = self()

      pid =
        spawn(fn ->
          {:ok, ref} = PubSub.subscribe(ps, ch)
          {:ok, ^ref} = PubSub.psubscribe(ps, pattern)
          assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 5_000
          assert_receive {:redix_pubsub, ^ps, ^ref, :psubscribed, _}, 5_000
          send(parent, :subscribed)
          receive do: (:exit -> :ok)
        end)

      assert_receive :subscribed, 5_000
      assert numsub(conn, ch) == 1
      send(pid, :exit)

      assert Helpers.eventually(fn ->
               numsub(conn, ch) == 0 and
                 RedixRs.command!(conn, ["PUBLISH", String.trim_trailing(pattern, "*"), "x"]) ==
                   0
             end)
    end
  end

  describe "disconnections" do
    test "a server restart: :disconnected once per subscriber, :subscribed again, messages flow" do
      server = RedisServer.start()
      ps = pubsub!(port: server.port, backoff_initial: 100)
      base = unique("restart")
      [c1, c2, pattern, sch] = [base <> ":c1", base <> ":c2", base <> ":p*", base <> ":s"]

      {:ok, ref} = PubSub.subscribe(ps, [c1, c2])
      {:ok, ^ref} = PubSub.psubscribe(ps, pattern)
      {:ok, ^ref} = PubSub.ssubscribe(ps, sch)
      other = forwarder()
      {:ok, other_ref} = PubSub.subscribe(ps, c1, other)

      expected_confirmations =
        MapSet.new([
          {:subscribed, %{channel: c1}},
          {:subscribed, %{channel: c2}},
          {:psubscribed, %{pattern: pattern}},
          {:ssubscribed, %{channel: sch}}
        ])

      assert confirmations(ps, ref, 4) == expected_confirmations

      assert_receive {:forwarded, ^other,
                      {:redix_pubsub, ^ps, ^other_ref, :subscribed, %{channel: ^c1}}},
                     5_000

      RedisServer.stop(server)

      # In mailbox order: the first thing after the loss is :disconnected, once.
      assert {:redix_pubsub, ^ps, ^ref, :disconnected, props} = next_pubsub(5_000)
      assert Map.keys(props) == [:error]
      assert %ConnectionError{} = props.error

      assert_receive {:forwarded, ^other, {:redix_pubsub, ^ps, ^other_ref, :disconnected, props}},
                     5_000

      assert Map.keys(props) == [:error]
      assert %ConnectionError{} = props.error

      assert PubSub.ping(ps) == {:error, %ConnectionError{reason: :closed}}
      refute_receive {:redix_pubsub, ^ps, _, _, _}, 300
      refute_receive {:forwarded, ^other, _}

      server = RedisServer.restart(server)

      # Then every subscription again, before anything else.
      assert confirmations(ps, ref, 4) == expected_confirmations

      assert_receive {:forwarded, ^other, {:redix_pubsub, ^ps, ^other_ref, :subscribed, props}},
                     5_000

      assert props == %{channel: c1}

      {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)
      assert Helpers.eventually(fn -> PubSub.ping(ps) == :ok end)

      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", c1, "back"])
      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", c2, "back2"])
      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", base <> ":pp", "pback"])
      assert {:ok, 1} = RedixRs.command(conn, ["SPUBLISH", sch, "sback"])

      assert next_pubsub(5_000) ==
               {:redix_pubsub, ps, ref, :message, %{channel: c1, payload: "back"}}

      assert next_pubsub(5_000) ==
               {:redix_pubsub, ps, ref, :message, %{channel: c2, payload: "back2"}}

      assert next_pubsub(5_000) ==
               {:redix_pubsub, ps, ref, :pmessage,
                %{channel: base <> ":pp", pattern: pattern, payload: "pback"}}

      assert next_pubsub(5_000) ==
               {:redix_pubsub, ps, ref, :smessage, %{channel: sch, payload: "sback"}}

      assert_receive {:forwarded, ^other,
                      {:redix_pubsub, ^ps, ^other_ref, :message, %{payload: "back"}}},
                     5_000

      # One Redis-side subscription per channel, not one per subscriber or per reconnect.
      assert {:ok, [^c1, 1, ^c2, 1]} = RedixRs.command(conn, ["PUBSUB", "NUMSUB", c1, c2])
      refute_receive {:redix_pubsub, ^ps, _, :disconnected, _}, 100
      refute_received {:forwarded, ^other, {:redix_pubsub, _, _, :disconnected, _}}
    end

    test "subscribing while disconnected: {:ok, ref} now, :subscribed when the server is back" do
      server = RedisServer.start()
      ps = pubsub!(port: server.port, backoff_initial: 100)
      ch = unique("later")
      gone = unique("later:gone")
      pattern = unique("later") <> ":*"

      RedisServer.stop(server)

      assert Helpers.eventually(fn ->
               PubSub.ping(ps) == {:error, %ConnectionError{reason: :closed}}
             end)

      assert PubSub.get_client_id(ps) == {:error, %ConnectionError{reason: :closed}}

      assert {:ok, ref} = PubSub.subscribe(ps, [ch, gone])
      assert is_reference(ref)
      assert {:ok, ^ref} = PubSub.psubscribe(ps, pattern)
      refute_receive {:redix_pubsub, ^ps, ^ref, _, _}, 300

      # Unsubscribing while disconnected is confirmed at once.
      assert :ok = PubSub.unsubscribe(ps, gone)
      assert_receive {:redix_pubsub, ^ps, ^ref, :unsubscribed, props}, 1_000
      assert props == %{channel: gone}

      server = RedisServer.restart(server)
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, props}, 10_000
      assert props == %{channel: ch}
      assert_receive {:redix_pubsub, ^ps, ^ref, :psubscribed, props}, 5_000
      assert props == %{pattern: pattern}
      refute_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^gone}}, 200

      {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)
      assert {:ok, [^ch, 1, ^gone, 0]} = RedixRs.command(conn, ["PUBSUB", "NUMSUB", ch, gone])
      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, "hi"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, props}, 5_000
      assert props == %{channel: ch, payload: "hi"}
      assert PubSub.ping(ps) == :ok
    end

    # As calls on a RedixRs connection, a ping made while connecting waits for the connection.
    test "ping/2 right after an async start_link waits for the connection" do
      {:ok, ps} = PubSub.start_link(port: Servers.port())
      assert PubSub.ping(ps) == :ok
    end

    test "ping/2 is :ok, and {:error, %ConnectionError{reason: :closed}} while the server is down" do
      server = RedisServer.start()
      ps = pubsub!(port: server.port, backoff_initial: 100)
      assert PubSub.ping(ps) == :ok
      assert PubSub.ping(ps, 1_000) == :ok

      # Also while subscribed (RESP2 answers PING differently in subscribed mode).
      {:ok, ref} = PubSub.subscribe(ps, "ping-channel")
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 5_000
      assert PubSub.ping(ps) == :ok
      refute_received {:redix_pubsub, ^ps, ^ref, :message, _}

      RedisServer.stop(server)
      assert_receive {:redix_pubsub, ^ps, ^ref, :disconnected, _}, 5_000
      assert PubSub.ping(ps) == {:error, %ConnectionError{reason: :closed}}

      # A frozen server: the ping times out.
      server = RedisServer.restart(server)
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 10_000
      assert PubSub.ping(ps) == :ok
      :ok = RedisServer.os_kill(server, "STOP")

      try do
        assert PubSub.ping(ps, 200) == {:error, %ConnectionError{reason: :timeout}}
      after
        RedisServer.os_kill(server, "CONT")
      end

      assert PubSub.ping(ps) == :ok
    end

    test "exit_on_disconnection: true stops the process with a %ConnectionError{}" do
      Process.flag(:trap_exit, true)
      server = RedisServer.start()
      ps = pubsub!(port: server.port, exit_on_disconnection: true)
      {:ok, ref} = PubSub.subscribe(ps, "exit-channel")
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 5_000

      :ok = RedisServer.os_kill(server, "KILL")
      assert_receive {:EXIT, ^ps, %ConnectionError{}}, 5_000
      refute Process.alive?(ps)
      RedisServer.stop(server)
    end

    # Redix (contract §5) does not send :disconnected when exit_on_disconnection is set: the
    # process just exits.
    test "exit_on_disconnection: true sends no :disconnected, as in Redix" do
      Process.flag(:trap_exit, true)
      server = RedisServer.start()
      ps = pubsub!(port: server.port, exit_on_disconnection: true)
      {:ok, ref} = PubSub.subscribe(ps, "exit-channel")
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 5_000

      :ok = RedisServer.os_kill(server, "KILL")
      assert_receive {:EXIT, ^ps, %ConnectionError{}}, 5_000
      refute_received {:redix_pubsub, ^ps, ^ref, :disconnected, _}
      RedisServer.stop(server)
    end

    test "sync_connect: true to a closed port: {:error, %ConnectionError{reason: :econnrefused}}" do
      Process.flag(:trap_exit, true)
      port = closed_port()

      assert {:error, %ConnectionError{reason: :econnrefused}} =
               PubSub.start_link(port: port, host: "127.0.0.1", sync_connect: true)
    end

    test "without sync_connect a refused connection keeps retrying, even with exit_on_disconnection" do
      Process.flag(:trap_exit, true)
      port = closed_port()

      {:ok, ps} =
        PubSub.start_link(
          port: port,
          host: "127.0.0.1",
          backoff_initial: 50,
          exit_on_disconnection: true
        )

      assert PubSub.ping(ps) == {:error, %ConnectionError{reason: :closed}}
      refute_receive {:EXIT, ^ps, _}, 300
      assert Process.alive?(ps)
    end
  end

  describe "get_client_id/1" do
    test "without fetch_client_id_on_connect: :client_id_not_stored" do
      ps = pubsub!()
      assert PubSub.get_client_id(ps) == {:error, %ConnectionError{reason: :client_id_not_stored}}
    end

    test "with fetch_client_id_on_connect: the pub/sub connection's id from CLIENT LIST" do
      server = RedisServer.start()
      {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)

      {:ok, ps} =
        PubSub.start_link(
          port: server.port,
          fetch_client_id_on_connect: true,
          backoff_initial: 100
        )

      assert Helpers.eventually(fn -> match?({:ok, _}, PubSub.get_client_id(ps)) end)
      {:ok, id} = PubSub.get_client_id(ps)
      assert is_integer(id)

      {:ok, ref} = PubSub.subscribe(ps, "client-id")
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 5_000
      assert pubsub_client_ids(conn) == [id]

      # A new connection, a new id.
      RedisServer.stop(server)
      assert_receive {:redix_pubsub, ^ps, ^ref, :disconnected, _}, 5_000
      assert PubSub.get_client_id(ps) == {:error, %ConnectionError{reason: :closed}}

      server = RedisServer.restart(server)
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 10_000
      {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)
      assert Helpers.eventually(fn -> match?({:ok, _}, PubSub.get_client_id(ps)) end)
      {:ok, new_id} = PubSub.get_client_id(ps)
      assert pubsub_client_ids(conn) == [new_id]
    end

    # Redix fetches the id while connecting: with sync_connect it is there when start_link returns.
    test "with fetch_client_id_on_connect and sync_connect: available as soon as start_link returns" do
      for _ <- 1..30 do
        {:ok, ps} =
          PubSub.start_link(
            port: Servers.port(),
            fetch_client_id_on_connect: true,
            sync_connect: true
          )

        assert {:ok, id} = PubSub.get_client_id(ps)
        assert is_integer(id)
        PubSub.stop(ps)
      end
    end
  end

  describe "starting and stopping" do
    test "start_link with a URI, and with a URI and options (the options win)", %{conn: conn} do
      port = Servers.port()
      {:ok, ps} = PubSub.start_link("redis://localhost:#{port}")
      assert Helpers.eventually(fn -> PubSub.ping(ps) == :ok end)

      {:ok, ps} = PubSub.start_link("redis://localhost:1", port: port, sync_connect: true)
      assert PubSub.ping(ps) == :ok

      ch = unique("uri")
      {:ok, ref} = PubSub.subscribe(ps, ch)
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 5_000
      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, "via uri"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{payload: "via uri"}}, 5_000
    end

    test "a name registers the connection", %{conn: conn} do
      name = :"pubsub_test_#{System.unique_integer([:positive])}"
      {:ok, ps} = PubSub.start_link(port: Servers.port(), name: name, sync_connect: true)
      assert Process.whereis(name) == ps
      assert PubSub.ping(name) == :ok

      ch = unique("named")
      {:ok, ref} = PubSub.subscribe(name, ch)
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}}, 5_000
      assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, "n"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{channel: ^ch, payload: "n"}}, 5_000
      :ok = PubSub.unsubscribe(name, ch)
      assert_receive {:redix_pubsub, ^ps, ^ref, :unsubscribed, %{channel: ^ch}}, 5_000
    end

    test "stop/2 stops the process and closes its connection", %{conn: conn} do
      ps = pubsub!()
      ch = unique("stop")
      {:ok, ref} = PubSub.subscribe(ps, ch)
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 5_000
      assert numsub(conn, ch) == 1

      monitor = Process.monitor(ps)
      assert PubSub.stop(ps, 5_000) == :ok
      assert_receive {:DOWN, ^monitor, :process, ^ps, :normal}
      refute Process.alive?(ps)
      assert Helpers.eventually(fn -> numsub(conn, ch) == 0 end)

      ps = pubsub!()
      assert PubSub.stop(ps) == :ok
      refute Process.alive?(ps)
    end

    test "child_spec/1 from options, a URI, or {uri, options}, usable under a supervisor" do
      port = Servers.port()

      assert PubSub.child_spec(port: port) ==
               %{id: PubSub, type: :worker, start: {PubSub, :start_link, [[port: port]]}}

      assert PubSub.child_spec("redis://localhost:#{port}") ==
               %{
                 id: PubSub,
                 type: :worker,
                 start: {PubSub, :start_link, ["redis://localhost:#{port}"]}
               }

      assert PubSub.child_spec({"redis://localhost:1", port: port}) ==
               %{
                 id: PubSub,
                 type: :worker,
                 start: {PubSub, :start_link, ["redis://localhost:1", [port: port]]}
               }

      ps1 = start_supervised!({PubSub, port: port, sync_connect: true}, id: :a)
      ps2 = start_supervised!({PubSub, "redis://localhost:#{port}"}, id: :b)
      ps3 = start_supervised!({PubSub, {"redis://localhost:1", port: port}}, id: :c)

      for ps <- [ps1, ps2, ps3] do
        assert Helpers.eventually(fn -> PubSub.ping(ps) == :ok end)
      end
    end

    test "options are validated", %{conn: _conn} do
      assert_raise ArgumentError, ~r/unknown options \[:foo\]/, fn ->
        PubSub.start_link(port: Servers.port(), foo: 1)
      end

      assert_raise ArgumentError, fn -> PubSub.start_link(port: "not a port") end
      assert_raise ArgumentError, fn -> PubSub.start_link(fetch_client_id_on_connect: :yes) end
      assert_raise ArgumentError, fn -> PubSub.start_link("redis://localhost", foo: 1) end

      # fetch_client_id_on_connect is a pub/sub option only.
      assert {:ok, ps} =
               PubSub.start_link(
                 port: Servers.port(),
                 fetch_client_id_on_connect: true,
                 sync_connect: true
               )

      assert PubSub.ping(ps) == :ok

      assert_raise ArgumentError, ~r/fetch_client_id_on_connect/, fn ->
        RedixRs.start_link(port: Servers.port(), fetch_client_id_on_connect: true)
      end
    end

    test "a subscriber must be a pid; a name must be a string (or atom or number)" do
      ps = pubsub!()
      me = self()

      for fun <- [
            :subscribe,
            :psubscribe,
            :ssubscribe,
            :unsubscribe,
            :punsubscribe,
            :sunsubscribe
          ],
          subscriber <- [:a_name, {:a_name, node()}, "pid", nil] do
        assert_raise ArgumentError, ~r/subscriber must be a pid/, fn ->
          apply(PubSub, fun, [ps, "ch", subscriber])
        end
      end

      assert_raise ArgumentError, fn -> PubSub.subscribe(ps, [%{}], me) end
      assert_raise ArgumentError, fn -> PubSub.subscribe(ps, {"a", "b"}, me) end

      # The connection is still fine.
      assert PubSub.ping(ps) == :ok
      refute_received {:redix_pubsub, _, _, _, _}
    end
  end

  describe "transports and authentication" do
    test "a password server", _ do
      server = Servers.get(:password)

      {:ok, conn} =
        RedixRs.start_link(port: server.port, password: server.password, sync_connect: true)

      ps = pubsub!(port: server.port, password: server.password)
      assert_pubsub_works(ps, conn)

      {:ok, ps} = PubSub.start_link("redis://:#{server.password}@localhost:#{server.port}")
      assert_pubsub_works(ps, conn)
    end

    test "a wrong password is fatal" do
      Process.flag(:trap_exit, true)
      server = Servers.get(:password)

      assert {:error, %ConnectionError{reason: %RedixRs.Error{message: "WRONGPASS" <> _}}} =
               PubSub.start_link(port: server.port, password: "wrong", sync_connect: true)
    end

    test "an ACL user" do
      server = Servers.get(:acl)
      {user, password} = server.acl_user

      {:ok, conn} =
        RedixRs.start_link(
          port: server.port,
          username: user,
          password: password,
          sync_connect: true
        )

      ps = pubsub!(port: server.port, username: user, password: password)
      assert_pubsub_works(ps, conn)

      {:ok, ps} = PubSub.start_link("redis://#{user}:#{password}@localhost:#{server.port}")
      assert_pubsub_works(ps, conn)
    end

    test "a Unix socket" do
      server = Servers.get(:unix)
      {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)

      {:ok, ps} = PubSub.start_link(host: {:local, server.unix_path}, sync_connect: true)
      assert_pubsub_works(ps, conn)

      assert {:ok, list} = RedixRs.command(conn, ["CLIENT", "LIST"])
      assert list =~ server.unix_path
    end
  end

  ## Helpers

  defp pubsub!(opts \\ []) do
    opts = Keyword.merge([port: Servers.port(), sync_connect: true], opts)
    {:ok, ps} = PubSub.start_link(opts)
    ps
  end

  defp unique(prefix), do: "#{prefix}:#{System.unique_integer([:positive])}"

  defp numsub(conn, ch) do
    {:ok, [^ch, n]} = RedixRs.command(conn, ["PUBSUB", "NUMSUB", ch])
    n
  end

  # The ids of the connections subscribed to something, from CLIENT LIST.
  defp pubsub_client_ids(conn) do
    {:ok, list} = RedixRs.command(conn, ["CLIENT", "LIST"])

    for line <- String.split(list, "\n", trim: true),
        fields = parse_client_line(line),
        String.to_integer(fields["sub"]) > 0 or String.to_integer(fields["psub"]) > 0,
        do: String.to_integer(fields["id"])
  end

  defp parse_client_line(line) do
    for field <- String.split(line, " ", trim: true), into: %{} do
      case String.split(field, "=", parts: 2) do
        [key, value] -> {key, value}
        [key] -> {key, ""}
      end
    end
  end

  defp assert_pubsub_works(ps, conn) do
    ch = unique("works")
    {:ok, ref} = PubSub.subscribe(ps, ch)
    assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, props}, 5_000
    assert props == %{channel: ch}
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, "it works"])
    assert_receive {:redix_pubsub, ^ps, ^ref, :message, props}, 5_000
    assert props == %{channel: ch, payload: "it works"}
    assert PubSub.ping(ps) == :ok
  end

  # The next pub/sub message in mailbox order (messages forwarded by other processes left aside).
  defp next_pubsub(timeout) do
    receive do
      {:redix_pubsub, _, _, _, _} = message -> message
    after
      timeout -> flunk("no pub/sub message in #{timeout} ms")
    end
  end

  # The next `count` messages in the mailbox, which must all be confirmations for `ref`.
  defp confirmations(ps, ref, count) do
    for _ <- 1..count, into: MapSet.new() do
      case next_pubsub(10_000) do
        {:redix_pubsub, ^ps, ^ref, type, props}
        when type in [:subscribed, :psubscribed, :ssubscribed] ->
          {type, props}

        other ->
          flunk("expected a confirmation, got: #{inspect(other)}")
      end
    end
  end

  defp receive_subscribed(_ps, _ref, 0, acc), do: acc

  defp receive_subscribed(ps, ref, left, acc) do
    receive do
      {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ch} = props} ->
        assert props == %{channel: ch}
        receive_subscribed(ps, ref, left - 1, MapSet.put(acc, ch))
    after
      30_000 -> flunk("#{left} :subscribed messages missing")
    end
  end

  # A process sending every message it gets to the test process as {:forwarded, self(), message}.
  defp forwarder do
    parent = self()
    spawn_link(fn -> forward_loop(parent) end)
  end

  defp forward_loop(parent) do
    receive do
      message ->
        send(parent, {:forwarded, self(), message})
        forward_loop(parent)
    end
  end

  # A process that drops every message.
  # Until the `:disconnected` message: how many 1 MiB messages arrived before it.
  defp count_messages(ps, ref, n) do
    receive do
      {:redix_pubsub, ^ps, ^ref, :message, _} ->
        count_messages(ps, ref, n + 1)

      {:redix_pubsub, ^ps, ^ref, :disconnected, %{error: error}} ->
        assert error.reason == :pubsub_backlog
        n
    after
      10_000 -> flunk("no :disconnected after #{n} messages")
    end
  end

  # Redis has handed everything to the pub/sub connection's socket (its output buffer is empty), and
  # the reader has had time to take it.
  defp wait_until_read(conn, _ps) do
    assert Helpers.eventually(
             fn ->
               {:ok, list} = RedixRs.command(conn, ["CLIENT", "LIST", "TYPE", "pubsub"])

               String.split(list, "\n", trim: true)
               |> Enum.all?(&String.contains?(&1, " omem=0 "))
             end,
             400
           )

    Process.sleep(200)
  end

  defp sink do
    spawn_link(fn -> sink_loop() end)
  end

  defp sink_loop do
    receive do
      _ -> sink_loop()
    end
  end

  # Publishes "1", "2", ... to `ch` until stopped, in pipelines of 10, on its own connection. Returns
  # once the first pipeline went through.
  defp start_publisher(ch) do
    parent = self()

    pid =
      spawn_link(fn ->
        {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
        {:ok, _} = RedixRs.pipeline(conn, [["PUBLISH", ch, "0"]])
        send(parent, {:publishing, self()})
        publish_loop(conn, ch, 1)
      end)

    assert_receive {:publishing, ^pid}, 5_000
    pid
  end

  defp publish_loop(conn, ch, n) do
    receive do
      {:stop, from} ->
        RedixRs.stop(conn)
        send(from, {:published, n - 1})
    after
      0 ->
        commands = for i <- n..(n + 9), do: ["PUBLISH", ch, Integer.to_string(i)]
        {:ok, _} = RedixRs.pipeline(conn, commands)
        publish_loop(conn, ch, n + 10)
    end
  end

  defp stop_publisher(pid) do
    send(pid, {:stop, self()})

    receive do
      {:published, n} -> n
    after
      10_000 -> flunk("the publisher did not stop")
    end
  end

  defp await_result(pid) do
    receive do
      {^pid, result} -> result
    after
      30_000 -> {:no_answer, pid}
    end
  end

  # Subscribes the calling process while the publisher runs; the first message in its mailbox must be
  # :subscribed, then consecutive payloads.
  defp subscribe_order_check(ps, ch) do
    {:ok, ref} = PubSub.subscribe(ps, ch)

    receive do
      {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}} ->
        case take_messages(ps, ref, ch, 50, []) do
          {:ok, payloads} -> check_consecutive(payloads)
          error -> error
        end

      other ->
        {:error, {:first_message, other}}
    after
      10_000 -> {:error, :no_subscribed}
    end
  end

  # Subscribes, takes some messages, unsubscribes: the mailbox must hold messages up to :unsubscribed
  # and none for the channel after it.
  defp unsubscribe_order_check(ps, ch) do
    {:ok, ref} = PubSub.subscribe(ps, ch)

    receive do
      {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}} -> :ok
    after
      10_000 -> exit(:no_subscribed)
    end

    with {:ok, _} <- take_messages(ps, ref, ch, 20 + :rand.uniform(100), []),
         :ok <- PubSub.unsubscribe(ps, ch),
         {:ok, before} <- until_unsubscribed(ps, ref, ch, []),
         :ok <- check_consecutive(before) do
      receive do
        {:redix_pubsub, _, _, _, _} = message -> {:error, {:after_unsubscribed, message}}
      after
        200 -> :ok
      end
    end
  end

  defp until_unsubscribed(ps, ref, ch, acc) do
    receive do
      {:redix_pubsub, ^ps, ^ref, :message, %{channel: ^ch, payload: payload}} ->
        until_unsubscribed(ps, ref, ch, [payload | acc])

      {:redix_pubsub, ^ps, ^ref, :unsubscribed, props} when props == %{channel: ch} ->
        {:ok, Enum.reverse(acc)}

      other ->
        {:error, {:unexpected, other}}
    after
      10_000 -> {:error, :no_unsubscribed}
    end
  end

  defp take_messages(_ps, _ref, _ch, 0, acc), do: {:ok, Enum.reverse(acc)}

  defp take_messages(ps, ref, ch, left, acc) do
    receive do
      {:redix_pubsub, ^ps, ^ref, :message, %{channel: ^ch, payload: payload} = props}
      when map_size(props) == 2 ->
        take_messages(ps, ref, ch, left - 1, [payload | acc])

      other ->
        {:error, {:unexpected, other}}
    after
      10_000 -> {:error, {:missing_messages, left}}
    end
  end

  defp check_consecutive([]), do: :ok

  defp check_consecutive([first | _] = payloads) do
    first = String.to_integer(first)
    expected = Enum.map(first..(first + length(payloads) - 1), &Integer.to_string/1)
    if payloads == expected, do: :ok, else: {:error, {:not_consecutive, payloads}}
  end

  # A subscriber of `ch` that counts what it gets; answers {:last_seen, from} with the last payload.
  defp stream_subscriber(ps, ch) do
    parent = self()

    pid =
      spawn(fn ->
        {:ok, ref} = PubSub.subscribe(ps, ch)

        receive do
          {:redix_pubsub, ^ps, ^ref, :subscribed, _} -> send(parent, {:ready, self()})
        end

        stream_loop(0)
      end)

    assert_receive {:ready, ^pid}, 5_000
    pid
  end

  defp stream_loop(last) do
    receive do
      {:redix_pubsub, _, _, :message, %{payload: payload}} ->
        stream_loop(String.to_integer(payload))

      {:last_seen, from} ->
        send(from, {:last_seen, self(), last})
        stream_loop(last)
    end
  end

  defp last_seen(pid) do
    send(pid, {:last_seen, self()})

    receive do
      {:last_seen, ^pid, last} -> last
    after
      5_000 -> flunk("no answer from the subscriber")
    end
  end

  defp fanout_subscriber(ps, ch, parent, count) do
    {:ok, ref} = PubSub.subscribe(ps, ch)

    receive do
      {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}} -> :ok
    end

    send(parent, {:ready, self()})

    result =
      case take_messages(ps, ref, ch, count, []) do
        {:ok, payloads} ->
          expected = Enum.map(1..count, &Integer.to_string/1)

          cond do
            payloads != expected ->
              index = Enum.find_index(Enum.zip(payloads, expected), fn {a, b} -> a != b end)
              {:out_of_order, self(), index, Enum.slice(payloads, max(index - 2, 0), 5)}

            true ->
              receive do
                {:redix_pubsub, _, _, _, _} = extra -> {:extra, self(), extra}
              after
                100 -> :ok
              end
          end

        {:error, reason} ->
          {:error, self(), reason}
      end

    send(parent, {:done, self(), result})
  end
end
