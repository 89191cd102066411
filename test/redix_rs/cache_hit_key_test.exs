defmodule RedixRs.CacheHitKeyTest do
  # A hit encodes its cache key from the command's terms (on the stack when it is short, else in a
  # buffer of its own); the fill encodes it from the decoded arguments. Both must give the same
  # bytes for every form of argument, or a cached read would never hit (or, worse, hit another
  # command's entry). Against a real redis-server.
  use ExUnit.Case, async: true

  @moduletag :capture_log

  alias RedixRs.Test.RedisServer

  setup_all do
    server = RedisServer.start(owner: self())
    on_exit(fn -> RedisServer.stop(server) end)
    %{server: server}
  end

  setup %{server: server} do
    opts = [port: server.port, protocol: :resp3, client_cache: [], sync_connect: true]
    {:ok, conn} = RedixRs.start_link(opts)
    %{conn: conn}
  end

  defp key(name), do: "#{name}:#{System.unique_integer([:positive])}"

  # The first read misses, the second hits: the hit found the entry the fill made.
  defp hits_after_fill(conn, command, expected) do
    before = RedixRs.cache_stats(conn)
    assert {:ok, ^expected} = RedixRs.command(conn, command, cache: true)
    filled = RedixRs.cache_stats(conn)
    assert {filled.hits, filled.misses} == {before.hits, before.misses + 1}
    assert {:ok, ^expected} = RedixRs.command(conn, command, cache: true)
    now = RedixRs.cache_stats(conn)

    assert {now.hits, now.misses} == {before.hits + 1, before.misses + 1},
           "#{inspect(command, limit: 5, printable_limit: 40)} did not hit after its fill"
  end

  test "keys of every length around the stack buffer's size hit", %{conn: conn} do
    # 200 to 300 bytes: the encoded key crosses the 256 bytes a hit encodes on the stack.
    for len <- [1, 9, 10, 99, 100, 200, 230, 240, 245, 250, 255, 256, 300, 1000, 70_000] do
      k = String.pad_trailing(key("len"), len, "x")
      RedixRs.command!(conn, ["SET", k, "v#{len}"])
      hits_after_fill(conn, ["GET", k], "v#{len}")
    end
  end

  test "names in any case share one entry; arguments do not fold", %{conn: conn} do
    k = key("case")
    RedixRs.command!(conn, ["SET", k, "v"])
    hits_after_fill(conn, ["gEt", k], "v")
    %{hits: hits} = RedixRs.cache_stats(conn)
    assert {:ok, "v"} = RedixRs.command(conn, ["GET", k], cache: true)
    assert {:ok, "v"} = RedixRs.command(conn, ["get", k], cache: true)
    assert %{hits: now} = RedixRs.cache_stats(conn)
    assert now == hits + 2
    # Another key in upper case is another entry (a miss, then nil).
    assert {:ok, nil} = RedixRs.command(conn, ["GET", String.upcase(k)], cache: true)
  end

  test "integers (negative, large) and atoms key as their strings do", %{conn: conn} do
    l = key("list")
    RedixRs.command!(conn, ["RPUSH", l, "a", "b", "c"])
    hits_after_fill(conn, ["LRANGE", l, -2, -1], ["b", "c"])
    %{hits: hits} = RedixRs.cache_stats(conn)
    assert {:ok, ["b", "c"]} = RedixRs.command(conn, ["LRANGE", l, "-2", "-1"], cache: true)
    assert {:ok, ["b", "c"]} = RedixRs.command(conn, [:lrange, l, -2, "-1"], cache: true)
    assert %{hits: now} = RedixRs.cache_stats(conn)
    assert now == hits + 2

    big = 9_223_372_036_854_775_807
    hits_after_fill(conn, ["LRANGE", l, -9_223_372_036_854_775_808, big], ["a", "b", "c"])
    hits_after_fill(conn, ["LRANGE", l, 0, 0], ["a"])

    # An atom key (nil renders as "").
    RedixRs.command!(conn, ["SET", "", "empty"])
    hits_after_fill(conn, ["GET", nil], "empty")
  end

  test "ten and more arguments (a two-digit count)", %{conn: conn} do
    keys = for n <- 1..12, do: key("m#{n}")
    RedixRs.command!(conn, ["MSET" | Enum.flat_map(keys, &[&1, "v"])])
    hits_after_fill(conn, ["MGET" | keys], List.duplicate("v", 12))
  end

  test "replies of any size hit: short, around 4096 bytes, and large", %{conn: conn} do
    for size <- [0, 1, 7, 8, 15, 31, 32, 33, 4095, 4096, 4097, 100_000] do
      k = key("size")
      value = :binary.copy("z", size)
      RedixRs.command!(conn, ["SET", k, value])
      hits_after_fill(conn, ["GET", k], value)
    end
  end
end
