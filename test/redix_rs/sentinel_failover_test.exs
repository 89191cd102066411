defmodule RedixRs.SentinelFailoverTest do
  # What a connection through Sentinel does when Sentinel moves the primary while it is connected
  # (a real primary, replica and three redis-sentinel processes, see RedixRs.Test.SentinelSetup).
  # Each test starts its own deployment: every one of them fails it over. Not async: failovers take
  # seconds and telemetry handlers are global.
  use ExUnit.Case, async: false

  # Connections are dropped on purpose.
  @moduletag :capture_log
  @moduletag timeout: 240_000

  alias RedixRs.ConnectionError
  alias RedixRs.Test.{FakeSentinel, RedisServer, SentinelSetup}

  import RedixRs.Test.SentinelSetup, only: [role_of: 1, port_of: 1]
  import RedixRs.Test.Helpers, only: [attach_telemetry: 1]

  @group "mymaster"

  setup do
    setup = SentinelSetup.start()
    on_exit(fn -> SentinelSetup.stop(setup) end)
    %{setup: setup}
  end

  describe "a primary connection" do
    # Four processes stream pipelines of INCR and CONFIG GET port (so each acknowledged INCR
    # comes with the server that acknowledged it) through one connection while
    # `SENTINEL FAILOVER` runs. The test's own subscriptions to +switch-master on every
    # sentinel time the announcement, a ROLE poller times the promotion. An INCR acknowledged
    # by the former primary after the promotion is lost (the former primary resyncs from the
    # new one); between the promotion and the announcement no client can know better, after
    # the announcement the client should not write there any more.
    test "stops writing to the former primary as soon as Sentinel announces the new one",
         %{setup: setup} do
      %{primary: %{port: old_port}, replica: %{port: new_port} = replica} = setup
      conn = start_conn!(setup)
      key = "failover:counter"

      watchers = Enum.map(setup.sentinels, &SentinelSetup.watch_switch_master/1)
      poller = SentinelSetup.watch_promotion(replica)

      stop = :atomics.new(1, [])
      acks = :counters.new(2, [])

      writers =
        for _ <- 1..4 do
          Task.async(fn -> write_loop(conn, key, new_port, stop, acks, []) end)
        end

      # The stream is running at full speed before the failover starts.
      wait_until(60_000, "20,000 INCRs before the failover", fn ->
        :counters.get(acks, 1) >= 20_000
      end)

      failover_at = now_us()
      assert SentinelSetup.failover(setup) == new_port
      assert_receive {:promoted, ^new_port, promoted_at}, 30_000

      announced =
        for _ <- setup.sentinels do
          assert_receive {:switch_master, _port, at, [@group, _, old, _, new]}, 30_000
          assert {old, new} == {"#{old_port}", "#{new_port}"}
          at
        end

      switch_at = Enum.min(announced)

      wait_until(90_000, "2,000 INCRs acknowledged by the new primary", fn ->
        :counters.get(acks, 2) >= 2_000
      end)

      :atomics.put(stop, 1, 1)
      entries = writers |> Task.await_many(30_000) |> Enum.concat() |> Enum.sort()
      Enum.each([poller | watchers], &SentinelSetup.stop_watch/1)

      acked = for {t, port, n} when is_integer(port) <- entries, do: {t, port, n}
      {first_t, _, _} = hd(acked)
      before = Enum.count(acked, fn {t, _, _} -> t < failover_at end)
      per_second = round(before * 1_000_000 / (failover_at - first_t))
      old_after = fn since -> Enum.count(acked, &match?({t, ^old_port, _} when t > since, &1)) end
      last_old = acked |> Enum.filter(&(elem(&1, 1) == old_port)) |> List.last() |> elem(0)
      new_values = for {_t, ^new_port, n} <- acked, do: n
      # The new primary counts on from the last INCR it replicated: a value the former primary
      # acknowledged at or above the first one the new primary gave is a write that was lost.
      lost = Enum.count(acked, &match?({_, ^old_port, n} when n >= hd(new_values), &1))

      errors =
        for({_t, kind, reason} when kind in [:error, :redis_error] <- entries, do: reason)
        |> Enum.frequencies()

      IO.puts("""

      [sentinel failover] 4 writers, #{per_second} INCR/s before the failover; \
      announcement #{ms(switch_at - promoted_at)} ms after the promotion (by the last \
      sentinel: #{ms(Enum.max(announced) - promoted_at)} ms); \
      INCRs acknowledged by the former primary after the announcement: #{old_after.(switch_at)} \
      (#{ms(old_after.(switch_at) * 1_000_000 / per_second)} ms of the stream; the last one \
      #{ms(last_old - switch_at)} ms after the announcement), after the \
      promotion: #{old_after.(promoted_at)}; lost INCRs: #{lost}; failed calls: #{inspect(errors)}\
      """)

      # Once the new primary answered, nothing more went to the former one, and nothing failed
      # but with the connection's own reasons (no READONLY: the client left before).
      {_, [{first_new, _, _} | _]} = Enum.split_while(acked, &(elem(&1, 1) != new_port))
      assert [] == for({t, ^old_port, _} = e <- acked, t > first_new, do: e)
      assert Enum.all?(Map.keys(errors), &(&1 in [:disconnected, :closed]))

      # Less than one second of the stream went to the former primary after the announcement.
      assert old_after.(switch_at) < per_second
    end
  end

  describe "following the group" do
    test "a -READONLY reply makes the connection check ROLE and leave a demoted primary", %{
      setup: setup
    } do
      other = RedisServer.start()
      on_exit(fn -> RedisServer.stop(other) end)
      conn = start_conn!(setup, [], backoff_max: 500)
      attach_telemetry(conn)
      assert port_of(conn) == setup.primary.port

      # The primary becomes a replica behind Sentinel's back: nothing is announced.
      assert SentinelSetup.query(setup.primary, ["REPLICAOF", "127.0.0.1", other.port]) == "OK"

      # The reply still goes to its caller: nothing is retried.
      assert {:error, %RedixRs.Error{message: "READONLY" <> _}} =
               RedixRs.command(conn, ["SET", "readonly:key", "v"])

      assert_receive {:telemetry, :disconnection, _,
                      %{reason: %ConnectionError{reason: {:wrong_role, "slave"}}}}

      # Sentinel may also fail the group over by now (a primary that says it is a replica
      # counts as down); either way, once a primary is back the connection is on it.
      assert SentinelSetup.query(setup.primary, ["REPLICAOF", "NO", "ONE"]) == "OK"
      assert_receive {:telemetry, :connection, _, _}, 30_000
      assert role_of(conn) == "master"
    end

    test "RedixRs.PubSub moves to the new primary and subscribes there again", %{setup: setup} do
      {:ok, ps} =
        RedixRs.PubSub.start_link(
          sentinel: [sentinels: SentinelSetup.sentinel_uris(setup), group: @group],
          sync_connect: true,
          backoff_initial: 100
        )

      on_exit(fn -> if Process.alive?(ps), do: RedixRs.PubSub.stop(ps) end)
      attach_telemetry(ps)
      {:ok, ref} = RedixRs.PubSub.subscribe(ps, "news", self())
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: "news"}}
      watcher = SentinelSetup.watch_switch_master(hd(setup.sentinels))

      new_port = SentinelSetup.failover(setup)
      assert_receive {:switch_master, _, switch_at, _}, 30_000
      assert_receive {:redix_pubsub, ^ps, ^ref, :disconnected, %{error: %ConnectionError{}}}

      assert_receive {:telemetry, :disconnection, _,
                      %{reason: %ConnectionError{reason: :sentinel_failover}}}

      address = "127.0.0.1:#{new_port}"
      assert_receive {:telemetry, :connection, connected_at, %{address: ^address}}
      assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: "news"}}

      # On the new primary, within seconds of the announcement (the sentinels demote the
      # former primary, which closes its clients, only some 10 s later).
      assert SentinelSetup.query(setup.replica, ["PUBLISH", "news", "hi"]) == 1
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{channel: "news", payload: "hi"}}
      assert connected_at - switch_at < 5_000_000
      SentinelSetup.stop_watch(watcher)
    end

    test "a role: :replica connection leaves its replica when it becomes the primary", %{
      setup: setup
    } do
      %{primary: %{port: old_port}, replica: %{port: new_port}} = setup
      conn = start_conn!(setup, [role: :replica], backoff_max: 1_000)
      attach_telemetry(conn)
      assert port_of(conn) == new_port
      watcher = SentinelSetup.watch_switch_master(hd(setup.sentinels))

      assert SentinelSetup.failover(setup) == new_port
      assert_receive {:switch_master, _, switch_at, _}, 30_000

      # Sentinel promotes a replica with REPLICAOF NO ONE and CLIENT KILL TYPE normal in one
      # transaction, so the server itself usually drops the connection first (:tcp_closed); the
      # watcher's :sentinel_failover is for a promotion that left the connection open. Either
      # way, the connection is off the new primary at the latest right after the announcement.
      assert_receive {:telemetry, :disconnection, left_at,
                      %{reason: %ConnectionError{reason: why}}}

      assert why in [:tcp_closed, :sentinel_failover]
      assert left_at - switch_at < 5_000_000

      # The only replica left is the former primary, once the sentinels have demoted it
      # (some 10 s after the switch): the connection gets there.
      address = "127.0.0.1:#{old_port}"
      assert_receive {:telemetry, :connection, _, %{address: ^address}}, 60_000
      assert port_of(conn) == old_port
      assert role_of(conn) == "slave"
      SentinelSetup.stop_watch(watcher)
    end

    test "when the watched sentinel dies, the next one is watched", %{setup: setup} do
      [first, second, third] = setup.sentinels
      conn = start_conn!(setup)
      attach_telemetry(conn)

      # The sentinel that named the primary (the first) is watched.
      wait_until(10_000, "a subscriber on the first sentinel", fn ->
        SentinelSetup.subscribers(first) == 1
      end)

      SentinelSetup.stop_sentinel(first)

      wait_until(10_000, "a subscriber on the second sentinel", fn ->
        SentinelSetup.subscribers(second) == 1
      end)

      watcher = SentinelSetup.watch_switch_master(second)
      new_port = SentinelSetup.failover(setup, via: second, sentinels: [second, third])
      assert_receive {:switch_master, _, switch_at, _}, 30_000

      assert_receive {:telemetry, :disconnection, left_at,
                      %{reason: %ConnectionError{reason: :sentinel_failover}}}

      address = "127.0.0.1:#{new_port}"
      assert_receive {:telemetry, :connection, _, %{address: ^address}}
      assert left_at - switch_at < 5_000_000
      assert port_of(conn) == new_port
      SentinelSetup.stop_watch(watcher)
    end

    # Real sentinels promote a replica with CLIENT KILL in the same transaction, so the server
    # drops a replica connection before the announcement; a fake sentinel announces a promotion
    # that left it open, which only the watcher catches. The data nodes are the real ones.
    test "role: :replica leaves a replica announced as the new primary (fake sentinel)", %{
      setup: setup
    } do
      %{primary: %{port: primary}, replica: %{port: replica}} = setup
      fake = FakeSentinel.start(primary, [replica])
      conn = start_fake_conn!(fake, role: :replica)
      attach_telemetry(conn)
      assert port_of(conn) == replica

      wait_until(10_000, "the watcher's subscription", fn ->
        FakeSentinel.subscribers(fake) == 1
      end)

      # The replica is announced as the primary; the only replica named is the real primary,
      # whose ROLE says master: no replica to go to.
      FakeSentinel.announce(fake, replica, [primary])

      assert_receive {:telemetry, :disconnection, _,
                      %{reason: %ConnectionError{reason: :sentinel_failover}}}

      refute_receive {:telemetry, :connection, _, _}, 1_000
      assert {:error, %ConnectionError{reason: :closed}} = RedixRs.command(conn, ["PING"])
    end

    test "a sentinel that drops each subscription at once is retried with a backoff (fake sentinel)",
         %{setup: setup} do
      fake = FakeSentinel.start(setup.primary.port, [setup.replica.port])
      FakeSentinel.drop_on_subscribe(fake, true)
      conn = start_fake_conn!(fake)
      assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
      wait_until(10_000, "a first subscription", fn -> FakeSentinel.subscribes(fake) >= 1 end)

      # Retried in a loop, the watcher would subscribe thousands of times in two seconds; with the
      # backoff (200 ms, doubling) a handful. The connection is left alone meanwhile.
      Process.sleep(2_000)
      assert FakeSentinel.subscribes(fake) <= 12
      assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    end

    test "an announcement missed while the watcher had no subscription is caught up on", %{
      setup: setup
    } do
      %{primary: %{port: primary}, replica: %{port: replica}} = setup
      fake = FakeSentinel.start(primary, [replica])
      conn = start_fake_conn!(fake)
      attach_telemetry(conn)
      assert port_of(conn) == primary

      wait_until(10_000, "the watcher's subscription", fn ->
        FakeSentinel.subscribers(fake) == 1
      end)

      # The sentinel changes its mind with no subscriber to tell, and the watcher's connection
      # drops: on its next subscription, it asks.
      FakeSentinel.change(fake, replica, [primary])
      FakeSentinel.drop_subscribers(fake)

      assert_receive {:telemetry, :disconnection, _,
                      %{reason: %ConnectionError{reason: :sentinel_failover}}}
    end

    test "without any sentinel left, the connection keeps serving its server", %{setup: setup} do
      conn = start_conn!(setup)
      attach_telemetry(conn)

      wait_until(10_000, "a subscriber on the first sentinel", fn ->
        SentinelSetup.subscribers(hd(setup.sentinels)) == 1
      end)

      Enum.each(setup.sentinels, &SentinelSetup.stop_sentinel/1)

      # The watcher keeps trying (with a growing wait); the connection is not its business.
      refute_receive {:telemetry, :disconnection, _, _}, 2_000
      assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
      assert port_of(conn) == setup.primary.port
    end

    test "the watcher ends with its connection: no subscription is left after stop", %{
      setup: setup
    } do
      [first | _] = setup.sentinels
      sentinel = [sentinels: SentinelSetup.sentinel_uris(setup), group: @group]

      for module <- [RedixRs, RedixRs.PubSub], _ <- 1..10 do
        {:ok, conn} = module.start_link(sentinel: sentinel, sync_connect: true)

        wait_until(10_000, "the watcher's subscription", fn ->
          SentinelSetup.subscribers(first) == 1
        end)

        :ok = module.stop(conn)

        wait_until(10_000, "the watcher's subscription to end", fn ->
          SentinelSetup.subscribers(first) == 0
        end)
      end

      assert Enum.map(setup.sentinels, &SentinelSetup.subscribers/1) == [0, 0, 0]
    end
  end

  ## Helpers

  defp start_fake_conn!(fake, sentinel_opts \\ []) do
    sentinel = [sentinels: ["redis://127.0.0.1:#{fake.port}"], group: @group] ++ sentinel_opts

    start_supervised!(
      {RedixRs, sentinel: sentinel, sync_connect: true, backoff_initial: 100},
      id: make_ref()
    )
  end

  defp start_conn!(setup, sentinel_opts \\ [], opts \\ []) do
    sentinel = [sentinels: SentinelSetup.sentinel_uris(setup), group: @group] ++ sentinel_opts

    start_supervised!(
      {RedixRs, [sentinel: sentinel, sync_connect: true, backoff_initial: 100] ++ opts},
      id: make_ref()
    )
  end

  # A pipeline of INCR and CONFIG GET port in a loop until `stop` is set. Returns
  # [{monotonic µs, port, value} | {monotonic µs, :error | :redis_error, reason}].
  defp write_loop(conn, key, new_port, stop, acks, acc) do
    if :atomics.get(stop, 1) == 1 do
      acc
    else
      entry =
        case RedixRs.pipeline(conn, [["INCR", key], ["CONFIG", "GET", "port"]], timeout: 5_000) do
          {:ok, [n, ["port", port]]} when is_integer(n) ->
            port = String.to_integer(port)
            :counters.add(acks, 1, 1)
            if port == new_port, do: :counters.add(acks, 2, 1)
            {now_us(), port, n}

          {:ok, [%RedixRs.Error{message: message}, _port]} ->
            {now_us(), :redis_error, message |> String.split() |> hd()}

          {:error, %ConnectionError{reason: reason}} ->
            # While disconnected, calls fail at once: do not spin.
            Process.sleep(1)
            {now_us(), :error, reason}
        end

      write_loop(conn, key, new_port, stop, acks, [entry | acc])
    end
  end

  defp wait_until(timeout, what, fun),
    do: wait_until(now_us() + timeout * 1_000, timeout, what, fun)

  defp wait_until(deadline, timeout, what, fun) do
    cond do
      fun.() ->
        :ok

      now_us() > deadline ->
        flunk("timed out after #{timeout} ms waiting for #{what}")

      true ->
        Process.sleep(10)
        wait_until(deadline, timeout, what, fun)
    end
  end

  defp now_us, do: System.monotonic_time(:microsecond)
  defp ms(us), do: round(us / 1_000)
end
