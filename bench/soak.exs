# `make soak`: the soak that counts every reply (RedixRs.Test.Soak, shared with
# test/redix_rs/soak_test.exs). 1,000,000 INCRs from 500 processes through one connection to a
# redis-server with appendfsync always, while the connection is killed, the server restarted twice and
# paused once; then 10,000 start/stop cycles of connections and of pub/sub connections. Prints the
# accounting and exits with 1 if any invariant is broken.
#
# Smaller or larger runs: SOAK_CALLS, SOAK_PROCESSES, SOAK_CYCLES, SOAK_SEED (environment variables).
Logger.configure(level: :error)

int_env = fn name, default ->
  case System.get_env(name) do
    nil -> default
    value -> String.to_integer(value)
  end
end

opts = [
  calls: int_env.("SOAK_CALLS", 1_000_000),
  processes: int_env.("SOAK_PROCESSES", 500),
  cycles: int_env.("SOAK_CYCLES", 10_000),
  seed: int_env.("SOAK_SEED", nil),
  log: fn line ->
    IO.puts(:stderr, "[soak #{Time.utc_now() |> Time.truncate(:second)}] #{line}")
  end
]

result = RedixRs.Test.Soak.run(opts)
IO.write(RedixRs.Test.Soak.Report.format(result))
if result.violations != [], do: System.halt(1)
