defmodule RedixRs.CacheLoadTest do
  # Client-side caching under load, against real redis-servers: 10,000 writes read back by 50
  # concurrent cached readers across a CLIENT KILL and a server restart; the bounds with a million
  # distinct keys read; hot keys surviving a scan; broadcast mode; each counter.
  use ExUnit.Case, async: true

  @moduletag :capture_log
  @moduletag timeout: 180_000

  alias RedixRs.Test.{Helpers, RedisServer}

  defp start_server(args \\ []) do
    server = RedisServer.start(owner: self(), args: args)
    on_exit(fn -> RedisServer.stop(server) end)
    server
  end

  defp cached(server, cache_opts, extra \\ []) do
    opts = [port: server.port, protocol: :resp3, client_cache: cache_opts, sync_connect: true]
    {:ok, conn} = RedixRs.start_link(Keyword.merge(opts, extra))
    conn
  end

  defp plain(server, extra \\ []) do
    {:ok, conn} = RedixRs.start_link([port: server.port, sync_connect: true] ++ extra)
    conn
  end

  # Retries `command` until the connection answers (it may be reconnecting), within 10 s.
  defp until_ok(conn, command, deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + 10_000

    case RedixRs.command(conn, command) do
      {:ok, value} ->
        value

      {:error, %RedixRs.ConnectionError{}} = error ->
        if System.monotonic_time(:millisecond) > deadline, do: flunk(inspect(error))
        Process.sleep(5)
        until_ok(conn, command, deadline)
    end
  end

  test "10,000 writes elsewhere, each seen by 50 cached readers after a round trip, across a " <>
         "CLIENT KILL and a server restart" do
    server = start_server()
    a = cached(server, [max_entries: 1_000], backoff_initial: 20, backoff_max: 100)
    b = plain(server, backoff_initial: 20, backoff_max: 100)
    k = "loop:key"
    # 1: the last value confirmed (written on B, then a PING answered on A); 2: restarts so far;
    # 3: set to stop the readers.
    state = :atomics.new(3, [])
    test = self()

    readers =
      for _ <- 1..50 do
        spawn_link(fn -> read_loop(a, k, state, test, 0, 0) end)
      end

    Process.flag(:priority, :high)

    server =
      Enum.reduce(1..10_000, server, fn i, server ->
        server =
          case i do
            3_000 ->
              id = until_ok(a, ["CLIENT", "ID"])
              until_ok(b, ["CLIENT", "KILL", "ID", id])
              server

            6_000 ->
              # The values are gone with the old server: readers may see nil until the next
              # write is confirmed.
              :atomics.put(state, 1, 0)
              :atomics.add(state, 2, 1)
              RedisServer.restart(server)

            _ ->
              server
          end

        "OK" = until_ok(b, ["SET", k, i])
        "PONG" = until_ok(a, ["PING"])
        :atomics.put(state, 1, i)
        server
      end)

    Process.flag(:priority, :normal)
    :atomics.put(state, 3, 1)

    {checks, hits} =
      Enum.reduce(readers, {0, 0}, fn pid, {checks, hits} ->
        receive do
          {:stale, ^pid, seen, confirmed} ->
            flunk("a cached read returned #{inspect(seen)} after #{confirmed} was confirmed")

          {:done, ^pid, c, h} ->
            {checks + c, hits + h}
        after
          30_000 -> flunk("a reader did not finish")
        end
      end)

    stats = RedixRs.Cache.stats(a)
    assert checks > 10_000, "only #{checks} checked reads"
    assert hits > 1_000 and stats.hits > 1_000, inspect(stats)
    assert stats.invalidations > 1_000, inspect(stats)

    {:ok, info} = RedixRs.command(a, ["CLIENT", "TRACKINGINFO"])
    assert "optin" in info["flags"], "tracking is on after the restart: #{inspect(info)}"
    RedisServer.stop(server)
  end

  defp read_loop(conn, k, state, test, checks, hits) do
    if :atomics.get(state, 3) == 1 do
      send(test, {:done, self(), checks, hits})
    else
      restarts = :atomics.get(state, 2)
      confirmed = :atomics.get(state, 1)
      result = RedixRs.command(conn, ["GET", k], cache: true, timeout: 2_000)

      {checks, hits} =
        case result do
          {:ok, value} when restarts == 0 or value != nil ->
            seen = if value, do: String.to_integer(value), else: 0

            # Only reads that began and ended within one server's life are judged.
            if seen < confirmed and restarts == :atomics.get(state, 2) do
              send(test, {:stale, self(), value, confirmed})
            end

            {checks + 1, hits + if(seen >= confirmed, do: 1, else: 0)}

          _ ->
            {checks, hits}
        end

      Process.sleep(1)
      read_loop(conn, k, state, test, checks, hits)
    end
  end

  test "a million distinct keys read: entries and bytes stay within their limits" do
    # Redis forgets (and invalidates) tracked keys past 100,000: its memory stays small, and those
    # invalidations are handled along the way.
    server = start_server(["--tracking-table-max-keys", "100000"])
    limits = [max_entries: 500, max_bytes: 300_000]
    a = cached(server, limits)
    test = self()
    watcher = spawn_link(fn -> watch_bounds(a, limits, test) end)

    # 200,000 cached MGETs of 5 distinct keys each: short keys first (the entry count binds), then
    # long ones (the byte count binds).
    long = String.duplicate("x", 200)
    read_all(a, 1..100, &"s:#{&1}")
    %{evictions: evicted_short} = RedixRs.Cache.stats(a)
    read_all(a, 101..200, &"l:#{long}:#{&1}")

    send(watcher, {:stop, self()})
    assert_receive {:watched, samples, max_entries_seen, max_bytes_seen}, 5_000
    stats = RedixRs.Cache.stats(a)
    assert stats.misses == 200_000
    # Every reply was cached, or refused because an invalidation came between its read and its
    # fill (Redis invalidates keys it stops tracking, and epochs are shared by hash: see `epochs`).
    # Every entry cached went because of the limits or an invalidation, or is still there.
    cached = stats.misses - stats.refused_fills
    assert cached > 20_000, inspect(stats)
    assert stats.evictions + stats.invalidations + stats.entries == cached, inspect(stats)
    assert stats.evictions > 10_000, inspect(stats)
    assert stats.entries <= 500 and stats.bytes <= 300_000, inspect(stats)
    assert samples > 5
    # Both limits were reached: 500 short entries (about 320 bytes each); then long ones (about
    # 1,350 bytes each), evicted by bytes at about 220 entries.
    assert max_entries_seen == 500, inspect({max_entries_seen, max_bytes_seen})
    assert max_bytes_seen > 250_000, inspect({max_entries_seen, max_bytes_seen})
    assert stats.evictions > evicted_short, inspect(stats)
    assert stats.entries <= 250 and stats.bytes > 250_000, inspect(stats)
  end

  # Cached MGETs of 5 keys, 1,000 per chunk (`name` makes a key of a number: 5,000 keys per chunk),
  # 100 chunks at once.
  defp read_all(conn, chunks, name) do
    chunks
    |> Task.async_stream(
      fn chunk ->
        for n <- (chunk * 1_000 - 999)..(chunk * 1_000) do
          keys = for i <- (n * 5 - 4)..(n * 5), do: name.(i)

          {:ok, [nil, nil, nil, nil, nil]} =
            RedixRs.command(conn, ["MGET" | keys], cache: true, timeout: 30_000)
        end

        :ok
      end,
      max_concurrency: 100,
      timeout: 120_000,
      ordered: false
    )
    |> Stream.run()
  end

  defp watch_bounds(conn, limits, test, samples \\ 0, max_e \\ 0, max_b \\ 0) do
    receive do
      {:stop, from} -> send(from, {:watched, samples, max_e, max_b})
    after
      20 ->
        %{entries: e, bytes: b} = RedixRs.Cache.stats(conn)

        if e > limits[:max_entries] or b > limits[:max_bytes] do
          send(test, {:over, e, b})
          flunk("over the limits: #{e} entries, #{b} bytes")
        end

        watch_bounds(conn, limits, test, samples + 1, max(max_e, e), max(max_b, b))
    end
  end

  test "hot keys survive a scan of cold ones" do
    server = start_server()
    a = cached(server, max_entries: 1_000)
    b = plain(server)
    hot = for n <- 1..100, do: "hot:#{n}"
    RedixRs.pipeline!(b, Enum.map(hot, &["SET", &1, "value of #{&1}"]))

    for _ <- 1..3, k <- hot, do: {:ok, _} = RedixRs.command(a, ["GET", k], cache: true)

    1..50
    |> Task.async_stream(
      fn chunk ->
        for n <- (chunk * 1_000 - 999)..(chunk * 1_000) do
          {:ok, nil} = RedixRs.command(a, ["GET", "cold:#{n}"], cache: true)
        end
      end,
      max_concurrency: 50,
      timeout: 60_000
    )
    |> Stream.run()

    before = RedixRs.cache_stats(a)
    assert before.evictions >= 49_000

    for k <- hot,
        do: assert({:ok, "value of " <> ^k} = RedixRs.command(a, ["GET", k], cache: true))

    after_ = RedixRs.cache_stats(a)
    assert after_.hits - before.hits == 100, "hot keys were evicted: #{inspect(after_)}"
    assert after_.misses == before.misses
  end

  test "broadcast mode: prefixes the user names, no CLIENT CACHING" do
    server = start_server()
    a = cached(server, mode: :broadcast, prefixes: ["user:", "flag:"])
    b = plain(server)

    {:ok, info} = RedixRs.command(a, ["CLIENT", "TRACKINGINFO"])
    assert "bcast" in info["flags"] and Enum.sort(info["prefixes"]) == ["flag:", "user:"]

    RedixRs.command!(b, ["SET", "user:1", "ann"])
    # Broadcast mode reports that SET to `a` too; a round trip on `a` takes the report in first (a
    # read whose ticket it overtook would rightly not be cached, and the next read would miss).
    RedixRs.command!(a, ["PING"])
    assert {:ok, "ann"} = RedixRs.command(a, ["GET", "user:1"], cache: true)
    assert {:ok, "ann"} = RedixRs.command(a, ["GET", "user:1"], cache: true)
    assert {:ok, [nil, "ann"]} = RedixRs.command(a, ["MGET", "flag:x", "user:1"], cache: true)
    assert %{hits: 1, misses: 2} = RedixRs.cache_stats(a)

    for i <- 1..100 do
      RedixRs.command!(b, ["SET", "user:1", "v#{i}"])
      RedixRs.command!(a, ["PING"])
      assert {:ok, "v" <> n} = RedixRs.command(a, ["GET", "user:1"], cache: true)
      assert n == Integer.to_string(i)
    end

    # Written but never read here: Redis reports it all the same, and nothing is cached.
    RedixRs.command!(b, ["SET", "flag:y", "1"])
    RedixRs.command!(a, ["PING"])
    assert {:ok, [nil, "v100"]} = RedixRs.command(a, ["MGET", "flag:x", "user:1"], cache: true)
    RedixRs.command!(b, ["SET", "flag:x", "on"])
    RedixRs.command!(a, ["PING"])
    assert {:ok, ["on", "v100"]} = RedixRs.command(a, ["MGET", "flag:x", "user:1"], cache: true)

    for command <- [["GET", "other:1"], ["MGET", "user:1", "other:1"]] do
      assert_raise ArgumentError, ~r/not under any of the broadcast prefixes/, fn ->
        RedixRs.command(a, command, cache: true)
      end
    end
  end

  test "each counter of cache_stats/1" do
    server = start_server()
    a = cached(server, max_entries: 10)
    b = plain(server)
    assert RedixRs.cache_stats(a) == %{hits: 0, misses: 0, evictions: 0, invalidations: 0}

    for n <- 1..30, do: RedixRs.command!(a, ["GET", "counter:#{n}"], cache: true)
    assert %{misses: 30, hits: 0, evictions: 20, invalidations: 0} = RedixRs.cache_stats(a)

    for n <- 21..30, do: RedixRs.command!(a, ["GET", "counter:#{n}"], cache: true)
    assert %{misses: 30, hits: 10, evictions: 20} = RedixRs.cache_stats(a)

    for n <- 21..25, do: RedixRs.command!(b, ["SET", "counter:#{n}", n])
    RedixRs.command!(a, ["PING"])
    assert %{invalidations: 5} = RedixRs.cache_stats(a)

    RedixRs.command!(b, ["FLUSHALL"])
    RedixRs.command!(a, ["PING"])
    assert %{invalidations: 10, misses: 30, hits: 10, evictions: 20} = RedixRs.cache_stats(a)
    assert Helpers.eventually(fn -> RedixRs.Cache.stats(a).entries == 0 end)
  end
end
