# Side-by-side benchmarks (`make bench`): redix_rs, eredis and (when REDIX_PATH points at a compiled
# Redix, see bench/README.md) Redix on the same private redis-server in one run. Each scenario: a
# discarded warm-up round per client, then rounds alternating clients; redis-benchmark on the same
# server as the ceiling. Suites that other modules add (RedixRs.Bench.Cluster, .Cache, .Latency: the
# interface in bench/README.md) run after, when compiled in. Ends with one summary table (medians and
# min-max across rounds, ratios), written with a picture to bench/results/ and at the top of
# bench/RESULTS.md.
#
# BENCH_ROUNDS (default 5) rounds per scenario and client, BENCH_FANOUT_ROUNDS (7) for the pub/sub
# fan-out, BENCH_SUITE_ROUNDS (3) for the added suites.
alias RedixRs.Bench.{Ceiling, Clients, Fanout, Report, Scenarios, Svg}
alias RedixRs.Test.RedisServer

int_env = fn name, default -> String.to_integer(System.get_env(name, "#{default}")) end
rounds = int_env.("BENCH_ROUNDS", 5)
fan_rounds = int_env.("BENCH_FANOUT_ROUNDS", 7)
suite_rounds = int_env.("BENCH_SUITE_ROUNDS", 3)
started = System.monotonic_time(:millisecond)
elapsed = fn -> "#{div(System.monotonic_time(:millisecond) - started, 1000)} s" end

clients = Clients.all()

IO.puts(
  "clients: #{Enum.map_join(clients, ", ", &Report.client_name/1)}" <>
    if(:redix in clients, do: "", else: " (set REDIX_PATH to add Redix: bench/README.md)") <>
    "; #{rounds} rounds (fan-out #{fan_rounds}), alternating clients, medians and min-max\n"
)

certs = RedixRs.Test.TLSCerts.generate!(Path.join(System.tmp_dir!(), "redix_rs_bench_tls"))

server =
  RedisServer.start(tls: [cert_file: certs.cert, key_file: certs.key, ca_cert_file: certs.ca])

port = server.port
Scenarios.prepare(port)

ceiling = fn args ->
  rps = Ceiling.rps(port, args)
  # The ceiling runs SETs over the keys GETs read: re-seed them.
  Scenarios.prepare(port)
  %{ops: round(rps), micros: 1_000_000, latencies: []}
end

progress = fn name, by_client ->
  line =
    by_client
    |> Enum.sort_by(fn {c, _} ->
      Enum.find_index([:redix_rs, :eredis, :redix], &(&1 == c)) || 9
    end)
    |> Enum.map_join(", ", fn {c, rs} ->
      "#{Report.client_name(c)} #{Report.rate(Report.stats(rs).median)}"
    end)

  IO.puts("  #{name}: #{line} (#{elapsed.()})")
end

# m first: its memory growth is the whole VM's, which later scenarios' garbage would blur.
m = Scenarios.noreply_memory(port)
m_row = {"m: noreply_pipeline of 1,000,000 SET", %{redix_rs: [m]}}
progress.(elem(m_row, 0), elem(m_row, 1))

# {name, fun, ceiling args or nil, processes on one connection (the picture's x) or nil}
scenarios = [
  {"a: 1 process, 20,000 GET (32 B)", &Scenarios.sequential_get(&1, port),
   ["-c", "1", "-n", "20000", "-t", "get"], 1},
  {"p10: 10 procs x 2,000 GET, 1 conn", &Scenarios.concurrent_get(&1, port, 10, 2_000), nil, 10},
  {"p100: 100 procs x 500 GET, 1 conn", &Scenarios.concurrent_get(&1, port, 100, 500), nil, 100},
  {"b: 200 procs x 500 GET, 1 conn", &Scenarios.concurrent_get(&1, port),
   ["-P", "100", "-n", "2000000", "-t", "get"], nil},
  {"p1000: 1,000 procs x 50 GET, 1 conn", &Scenarios.concurrent_get(&1, port, 1_000, 50), nil,
   1_000},
  {"c: 200 procs x 500 GET, 8 conns", &Scenarios.concurrent_get(&1, port, 200, 500, 8), nil, nil},
  {"d: 50 pipelines x 1,000 SET", &Scenarios.pipelined_set(&1, port),
   ["-P", "100", "-n", "2000000", "-t", "set"], nil},
  {"e: 1 process, 10,000 GET (16 KiB)", &Scenarios.get_16k(&1, port),
   ["-c", "1", "-n", "10000", "-d", "16384", "-t", "get"], nil},
  {"g: 1 process, 500 GET (1 MiB)", &Scenarios.get_1m(&1, port), nil, nil}
]

core =
  for {name, fun, ceiling_args, procs} <- scenarios do
    # One discarded warm-up round per client first: the first runs after start-up are slower for all
    # clients (allocator carriers, Redis's buffers).
    Enum.each(clients, fun)
    results = for _ <- 1..rounds, client <- clients, do: {client, fun.(client)}
    by_client = Enum.group_by(results, &elem(&1, 0), &elem(&1, 1))

    by_client =
      if ceiling_args,
        do: Map.put(by_client, :"redis-benchmark", [ceiling.(ceiling_args)]),
        else: by_client

    # d's ceiling (-P 100) is 50 clients keeping Redis busy; one client sending 1,000-command
    # pipelines one after another, as d does, is bounded lower by Redis itself.
    by_client =
      if String.starts_with?(name, "d:"),
        do:
          Map.put(by_client, :"redis-benchmark -c 1 -P 1000", [
            ceiling.(["-c", "1", "-P", "1000", "-n", "1000000", "-t", "set"])
          ]),
        else: by_client

    progress.(name, by_client)
    {name, by_client, procs}
  end

# a over TLS, side by side with plain TCP (redix_rs both times; eredis has no TLS here).
tls =
  for _ <- 1..rounds,
      client <- [:redix_rs_tls, :redix_rs],
      do:
        {client,
         if(client == :redix_rs,
           do: Scenarios.sequential_get(:redix_rs, port),
           else: Scenarios.sequential_get_tls(server.tls_port, certs.ca)
         )}

tls =
  {"a over TLS (rustls) and plain TCP, same run", Enum.group_by(tls, &elem(&1, 0), &elem(&1, 1))}

progress.(elem(tls, 0), elem(tls, 1))

fan_name = "fan-out: 100 subscribers, 10,000 messages (deliveries/s)"
Enum.each(clients, &Fanout.run(&1, port))

fanout =
  for _ <- 1..fan_rounds, client <- clients do
    r = Fanout.run(client, port)
    {client, %{ops: r.deliveries, micros: r.micros, latencies: []}}
  end

fan_row = {fan_name, Enum.group_by(fanout, &elem(&1, 0), &elem(&1, 1))}
progress.(fan_name, elem(fan_row, 1))
RedisServer.stop(server)
own_time = elapsed.()

# Suites added by other modules, when compiled in (bench/lib/*.ex).
extra =
  for mod <- [RedixRs.Bench.Cluster, RedixRs.Bench.Cache, RedixRs.Bench.Latency],
      Code.ensure_loaded?(mod) and function_exported?(mod, :run, 1) do
    name = mod |> Module.split() |> List.last()
    IO.puts("#{name} suite (#{suite_rounds} rounds)...")

    try do
      result = mod.run(suite_rounds)
      Enum.each(result, fn {scenario, by_client} -> progress.(scenario, by_client) end)
      {name, result}
    rescue
      e ->
        IO.puts("  #{name} suite failed: #{Exception.message(e)}")
        {name, []}
    end
  end

rows =
  Enum.map(core, fn {name, by_client, _} -> {name, by_client} end) ++
    [tls, m_row, fan_row] ++ Enum.flat_map(extra, &elem(&1, 1))

table = Report.table(rows)

{cpu, _} = System.cmd("sh", ["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"])
{load, _} = System.cmd("sh", ["-c", "cut -d' ' -f1-3 /proc/loadavg"])
now = DateTime.utc_now() |> DateTime.truncate(:second) |> DateTime.to_iso8601()

machine =
  "#{System.schedulers_online()} schedulers, #{String.trim(cpu)}, OTP #{System.otp_release()}, " <>
    "Elixir #{System.version()}, tokio workers #{System.get_env("REDIX_RS_TOKIO_WORKERS", "1")}"

# The picture: the scenarios on one connection with 1, 10, 100 and 1,000 processes.
points =
  for {_, by_client, procs} <- core,
      procs != nil,
      {client, results} <- by_client,
      client in clients,
      reduce: %{} do
    acc ->
      Map.update(
        acc,
        client,
        [Map.put(Report.stats(results), :n, procs)],
        &[Map.put(Report.stats(results), :n, procs) | &1]
      )
  end

results_dir = Path.join(__DIR__, "results")
File.mkdir_p!(results_dir)

svg =
  Svg.render(
    points,
    "GET on one connection: #{Enum.map_join(clients, " vs ", &Report.client_name/1)}",
    "#{now}; #{machine}; medians of #{rounds} rounds"
  )

File.write!(Path.join(results_dir, "latest.svg"), svg)

summary = """
## Latest run: #{now}

#{machine}; load average at the end #{String.trim(load)}. Written by `make bench` (bench/run.exs):
#{rounds} rounds per scenario and client (fan-out #{fan_rounds}#{if extra != [], do: ", added suites #{suite_rounds}", else: ""}),
clients alternating round by round after a discarded warm-up round; the median and the range (min–max)
across rounds, and the medians of each round's p50 and p99 latency per call. "redix_rs ÷ client" is
redix_rs's median over that client's: above 1, redix_rs is faster. redis-benchmark rows are the
server's ceiling, measured once. #{if :redix in clients, do: "Redix #{Clients.redix_version() || "(version unknown)"} loaded from REDIX_PATH.", else: "Redix is absent from this run: set REDIX_PATH (bench/README.md)."}

![GET throughput and latency per call against concurrent processes on one connection](results/latest.svg)

#{table}

m's memory growth: BEAM #{div(m.beam_growth, 1_048_576)} MiB, RSS #{div(m.rss_growth, 1_048_576)} MiB.
Time: #{own_time} for these scenarios#{Enum.map_join(extra, "", fn {name, _} -> ", #{name} included" end)}, #{elapsed.()} in all.
"""

File.write!(Path.join(results_dir, "latest.md"), "# Benchmark summary\n\n" <> summary)
Report.update_results(Path.join(__DIR__, "RESULTS.md"), summary)

IO.puts("\n" <> table <> "\n")

IO.puts(
  "Picture: #{Path.join(results_dir, "latest.svg")}; summary at the top of bench/RESULTS.md (#{elapsed.()})"
)
