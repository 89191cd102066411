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
  alias RedixRs.Test.SentinelSetup

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

      switch_at =
        for _ <- setup.sentinels do
          assert_receive {:switch_master, _port, at, [@group, _, old, _, new]}, 30_000
          assert {old, new} == {"#{old_port}", "#{new_port}"}
          at
        end
        |> Enum.min()

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
      new_values = for {_t, ^new_port, n} <- acked, do: n
      # The new primary counts on from the last INCR it replicated: a value the former primary
      # acknowledged at or above the first one the new primary gave is a write that was lost.
      lost = Enum.count(acked, &match?({_, ^old_port, n} when n >= hd(new_values), &1))

      errors =
        for({_t, kind, reason} when kind in [:error, :redis_error] <- entries, do: reason)
        |> Enum.frequencies()

      IO.puts("""

      [sentinel failover] 4 writers, #{per_second} INCR/s before the failover; \
      announcement #{ms(switch_at - promoted_at)} ms after the promotion; \
      INCRs acknowledged by the former primary after the announcement: #{old_after.(switch_at)} \
      (#{ms(old_after.(switch_at) * 1_000_000 / per_second)} ms of the stream), after the \
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

  ## Helpers

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
