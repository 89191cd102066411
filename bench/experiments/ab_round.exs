# One round of the scenarios an A/B comparison of two builds needs, redix_rs only, on a private
# redis-server: prints one line `name ops_per_s` per scenario. Run it alternately from two checkouts
# (the same script copied into each) and compare medians:
#
#     for i in 1 2 3 4 5; do (cd ../before && MIX_ENV=bench mix run bench/experiments/ab_round.exs);
#                            (cd ../after && MIX_ENV=bench mix run bench/experiments/ab_round.exs); done
alias RedixRs.Bench.{Fanout, Scenarios}

server = RedixRs.Test.RedisServer.start([])
Scenarios.prepare(server.port)

# A warm-up round, not reported.
Scenarios.concurrent_get(:redix_rs, server.port)

results = [
  {"a", Scenarios.sequential_get(:redix_rs, server.port)},
  {"b", Scenarios.concurrent_get(:redix_rs, server.port)},
  {"c", Scenarios.concurrent_get(:redix_rs, server.port, 200, 500, 8)},
  {"d", Scenarios.pipelined_set(:redix_rs, server.port)},
  {"e", Scenarios.get_16k(:redix_rs, server.port)},
  {"g", Scenarios.get_1m(:redix_rs, server.port)},
  {"fanout", Fanout.run(:redix_rs, server.port)}
]

for {name, r} <- results do
  done = Map.get(r, :ops) || Map.fetch!(r, :deliveries)
  IO.puts("#{name} #{round(done / (r.micros / 1_000_000))}")
end

RedixRs.Test.RedisServer.stop(server)
