defmodule RedixRs.Bench.Scenarios do
  @moduledoc false
  # Benchmark loops live here, compiled, not in .exs bodies (interpreted loops run 3-5x slower).
  # Each scenario returns %{ops: n, micros: total, latencies: [micros per op]}.

  alias RedixRs.Bench.Clients

  @value :binary.copy("v", 32)

  def prepare(port) do
    conn = Clients.connect(:redix_rs, port)
    RedixRs.command!(conn, ["SET", "bench:32", @value])
    RedixRs.command!(conn, ["SET", "bench:16k", :binary.copy("x", 16 * 1024)])
    RedixRs.command!(conn, ["SET", "bench:1m", :binary.copy("y", 1024 * 1024)])
    RedixRs.stop(conn)
  end

  @doc "a: one process, sequential GETs of a 32-byte value."
  def sequential_get(client, port, n \\ 20_000, key \\ "bench:32") do
    conn = Clients.connect(client, port)

    result =
      timed(fn ->
        for _ <- 1..n,
            do: time_one(fn -> {:ok, _} = Clients.command(client, conn, ["GET", key]) end)
      end)

    Clients.stop(client, conn)
    result
  end

  @doc "b/c: `procs` processes x `per` GETs over `conns` connections."
  def concurrent_get(client, port, procs \\ 200, per \\ 500, conns \\ 1) do
    pool = for _ <- 1..conns, do: Clients.connect(client, port)
    pool = List.to_tuple(pool)

    result =
      timed(fn ->
        1..procs
        |> Enum.map(fn i ->
          conn = elem(pool, rem(i, conns))

          Task.async(fn ->
            for _ <- 1..per,
                do:
                  time_one(fn -> {:ok, _} = Clients.command(client, conn, ["GET", "bench:32"]) end)
          end)
        end)
        |> Task.await_many(120_000)
        |> List.flatten()
      end)

    pool |> Tuple.to_list() |> Enum.each(&Clients.stop(client, &1))
    result
  end

  @doc "d: one process, `batches` pipelines of `size` SETs, one after another."
  def pipelined_set(client, port, batches \\ 50, size \\ 1_000) do
    conn = Clients.connect(client, port)
    cmds = for i <- 1..size, do: ["SET", "bench:p:#{i}", @value]

    result =
      timed(fn ->
        for _ <- 1..batches do
          time_one(fn ->
            {:ok, replies} = Clients.pipeline(client, conn, cmds)
            ^size = length(replies)
          end) / size
        end
      end)

    Clients.stop(client, conn)
    %{result | ops: batches * size}
  end

  @doc "a over TLS: one process, sequential GETs of a 32-byte value through `RedixRs` with `ssl: true`."
  def sequential_get_tls(tls_port, ca, n \\ 20_000) do
    opts = [port: tls_port, ssl: true, socket_opts: [cacertfile: ca], sync_connect: true]
    {:ok, conn} = RedixRs.start_link(opts)

    result =
      timed(fn ->
        for _ <- 1..n,
            do: time_one(fn -> {:ok, _} = RedixRs.command(conn, ["GET", "bench:32"]) end)
      end)

    RedixRs.stop(conn)
    result
  end

  @doc "e: one process, 10,000 sequential GETs of a 16 KiB value."
  def get_16k(client, port), do: sequential_get(client, port, 10_000, "bench:16k")

  @doc "g: one process, 500 sequential GETs of a 1 MiB value."
  def get_1m(client, port), do: sequential_get(client, port, 500, "bench:1m")

  @doc """
  m: a `noreply_pipeline` of 1,000,000 SETs; returns the growth of `:erlang.memory(:total)` and of the
  OS process's RSS while it runs, beyond the command list (built before measuring).
  """
  def noreply_memory(port, n \\ 1_000_000) do
    {:ok, conn} = RedixRs.start_link(port: port, sync_connect: true)
    commands = for i <- 1..n, do: ["SET", "bench:m:#{i}", "v"]
    :erlang.garbage_collect()
    before = {:erlang.memory(:total), rss()}
    sampler = Task.async(fn -> sample_peak(before, self()) end)
    t0 = System.monotonic_time(:microsecond)
    :ok = RedixRs.noreply_pipeline(conn, commands, timeout: 120_000)
    micros = System.monotonic_time(:microsecond) - t0
    send(sampler.pid, :stop)
    {peak_beam, peak_rss} = Task.await(sampler)
    RedixRs.stop(conn)

    %{
      ops: n,
      micros: micros,
      beam_growth: peak_beam - elem(before, 0),
      rss_growth: peak_rss - elem(before, 1)
    }
  end

  defp sample_peak({beam, rss}, _parent) do
    receive do
      :stop -> {max(beam, :erlang.memory(:total)), max(rss, rss())}
    after
      5 -> sample_peak({max(beam, :erlang.memory(:total)), max(rss, rss())}, nil)
    end
  end

  defp rss do
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/self/status"))
    String.to_integer(kb) * 1024
  end

  defp time_one(fun) do
    t0 = System.monotonic_time(:microsecond)
    fun.()
    System.monotonic_time(:microsecond) - t0
  end

  defp timed(fun) do
    t0 = System.monotonic_time(:microsecond)
    latencies = fun.()
    micros = System.monotonic_time(:microsecond) - t0
    %{ops: length(latencies), micros: micros, latencies: latencies}
  end
end
