defmodule RedixRs.MultiplexingTest do
  # Many processes on ONE connection: replies matched to callers, in order, nothing lost or crossed.
  use ExUnit.Case, async: true

  alias RedixRs.Test.Servers

  setup do
    {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    %{conn: conn, prefix: "mux:#{System.unique_integer([:positive])}:"}
  end

  test "1,000 processes x 100 INCR on one connection end at exactly 100,000", %{
    conn: c,
    prefix: p
  } do
    key = p <> "counter"

    1..1_000
    |> Enum.map(fn _ ->
      Task.async(fn -> for _ <- 1..100, do: {:ok, _} = RedixRs.command(c, ["INCR", key]) end)
    end)
    |> Task.await_many(60_000)

    assert RedixRs.command(c, ["GET", key]) == {:ok, "100000"}
  end

  test "each INCR reply is seen by exactly one caller", %{conn: c, prefix: p} do
    key = p <> "unique"

    replies =
      1..200
      |> Enum.map(fn _ ->
        Task.async(fn -> for _ <- 1..50, do: RedixRs.command!(c, ["INCR", key]) end)
      end)
      |> Task.await_many(60_000)
      |> List.flatten()

    assert Enum.sort(replies) == Enum.to_list(1..10_000)
  end

  test "200 processes interleaving SET/GET of their own keys never see another's value",
       %{conn: c, prefix: p} do
    results =
      1..200
      |> Enum.map(fn i ->
        Task.async(fn ->
          for j <- 1..100 do
            value = "#{i}:#{j}:" <> :crypto.strong_rand_bytes(8)
            {:ok, "OK"} = RedixRs.command(c, ["SET", "#{p}#{i}", value])
            {:ok, ^value} = RedixRs.command(c, ["GET", "#{p}#{i}"])

            {:ok, [^value, "OK", "x"]} =
              RedixRs.pipeline(c, [
                ["GET", "#{p}#{i}"],
                ["SET", "#{p}#{i}:x", "x"],
                ["GET", "#{p}#{i}:x"]
              ])
          end

          :done
        end)
      end)
      |> Task.await_many(60_000)

    assert Enum.all?(results, &(&1 == :done))
  end

  test "a 10 MiB binary with NUL bytes round-trips", %{conn: c, prefix: p} do
    value = :crypto.strong_rand_bytes(10 * 1024 * 1024 - 4) <> <<0, 0, 13, 10>>
    assert {:ok, "OK"} = RedixRs.command(c, ["SET", p <> "big", value], timeout: 30_000)
    assert {:ok, ^value} = RedixRs.command(c, ["GET", p <> "big"], timeout: 30_000)
    assert {:ok, 10_485_760} = RedixRs.command(c, ["STRLEN", p <> "big"])
  end

  test "large values from several processes at once stay whole", %{conn: c, prefix: p} do
    1..8
    |> Enum.map(fn i ->
      Task.async(fn ->
        value = :binary.copy(<<i>>, 300_000 + i)
        {:ok, "OK"} = RedixRs.command(c, ["SET", "#{p}v#{i}", value])
        {:ok, ^value} = RedixRs.command(c, ["GET", "#{p}v#{i}"])
      end)
    end)
    |> Task.await_many(30_000)
  end

  test "a pipeline of 100,000 commands returns 100,000 replies in order", %{conn: c, prefix: p} do
    key = p <> "seq"
    commands = for i <- 1..100_000, do: ["RPUSH", key, i]
    assert {:ok, replies} = RedixRs.pipeline(c, commands, timeout: 60_000)
    assert replies == Enum.to_list(1..100_000)

    gets = for i <- 0..99_999, do: ["LINDEX", key, i]
    assert {:ok, values} = RedixRs.pipeline(c, gets, timeout: 60_000)
    assert values == Enum.map(1..100_000, &Integer.to_string/1)
  end

  test "callers blocked behind a slow command still get their own replies", %{conn: c, prefix: p} do
    slow = Task.async(fn -> RedixRs.command(c, ["BLPOP", p <> "nothing", "0.2"]) end)
    Process.sleep(20)
    fast = Task.async(fn -> RedixRs.command(c, ["ECHO", "after"]) end)
    assert Task.await(slow) == {:ok, nil}
    assert Task.await(fast) == {:ok, "after"}
  end
end
