# Client-side caching, alone: `MIX_ENV=bench mix run bench/cache.exs` (BENCH_ROUNDS, default 5).
# 200 processes × cached GET of 100 hot keys on one connection, side by side with the same
# uncached and with eredis; then what a hit costs by NIF and by ETS. Prints Markdown tables.
alias RedixRs.Bench.Cache

rounds = String.to_integer(System.get_env("BENCH_ROUNDS", "5"))

ops = fn %{ops: ops, micros: micros} -> ops / (micros / 1_000_000) end
median = fn xs -> xs |> Enum.sort() |> Enum.at(div(length(xs), 2)) end

percentile = fn results, p ->
  sorted = results |> Enum.flat_map(& &1.latencies) |> Enum.sort()
  Enum.at(sorted, min(length(sorted) - 1, round(p * length(sorted))))
end

[{name, by_client}] = Cache.run(rounds)
medians = Map.new(by_client, fn {client, rs} -> {client, median.(Enum.map(rs, ops))} end)

IO.puts("\n#{name} (median of #{rounds} alternating rounds)\n")
IO.puts("| client | ops/s | p50 µs | p99 µs |")
IO.puts("|---|---|---|---|")

for client <- [:redix_rs_cached, :redix_rs, :eredis], rs = by_client[client], rs != nil do
  IO.puts(
    "| #{client} | #{round(medians[client])} | #{percentile.(rs, 0.5)} | #{percentile.(rs, 0.99)} |"
  )
end

ratio = medians[:redix_rs_cached] / medians[:redix_rs]
IO.puts("\nhits / uncached redix_rs: #{Float.round(ratio, 1)}x (required: at least 20x)")

if medians[:eredis] do
  IO.puts("hits / eredis: #{Float.round(medians[:redix_rs_cached] / medians[:eredis], 1)}x")
end

%{paths: paths} = Cache.hit_paths(rounds)
IO.puts("\nA hit, by design (median of #{rounds} alternating rounds)\n")
IO.puts("| path | p50 ns per call, 1 process | calls/s, 200 processes |")
IO.puts("|---|---|---|")

for {label, p50, many} <- paths do
  IO.puts("| #{label} | #{p50} | #{round(many)} |")
end
