# Schedulers held behind a big write (issue "Core hardening", point 1), measured: while 4 processes
# submit 64 MiB pipelines (16 SETs of 4 MiB, encoded on a dirty scheduler) on one connection, 100
# processes send GETs on the same connection, and a `long_schedule` system monitor at 5 ms reports
# every time a GET caller held a normal scheduler that long (before the chunked write queue, the 64 MiB
# were copied into a non-empty queue under the connection's lock, and GET callers waited for it).
#
#     MIX_ENV=bench mix run bench/experiments/long_schedule.exs
#
# WRITES=control replaces the pipelines by the same amount of dirty-scheduler CPU work with no
# connection involved (hashing 64 MiB), to tell the OS's sharing of the 2 cores apart.
# ROUNDS (default 3) rounds of 5 s each; prints, per round, the long_schedule events of GET callers
# (count, longest) and of anyone else, and the GETs done.
defmodule RedixRs.Bench.LongSchedule do
  @big_value_bytes 4 * 1024 * 1024
  @commands_per_pipeline 16

  def main do
    server = RedixRs.Test.RedisServer.start([])

    {:ok, conn} =
      RedixRs.start_link(
        port: server.port,
        sync_connect: true,
        write_queue_limit: 1024 * 1024 * 1024
      )

    {:ok, "OK"} = RedixRs.command(conn, ["SET", "k", "v"])
    value = :binary.copy("x", @big_value_bytes)

    for round <- 1..String.to_integer(System.get_env("ROUNDS", "3")) do
      run_round(round, conn, value)
    end

    RedixRs.Test.RedisServer.stop(server)
  end

  defp run_round(round, conn, value) do
    parent = self()
    stop_at = System.monotonic_time(:millisecond) + 5_000

    getters =
      for _ <- 1..100 do
        spawn_link(fn -> send(parent, {:gets, self(), loop_gets(conn, stop_at, 0)}) end)
      end

    writers =
      for w <- 1..String.to_integer(System.get_env("WRITERS", "4"))//1 do
        spawn_link(fn ->
          send(parent, {:writes, self(), loop_writes(conn, w, value, stop_at, 0)})
        end)
      end

    getter_set = MapSet.new(getters)
    :erlang.system_monitor(self(), [{:long_schedule, 5}])
    gets = collect(:gets, getters, 0)
    writes = collect(:writes, writers, 0)
    :erlang.system_monitor(:undefined)
    events = drain_monitor([])

    {callers, others} =
      Enum.split_with(events, fn {pid, _ms, _info} -> MapSet.member?(getter_set, pid) end)

    IO.puts(
      "round #{round}: #{gets} GETs, #{writes} pipelines of 64 MiB; long_schedule (>= 5 ms) " <>
        "of GET callers: #{length(callers)} (longest #{longest(callers)} ms); " <>
        "of other processes: #{length(others)} (longest #{longest(others)} ms)"
    )

    for {_pid, ms, info} <- Enum.take(callers, 5),
        do: IO.puts("  GET caller #{ms} ms: #{inspect(info)}")
  end

  defp loop_gets(conn, stop_at, n) do
    if System.monotonic_time(:millisecond) >= stop_at do
      n
    else
      {:ok, "v"} = RedixRs.command(conn, ["GET", "k"], timeout: 30_000)
      loop_gets(conn, stop_at, n + 1)
    end
  end

  defp loop_writes(conn, w, value, stop_at, n) do
    if System.monotonic_time(:millisecond) >= stop_at do
      n
    else
      write(System.get_env("WRITES", "pipeline"), conn, w, value)
      loop_writes(conn, w, value, stop_at, n + 1)
    end
  end

  defp write("pipeline", conn, w, value) do
    commands = for i <- 1..@commands_per_pipeline, do: ["SET", "big:#{w}:#{i}", value]
    {:ok, _} = RedixRs.pipeline(conn, commands, timeout: 60_000)
  end

  # The control: the same CPU work on dirty schedulers (hashing 64 MiB) with no connection involved,
  # to tell the OS's sharing of 2 cores apart from anything the connection does.
  defp write("control", _conn, _w, value) do
    for _ <- 1..@commands_per_pipeline, do: :crypto.hash(:sha256, value)
  end

  defp collect(_tag, [], acc), do: acc

  defp collect(tag, [pid | rest], acc) do
    receive do
      {^tag, ^pid, n} -> collect(tag, rest, acc + n)
    end
  end

  defp drain_monitor(acc) do
    receive do
      {:monitor, pid, :long_schedule, info} ->
        drain_monitor([{pid, Keyword.get(info, :timeout, 0), info} | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  defp longest([]), do: 0
  defp longest(events), do: events |> Enum.map(&elem(&1, 1)) |> Enum.max()
end

RedixRs.Bench.LongSchedule.main()
