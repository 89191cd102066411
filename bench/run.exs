# Side-by-side benchmarks (`make bench`): redix_rs and eredis on the same private redis-server in one
# run, a warm-up round each, then rounds alternating, best round kept; redis-benchmark on the same server as the ceiling. Prints a
# table and appends it, with the date and machine, to bench/RESULTS.md.
alias RedixRs.Bench.{Ceiling, Clients, Fanout, Scenarios}
alias RedixRs.Test.RedisServer

defmodule RedixRs.Bench.Report do
  def ops(%{ops: ops, micros: micros}), do: ops / (micros / 1_000_000)

  def percentile(%{latencies: l}, p) when l != [] do
    sorted = Enum.sort(l)
    Enum.at(sorted, min(length(sorted) - 1, round(p * length(sorted))))
  end

  def percentile(_, _), do: nil

  def cell(nil), do: "n/a"

  def cell(r) do
    "#{round(ops(r))} ops/s (p50 #{fmt(percentile(r, 0.5))} µs, p99 #{fmt(percentile(r, 0.99))} µs)"
  end

  def fmt(nil), do: "-"
  def fmt(x) when is_float(x), do: :erlang.float_to_binary(x, decimals: 1)
  def fmt(x), do: "#{x}"

  def ratio(nil, _), do: "n/a"
  def ratio(_, nil), do: "n/a"
  def ratio(a, b), do: "#{Float.round(ops(a) / ops(b), 2)}x"
end

alias RedixRs.Bench.Report

certs = RedixRs.Test.TLSCerts.generate!(Path.join(System.tmp_dir!(), "redix_rs_bench_tls"))

server =
  RedisServer.start(tls: [cert_file: certs.cert, key_file: certs.key, ca_cert_file: certs.ca])

port = server.port
Scenarios.prepare(port)
clients = Enum.filter([:redix_rs, :eredis], &Clients.available?/1)
rounds = String.to_integer(System.get_env("BENCH_ROUNDS", "3"))

scenarios = [
  {"a: 1 process, 20,000 GET (32 B)", &Scenarios.sequential_get(&1, port),
   ["-c", "1", "-n", "20000", "-t", "get"]},
  {"b: 200 procs x 500 GET, 1 conn", &Scenarios.concurrent_get(&1, port),
   ["-P", "100", "-n", "2000000", "-t", "get"]},
  {"c: 200 procs x 500 GET, 8 conns", &Scenarios.concurrent_get(&1, port, 200, 500, 8), nil},
  {"d: 50 pipelines x 1,000 SET", &Scenarios.pipelined_set(&1, port),
   ["-P", "100", "-n", "2000000", "-t", "set"]},
  {"e: 1 process, 10,000 GET (16 KiB)", &Scenarios.get_16k(&1, port),
   ["-c", "1", "-n", "10000", "-d", "16384", "-t", "get"]},
  {"g: 1 process, 500 GET (1 MiB)", &Scenarios.get_1m(&1, port), nil}
]

header =
  "| scenario | redix_rs | eredis | redix_rs/eredis | ceiling (redis-benchmark) | redix_rs/ceiling |"

IO.puts(header)
IO.puts("|---|---|---|---|---|---|")

rows =
  for {name, fun, ceiling_args} <- scenarios do
    # One discarded warm-up round per client first: the first runs after start-up are slower for both
    # clients (allocator carriers, Redis's buffers), which made best-of-rounds depend on order.
    Enum.each(clients, fun)
    results = for _ <- 1..rounds, client <- clients, do: {client, fun.(client)}

    best = fn client ->
      case Keyword.get_values(results, client) do
        [] -> nil
        rs -> Enum.max_by(rs, &Report.ops/1)
      end
    end

    {ours, theirs} = {best.(:redix_rs), best.(:eredis)}
    ceiling = ceiling_args && Ceiling.rps(port, ceiling_args)
    # The ceiling is measured after SET scenarios overwrite keys; re-seed the values GETs read.
    Scenarios.prepare(port)

    row =
      "| #{name} | #{Report.cell(ours)} | #{Report.cell(theirs)} | #{Report.ratio(ours, theirs)} | " <>
        if(ceiling,
          do: "#{round(ceiling)} ops/s | #{Float.round(Report.ops(ours) / ceiling, 2)}x |",
          else: "- | - |"
        )

    IO.puts(row)
    row
  end

# d's ceiling (-P 100) is 50 clients keeping Redis busy; one client sending 1,000-command pipelines one
# after another, as d does, is bounded lower by Redis itself: redis-benchmark doing just that.
single = Ceiling.rps(port, ["-c", "1", "-P", "1000", "-n", "1000000", "-t", "set"])
Scenarios.prepare(port)

single_row =
  "| d reference: redis-benchmark itself as one client, 1,000-SET pipelines in sequence | - | - | - | " <>
    "#{round(single)} ops/s (-c 1 -P 1000) | see d |"

IO.puts(single_row)

# a over TLS, side by side with plain TCP (redix_rs both times; eredis has no TLS here).
tls_rounds =
  for _ <- 1..rounds,
      do:
        {Scenarios.sequential_get(:redix_rs, port),
         Scenarios.sequential_get_tls(server.tls_port, certs.ca)}

plain = tls_rounds |> Enum.map(&elem(&1, 0)) |> Enum.max_by(&Report.ops/1)
tls = tls_rounds |> Enum.map(&elem(&1, 1)) |> Enum.max_by(&Report.ops/1)

tls_row =
  "| a over TLS (rustls): 1 process, 20,000 GET | #{Report.cell(tls)} | plain TCP, same run: #{Report.cell(plain)} | " <>
    "TLS/plain #{Float.round(Report.ops(tls) / Report.ops(plain), 2)}x | - | - |"

IO.puts(tls_row)

m = Scenarios.noreply_memory(port)

m_row =
  "| m: noreply_pipeline of 1,000,000 SET | #{round(Report.ops(m))} ops/s; memory growth: BEAM " <>
    "#{div(m.beam_growth, 1_048_576)} MiB, RSS #{div(m.rss_growth, 1_048_576)} MiB | n/a (no noreply in eredis) | - | - | - |"

IO.puts(m_row)

fanout =
  for _ <- 1..rounds, client <- clients do
    r = Fanout.run(client, port)
    {client, r.deliveries / (r.micros / 1_000_000)}
  end

best_fan = fn client -> fanout |> Keyword.get_values(client) |> Enum.max(fn -> nil end) end
fan_ours = best_fan.(:redix_rs)
fan_theirs = best_fan.(:eredis)

fan_row =
  "| fan-out: 1 publisher, 100 subscribers, 10,000 messages | #{round(fan_ours)} deliveries/s | " <>
    if(fan_theirs,
      do: "#{round(fan_theirs)} deliveries/s | #{Float.round(fan_ours / fan_theirs, 2)}x",
      else: "n/a | n/a"
    ) <>
    " | - | - |"

IO.puts(fan_row)
RedisServer.stop(server)

{cpu, _} = System.cmd("sh", ["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"])

machine =
  "#{System.schedulers_online()} schedulers, #{String.trim(cpu)}, OTP #{System.otp_release()}, " <>
    "Elixir #{System.version()}, tokio workers #{System.get_env("REDIX_RS_TOKIO_WORKERS", "1")}"

results_path = Path.join(__DIR__, "RESULTS.md")

entry = """

## #{DateTime.utc_now() |> DateTime.truncate(:second) |> DateTime.to_iso8601()} — #{machine}

#{header}
|---|---|---|---|---|---|
#{Enum.join(rows ++ [single_row, tls_row, m_row, fan_row], "\n")}
"""

unless File.exists?(results_path) do
  File.write!(
    results_path,
    "# Benchmark results\n\nAppended by `make bench` (bench/run.exs), newest last.\n"
  )
end

File.write!(results_path, entry, [:append])
IO.puts("\nAppended to #{results_path}")
