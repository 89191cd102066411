# Side-by-side benchmarks: redix_rs vs eredis on the same private redis-server, in one run, runs
# alternating; redis-benchmark on the same server as the ceiling. `make bench` runs this.
alias RedixRs.Bench.{Clients, Scenarios}
alias RedixRs.Test.RedisServer

defmodule RedixRs.Bench.Report do
  def ops_per_sec(%{ops: ops, micros: micros}), do: ops / (micros / 1_000_000)

  def percentile(latencies, p) do
    sorted = Enum.sort(latencies)
    Enum.at(sorted, min(length(sorted) - 1, round(p * length(sorted))))
  end

  def line(name, results) do
    cells =
      Enum.map(results, fn {client, r} ->
        "#{client}: #{round(ops_per_sec(r))} ops/s p50 #{percentile(r.latencies, 0.5)}µs p99 #{percentile(r.latencies, 0.99)}µs"
      end)

    ratio =
      case {results[:redix_rs], results[:eredis]} do
        {a, b} when is_map(a) and is_map(b) -> Float.round(ops_per_sec(a) / ops_per_sec(b), 2)
        _ -> "n/a"
      end

    "| #{name} | #{Enum.join(cells, " | ")} | #{ratio}x |"
  end
end

server = RedisServer.start()
Scenarios.prepare(server.port)
clients = Enum.filter([:redix_rs, :eredis], &Clients.available?/1)

scenarios = [
  {"a: 1 process, 20,000 GET", &Scenarios.sequential_get(&1, server.port)},
  {"b: 200 procs x 500 GET, 1 conn", &Scenarios.concurrent_get(&1, server.port)},
  {"c: 200 procs x 500 GET, 8 conns", &Scenarios.concurrent_get(&1, server.port, 200, 500, 8)},
  {"d: 50 pipelines x 1,000 SET", &Scenarios.pipelined_set(&1, server.port)}
]

rows =
  for {name, fun} <- scenarios do
    # Alternate clients over three rounds and keep each client's best round.
    rounds = for _ <- 1..3, client <- clients, do: {client, fun.(client)}

    best =
      Enum.map(clients, fn client ->
        {client,
         rounds |> Keyword.get_values(client) |> Enum.max_by(&RedixRs.Bench.Report.ops_per_sec/1)}
      end)

    row = RedixRs.Bench.Report.line(name, best)
    IO.puts(row)
    row
  end

RedisServer.stop(server)
_ = rows
