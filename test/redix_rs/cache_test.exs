defmodule RedixRs.CacheTest do
  # Client-side caching against a real redis-server: a hit answered in the caller's process, kept
  # correct by RESP3 invalidations (writes through another connection, FLUSHALL, a disconnection),
  # bounded in entries and bytes, broadcast mode, the counters, and the ArgumentErrors.
  use ExUnit.Case, async: true

  @moduletag :capture_log

  alias RedixRs.Test.RedisServer

  setup_all do
    server = RedisServer.start(owner: self())
    on_exit(fn -> RedisServer.stop(server) end)
    %{server: server}
  end

  defp cached(server, cache_opts, extra \\ []) do
    opts = [port: server.port, protocol: :resp3, client_cache: cache_opts, sync_connect: true]
    {:ok, conn} = RedixRs.start_link(Keyword.merge(opts, extra))
    conn
  end

  defp plain(server) do
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)
    conn
  end

  defp key(name), do: "#{name}:#{System.unique_integer([:positive])}"

  defp stats(conn), do: RedixRs.Cache.stats(conn)

  describe "hits and misses" do
    test "a second read is a hit, answered without a round trip", %{server: server} do
      a = cached(server, [])
      b = plain(server)
      k = key("hit")
      RedixRs.command!(b, ["SET", k, "v1"])
      assert {:ok, "v1"} = RedixRs.command(a, ["GET", k], cache: true)
      assert %{hits: 0, misses: 1} = RedixRs.cache_stats(a)
      assert {:ok, "v1"} = RedixRs.command(a, ["GET", k], cache: true)
      assert %{hits: 1, misses: 1} = RedixRs.cache_stats(a)

      # Answered from memory: the server is stopped (SIGSTOP) and the hit still comes at once.
      :ok = RedisServer.os_kill(server, "STOP")

      try do
        assert {:ok, "v1"} = RedixRs.command(a, ["GET", k], cache: true, timeout: 500)
      after
        :ok = RedisServer.os_kill(server, "CONT")
      end

      # Reads without cache: true are not cached, and not counted.
      assert {:ok, "v1"} = RedixRs.command(a, ["GET", k])
      assert %{hits: 2, misses: 1} = RedixRs.cache_stats(a)
    end

    test "replies of every shape come back as they would uncached", %{server: server} do
      a = cached(server, [])
      [h, s, z, l, m1, m2] = for n <- ~w(h s z l m1 m2), do: key(n)

      RedixRs.pipeline!(a, [
        ["HSET", h, "f", "1", "g", "2"],
        ["SADD", s, "x", "y"],
        ["ZADD", z, "1.5", "a", "2", "b"],
        ["RPUSH", l, "1", "2", "3"],
        ["SET", m1, "one"]
      ])

      reads = [
        ["HGETALL", h],
        ["HGET", h, "f"],
        ["HMGET", h, "f", "nope"],
        ["SMEMBERS", s],
        ["SISMEMBER", s, "x"],
        ["ZSCORE", z, "a"],
        ["ZRANGE", z, 0, -1, "WITHSCORES"],
        ["LRANGE", l, 0, -1],
        ["STRLEN", m1],
        ["EXISTS", m1, m2],
        ["MGET", m1, m2],
        ["GET", m2]
      ]

      for read <- reads do
        uncached = RedixRs.command(a, read)
        assert RedixRs.command(a, read, cache: true) == uncached, inspect(read)
        assert RedixRs.command(a, read, cache: true) == uncached, inspect(read)
      end

      assert %{hits: 12, misses: 12} = RedixRs.cache_stats(a)
    end

    test "error replies are not cached", %{server: server} do
      a = cached(server, [])
      k = key("wrongtype")
      RedixRs.command!(a, ["RPUSH", k, "x"])

      for _ <- 1..2 do
        assert {:error, %RedixRs.Error{message: "WRONGTYPE" <> _}} =
                 RedixRs.command(a, ["GET", k], cache: true)
      end

      assert %{hits: 0, misses: 2} = RedixRs.cache_stats(a)
      assert %{entries: 0} = stats(a)
    end

    test "arguments are converted as for command/3 (integers, atoms)", %{server: server} do
      a = cached(server, [])
      k = key("conv")
      RedixRs.command!(a, ["RPUSH", k, "a", "b", "c"])
      assert {:ok, ["a", "b"]} = RedixRs.command(a, [:lrange, k, 0, 1], cache: true)
      assert {:ok, ["a", "b"]} = RedixRs.command(a, ["LRANGE", k, "0", "1"], cache: true)
      assert %{hits: 1, misses: 1} = RedixRs.cache_stats(a)
      # A float goes through RedixRs.Command's conversion first.
      f = key("float")
      assert {:ok, nil} = RedixRs.command(a, ["HGET", f, 1.5], cache: true)
      assert {:ok, nil} = RedixRs.command(a, ["HGET", f, "1.5"], cache: true)
      assert %{hits: 2, misses: 2} = RedixRs.cache_stats(a)
    end
  end

  describe "invalidation" do
    test "a write elsewhere, then a round trip, and the cached read sees it", %{server: server} do
      a = cached(server, [])
      b = plain(server)
      k = key("inv")

      for i <- 1..200 do
        RedixRs.command!(b, ["SET", k, i])
        assert {:ok, "PONG"} = RedixRs.command(a, ["PING"])
        assert {:ok, value} = RedixRs.command(a, ["GET", k], cache: true)
        assert value == Integer.to_string(i)
        assert {:ok, ^value} = RedixRs.command(a, ["GET", k], cache: true)
      end

      assert %{hits: 200, misses: 200, invalidations: inv} = RedixRs.cache_stats(a)
      assert inv >= 199
    end

    test "a write on the caching connection itself invalidates too (no NOLOOP)", %{server: server} do
      a = cached(server, [])
      k = key("self")
      RedixRs.command!(a, ["SET", k, "1"])
      assert {:ok, "1"} = RedixRs.command(a, ["GET", k], cache: true)
      RedixRs.command!(a, ["SET", k, "2"])
      assert {:ok, "2"} = RedixRs.command(a, ["GET", k], cache: true)
    end

    test "a multi-key read is dropped when any of its keys changes", %{server: server} do
      a = cached(server, [])
      b = plain(server)
      [x, y] = [key("x"), key("y")]

      for {written, n} <- [{x, 1}, {y, 2}] do
        RedixRs.command(a, ["MGET", x, y], cache: true)
        assert %{entries: 1} = stats(a)
        RedixRs.command!(b, ["SET", written, n])
        RedixRs.command!(a, ["PING"])
        assert %{entries: 0} = stats(a)
      end

      assert {:ok, ["1", "2"]} = RedixRs.command(a, ["MGET", x, y], cache: true)
    end

    test "FLUSHALL empties the cache" do
      server = RedisServer.start(owner: self())
      on_exit(fn -> RedisServer.stop(server) end)
      a = cached(server, [])
      b = plain(server)

      for n <- 1..20, do: RedixRs.command!(a, ["GET", "flush:#{n}"], cache: true)
      assert %{entries: 20} = stats(a)
      RedixRs.command!(b, ["FLUSHALL"])
      RedixRs.command!(a, ["PING"])
      assert %{entries: 0, invalidations: 20} = stats(a)
    end

    test "a disconnection empties the cache; tracking is back on after reconnecting",
         %{server: server} do
      a = cached(server, [], backoff_initial: 10)
      b = plain(server)
      k = key("kill")
      RedixRs.command!(b, ["SET", k, "before"])
      assert {:ok, "before"} = RedixRs.command(a, ["GET", k], cache: true)
      {:ok, id} = RedixRs.command(a, ["CLIENT", "ID"])
      RedixRs.command!(b, ["CLIENT", "KILL", "ID", id])
      assert RedixRs.Test.Helpers.eventually(fn -> stats(a).entries == 0 end)

      assert RedixRs.Test.Helpers.eventually(fn ->
               match?({:ok, _}, RedixRs.command(a, ["PING"]))
             end)

      {:ok, tracking} = RedixRs.command(a, ["CLIENT", "TRACKINGINFO"])
      assert "on" in tracking["flags"] and "optin" in tracking["flags"]
      refute "noloop" in tracking["flags"]

      assert {:ok, "before"} = RedixRs.command(a, ["GET", k], cache: true)
      RedixRs.command!(b, ["SET", k, "after"])
      RedixRs.command!(a, ["PING"])
      assert {:ok, "after"} = RedixRs.command(a, ["GET", k], cache: true)
    end
  end

  describe "with side connections" do
    test "blocking commands go to a side connection, which neither tracks nor empties the cache",
         %{server: server} do
      a = cached(server, [], client_name: "cached-side", side_connection_idle_timeout: 50)
      k = key("side")
      q = key("side-q")
      RedixRs.command!(a, ["SET", k, "v"])
      assert {:ok, "v"} = RedixRs.command(a, ["GET", k], cache: true)

      # The BLPOP blocks a side connection, not the shared one: a GET on it is answered meanwhile.
      blpop = Task.async(fn -> RedixRs.command(a, ["BLPOP", q, "0"], timeout: 10_000) end)
      assert RedixRs.Test.Helpers.eventually(fn -> named_clients(a, "cached-side") == 2 end)
      assert {:ok, nil} = RedixRs.command(a, ["GET", key("other")])
      RedixRs.command!(a, ["RPUSH", q, "x"])
      assert {:ok, [^q, "x"]} = Task.await(blpop)

      # Once the idle side connection has closed, the entry is still there: a hit.
      assert RedixRs.Test.Helpers.eventually(fn -> named_clients(a, "cached-side") == 1 end)
      assert %{entries: 1} = stats(a)
      hits = RedixRs.cache_stats(a).hits
      assert {:ok, "v"} = RedixRs.command(a, ["GET", k], cache: true)
      assert RedixRs.cache_stats(a).hits == hits + 1
    end
  end

  describe "lifecycle" do
    test "a named connection that fails to start (sync_connect) leaves no cache published" do
      Process.flag(:trap_exit, true)
      name = :"cache_failed_start_#{System.unique_integer([:positive])}"

      assert {:error, _} =
               RedixRs.start_link(
                 name: name,
                 port: RedixRs.Test.Helpers.closed_port(),
                 protocol: :resp3,
                 client_cache: [],
                 sync_connect: true
               )

      assert :persistent_term.get({RedixRs.Cache, name}, nil) == nil
    end
  end

  defp named_clients(conn, name) do
    {:ok, list} = RedixRs.command(conn, ["CLIENT", "LIST"])
    list |> String.split("\n", trim: true) |> Enum.count(&String.contains?(&1, " name=#{name} "))
  end

  describe "ArgumentError" do
    test "client_cache without protocol: :resp3 given explicitly", %{server: server} do
      assert_raise ArgumentError, ~r/needs protocol: :resp3 given explicitly/, fn ->
        RedixRs.start_link(port: server.port, client_cache: [])
      end

      assert_raise ArgumentError, ~r/needs protocol: :resp3/, fn ->
        RedixRs.start_link(port: server.port, protocol: :resp2, client_cache: [])
      end

      assert_raise ArgumentError, ~r/invalid value for :client_cache/, fn ->
        RedixRs.start_link(port: server.port, protocol: :resp3, client_cache: [max_entries: 0])
      end

      assert_raise ArgumentError, ~r/invalid value for :client_cache/, fn ->
        RedixRs.start_link(protocol: :resp3, client_cache: [mode: :optin, prefixes: ["a"]])
      end

      assert_raise ArgumentError, ~r/unknown options \[:client_cache\]/, fn ->
        RedixRs.PubSub.start_link(protocol: :resp3, client_cache: [])
      end
    end

    test "cache: true on a connection without client_cache", %{server: server} do
      for conn <- [
            plain(server),
            elem(RedixRs.start_link(port: server.port, protocol: :resp3, sync_connect: true), 1)
          ] do
        assert_raise ArgumentError, ~r/started with the :client_cache option/, fn ->
          RedixRs.command(conn, ["GET", "k"], cache: true)
        end

        assert_raise ArgumentError, ~r/started with the :client_cache option/, fn ->
          RedixRs.cache_stats(conn)
        end
      end
    end

    test "cache: true on pipelines and transactions", %{server: server} do
      a = cached(server, [])

      for fun <- [:pipeline, :transaction_pipeline, :noreply_pipeline] do
        assert_raise ArgumentError, ~r/:cache option is for RedixRs.command\/3 only/, fn ->
          apply(RedixRs, fun, [a, [["GET", "k"]], [cache: true]])
        end
      end
    end

    test "cache: true on commands that are not cacheable", %{server: server} do
      a = cached(server, [])

      for command <- [
            ["SET", "k", "v"],
            ["TTL", "k"],
            ["SRANDMEMBER", "s"],
            ["PING"],
            ["OBJECT", "ENCODING", "k"],
            ["NOSUCHCOMMAND", "k"],
            ["GET", "a", "b"]
          ] do
        assert_raise ArgumentError, ~r/cache: true needs a cacheable read/, fn ->
          RedixRs.command(a, command, cache: true)
        end
      end

      assert_raise ArgumentError, ~r/expected cache: true or false/, fn ->
        RedixRs.command(a, ["GET", "k"], cache: :yes)
      end

      assert %{misses: 0, hits: 0} = RedixRs.cache_stats(a)
      assert {:ok, "OK"} = RedixRs.command(a, ["SET", "k", "v"], cache: false)
    end
  end
end
