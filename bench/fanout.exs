# The pub/sub fan-out alone, side by side: `MIX_ENV=bench mix run bench/fanout.exs` (with REDIX_PATH
# for Redix, see bench/README.md). 1 publisher, 100 subscriber processes on one pub/sub connection,
# 10,000 messages; a warm-up round per client, then FANOUT_ROUNDS (default 7) rounds alternating the
# clients. Prints deliveries/s per client: median and range, and the VM's CPU time per delivery
# (all of it: publisher, subscribers, sending), which is steadier than throughput on a busy machine.
alias RedixRs.Bench.{Clients, Fanout, Report}
alias RedixRs.Test.RedisServer

rounds = String.to_integer(System.get_env("FANOUT_ROUNDS", "7"))
clients = Clients.all()
server = RedisServer.start([])

cpu_ms = fn ->
  [_, rest] = "/proc/self/stat" |> File.read!() |> String.split(") ", parts: 2)
  fields = String.split(rest, " ")
  # utime + stime, in clock ticks of 10 ms
  (String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))) * 10
end

Enum.each(clients, &Fanout.run(&1, server.port))

results =
  for _ <- 1..rounds, client <- clients do
    c0 = cpu_ms.()
    r = Fanout.run(client, server.port)
    cpu_us = (cpu_ms.() - c0) * 1000 / r.deliveries
    {client, {r.deliveries / (r.micros / 1_000_000), cpu_us}}
  end

RedisServer.stop(server)
ours = results |> Keyword.get_values(:redix_rs) |> Enum.map(&elem(&1, 0)) |> Report.median()

IO.puts(
  "| client | deliveries/s, median | range | CPU µs per delivery, median | redix_rs ÷ client |"
)

IO.puts("|---|--:|--:|--:|--:|")

for client <- clients do
  runs = Keyword.get_values(results, client)
  rates = Enum.map(runs, &elem(&1, 0))
  median = Report.median(rates)
  cpu = runs |> Enum.map(&elem(&1, 1)) |> Report.median()

  IO.puts(
    "| #{Report.client_name(client)} | #{Report.rate(median)} | #{Report.rate(Enum.min(rates))}–" <>
      "#{Report.rate(Enum.max(rates))} | #{:erlang.float_to_binary(cpu / 1, decimals: 2)} | " <>
      "#{:erlang.float_to_binary(ours / median, decimals: 2)}× |"
  )
end
