# Scenarios a and b (and b20: b with 20 callers) through bench/latency_proxy (0.5 ms each way by
# default), redix_rs and eredis side by side, with p50/p99 per call. `LATENCY_ROUNDS` rounds (default
# 5) alternating clients; the table shows the median round (by ops/s) of each client, and the p50/p99
# of all its calls in all rounds. The proxy's own precision (how late it released chunks) is printed
# on stderr per connection.
#
#     MIX_ENV=bench mix run bench/latency.exs
#     LATENCY_DELAY_US=250 LATENCY_ROUNDS=3 MIX_ENV=bench mix run bench/latency.exs
#
# eredis runs with its default socket options, which do not set TCP_NODELAY (Nagle's algorithm may
# hold a small write until the previous one is acknowledged); redix_rs sets it.
alias RedixRs.Bench.Latency

rounds = String.to_integer(System.get_env("LATENCY_ROUNDS", "5"))
delay_us = String.to_integer(System.get_env("LATENCY_DELAY_US", "500"))

ops = fn %{ops: n, micros: us} -> n / (us / 1_000_000) end

percentile = fn sorted, p ->
  Enum.at(sorted, min(length(sorted) - 1, round(p * length(sorted))))
end

cell = fn
  nil ->
    "n/a"

  results ->
    median = results |> Enum.map(ops) |> Enum.sort() |> Enum.at(div(length(results), 2))
    all = results |> Enum.flat_map(& &1.latencies) |> Enum.sort()
    "#{round(median)} ops/s (p50 #{percentile.(all, 0.5)} µs, p99 #{percentile.(all, 0.99)} µs)"
end

results = Latency.run(rounds, delay_us: delay_us, proxy_log: true)

IO.puts("| scenario (through latency_proxy) | redix_rs | eredis |")
IO.puts("|---|---|---|")

for {name, per_client} <- results do
  IO.puts("| #{name} | #{cell.(per_client[:redix_rs])} | #{cell.(per_client[:eredis])} |")
end
