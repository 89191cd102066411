# What the side-connection check costs a call (issue 16, point 1): two connections to one private
# redis-server, one with side connections (the submit NIF's encoder looks at each command's name as
# it encodes it) and one with `max_side_connections: 0` (it does not look). One process calls
# `pipeline/2` with 1 GET, then with 32 GETs, `n` times per round on each connection; rounds
# alternate between the two, in both orders. Prints the median over rounds of each round's median
# call time (µs).
#
#     MIX_ENV=bench mix run bench/experiments/side_check_cost.exs
defmodule RedixRs.Bench.SideCheckCost do
  def call_micros(conn, commands, n) do
    times =
      for _ <- 1..n do
        t0 = System.monotonic_time(:nanosecond)
        {:ok, _} = RedixRs.pipeline(conn, commands)
        System.monotonic_time(:nanosecond) - t0
      end

    median(times) / 1_000
  end

  def median(list), do: list |> Enum.sort() |> Enum.at(div(length(list), 2))

  def run(rounds \\ 11, n \\ 2_000) do
    server = RedixRs.Test.RedisServer.start([])
    {:ok, on} = RedixRs.start_link(port: server.port, sync_connect: true)

    {:ok, off} =
      RedixRs.start_link(port: server.port, sync_connect: true, max_side_connections: 0)

    RedixRs.command!(on, ["SET", "k", "v"])

    for {label, commands} <- [
          {"1 GET", [["GET", "k"]]},
          {"32 GETs", List.duplicate(["GET", "k"], 32)}
        ] do
      {offs, ons} =
        Enum.unzip(
          for i <- 1..rounds do
            if rem(i, 2) == 0 do
              off_us = call_micros(off, commands, n)
              {off_us, call_micros(on, commands, n)}
            else
              on_us = call_micros(on, commands, n)
              {call_micros(off, commands, n), on_us}
            end
          end
        )

      IO.puts(
        "pipeline of #{label}: median µs per call over #{rounds} rounds: " <>
          "without the check #{Float.round(median(offs), 1)}, with it #{Float.round(median(ons), 1)}"
      )
    end

    RedixRs.Test.RedisServer.stop(server)
  end
end

RedixRs.Bench.SideCheckCost.run()
