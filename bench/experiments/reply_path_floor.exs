# The floor of the reply path that DESIGN §2 prescribes, next to scenario b, in one VM on one server.
#
# Needs bench/experiments/reply_path_floor.patch applied (it adds an experimental `RedixRs.Native.echo/1`
# NIF that makes a real reply waiter and queues it for one tokio task, which answers it with a 32-byte
# bulk string through the same `enif_send` path as a real reply: no socket, no Redis, no encoding).
#
#     git apply bench/experiments/reply_path_floor.patch
#     ECHO_PAUSE_US=50 MIX_ENV=bench mix run bench/experiments/reply_path_floor.exs
#     git apply -R bench/experiments/reply_path_floor.patch
#
# ECHO_PAUSE_US: after answering a batch, the tokio thread sleeps this long, standing in for the round
# trip to Redis so that answers go out in batches as they do in b (0: it parks at once, and nearly every
# call wakes it).
defmodule RedixRs.Bench.ReplyPathFloor do
  alias RedixRs.Bench.Scenarios

  def main do
    server = RedixRs.Test.RedisServer.start([])
    Scenarios.prepare(server.port)

    for _ <- 1..String.to_integer(System.get_env("LOOPS", "4")) do
      for client <- [:redix_rs, :eredis] do
        {r, cpu} = with_cpu(fn -> Scenarios.concurrent_get(client, server.port) end)
        report("b #{client}", r.ops, r.micros, cpu)
      end

      {r, cpu} = with_cpu(fn -> echo(200, 500) end)
      report("floor (echo from tokio)", r.ops, r.micros, cpu)
    end

    ceiling = RedixRs.Bench.Ceiling.rps(server.port, ["-P", "100", "-n", "2000000", "-t", "get"])
    IO.puts("ceiling b (redis-benchmark -P 100): #{round(ceiling)}/s")
    RedixRs.Test.RedisServer.stop(server)
  end

  defp echo(procs, per) do
    t0 = System.monotonic_time(:microsecond)

    1..procs
    |> Enum.map(fn _ -> Task.async(fn -> for _ <- 1..per, do: echo_call() end) end)
    |> Task.await_many(60_000)

    %{ops: procs * per, micros: System.monotonic_time(:microsecond) - t0}
  end

  defp echo_call do
    ref = make_ref()
    {:ok, _token} = RedixRs.Native.echo(ref)

    receive do
      {^ref, :ok, replies} -> replies
    after
      5_000 -> exit(:timeout)
    end
  end

  defp report(label, ops, micros, cpu_micros) do
    rate = round(ops / (micros / 1_000_000))
    IO.puts("#{label}: #{rate}/s, CPU per op #{Float.round(cpu_micros / ops, 2)} µs")
  end

  # CPU time of this OS process (schedulers and the tokio thread; not redis-server), in µs.
  defp with_cpu(fun) do
    c0 = cpu_micros()
    result = fun.()
    {result, cpu_micros() - c0}
  end

  defp cpu_micros do
    [_, after_comm] = File.read!("/proc/self/stat") |> String.split(") ")
    fields = String.split(after_comm)
    ticks = String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
    ticks * 10_000
  end
end

RedixRs.Bench.ReplyPathFloor.main()
