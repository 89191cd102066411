defmodule RedixRs.Bench.Cache do
  @moduledoc false
  # Client-side caching (issue 15): 200 processes × GET of 100 hot keys on one connection, answered
  # from the cache (`:redix_rs_cached`: a RESP3 connection with `client_cache`, `cache: true`),
  # the same uncached (`:redix_rs`, the default RESP2 connection) and with eredis. Starts and stops
  # its own redis-server; rounds alternate clients; one discarded warm-up round each first.
  #
  # `hit_paths/1` measures what a hit costs by two candidate designs, in one process and across
  # 200: a NIF call that builds the term from the cached frame (`RedixRs.Native.cache_get/2`, the
  # design used) and an ETS read of the same replies (a `read_concurrency` table keyed by command).

  alias RedixRs.Bench.Clients
  alias RedixRs.Test.RedisServer

  @compile {:no_warn_undefined, :eredis}

  @procs 200
  @keys 100
  # Hits are ~100x cheaper than round trips: more of them per round, so that a cached round lasts
  # about as long as an uncached one (~0.2-0.3 s): a short round is at the mercy of one preemption
  # on a shared machine.
  @per_cached 10_000
  @per_uncached 250
  # One call in `@sample` is timed, for the percentiles.
  @sample 100
  @value :binary.copy("v", 32)

  @spec run(pos_integer()) :: [{String.t(), %{atom() => [map()]}}]
  def run(rounds) do
    server = RedisServer.start()

    try do
      port = server.port
      prepare(port)
      clients = [:redix_rs_cached, :redix_rs] ++ Enum.filter([:eredis], &Clients.available?/1)
      Enum.each(clients, &scenario(&1, port))
      results = for _ <- 1..rounds, client <- clients, do: {client, scenario(client, port)}

      grouped =
        Enum.reduce(Enum.reverse(results), %{}, fn {client, r}, acc ->
          Map.update(acc, client, [r], &[r | &1])
        end)

      [{"cache: #{@procs} procs x GET of #{@keys} hot keys, 1 conn", grouped}]
    after
      RedisServer.stop(server)
    end
  end

  defp keys, do: for(n <- 1..@keys, do: "bench:hot:#{n}")

  defp prepare(port) do
    {:ok, conn} = RedixRs.start_link(port: port, sync_connect: true)
    RedixRs.pipeline!(conn, Enum.map(keys(), &["SET", &1, @value]))
    RedixRs.stop(conn)
  end

  @doc "One round of `client`: `%{ops:, micros:, latencies:}` (latencies in µs, sampled)."
  def scenario(client, port) do
    conn = connect(client, port)
    per = if client == :redix_rs_cached, do: @per_cached, else: @per_uncached
    # Warm: every hot key cached before the clock starts.
    if client == :redix_rs_cached, do: Enum.each(keys(), &get(client, conn, &1))
    keys = List.to_tuple(keys())

    t0 = System.monotonic_time(:microsecond)

    latencies =
      1..@procs
      |> Enum.map(fn p -> Task.async(fn -> loop(client, conn, keys, p, per, []) end) end)
      |> Task.await_many(120_000)
      |> List.flatten()

    micros = System.monotonic_time(:microsecond) - t0
    stop(client, conn)
    %{ops: @procs * per, micros: max(micros, 1), latencies: latencies}
  end

  defp loop(_client, _conn, _keys, _p, 0, acc), do: acc

  defp loop(client, conn, keys, p, n, acc) do
    key = elem(keys, rem(p + n, @keys))

    if rem(n, @sample) == 0 do
      t0 = System.monotonic_time(:nanosecond)
      {:ok, @value} = get(client, conn, key)
      # µs, rounded up (a hit takes well under one).
      us = div(System.monotonic_time(:nanosecond) - t0 + 999, 1000)
      loop(client, conn, keys, p, n - 1, [us | acc])
    else
      {:ok, @value} = get(client, conn, key)
      loop(client, conn, keys, p, n - 1, acc)
    end
  end

  defp connect(:redix_rs_cached, port) do
    {:ok, conn} =
      RedixRs.start_link(
        port: port,
        protocol: :resp3,
        client_cache: [max_entries: 10_000],
        sync_connect: true
      )

    conn
  end

  defp connect(client, port), do: Clients.connect(client, port)

  defp get(:redix_rs_cached, conn, key), do: RedixRs.command(conn, ["GET", key], cache: true)
  defp get(client, conn, key), do: Clients.command(client, conn, ["GET", key])

  defp stop(:redix_rs_cached, conn), do: RedixRs.stop(conn)
  defp stop(client, conn), do: Clients.stop(client, conn)

  @doc """
  What a hit costs: the NIF (`cache_get/2` on the connection's cache, and the whole
  `RedixRs.command(conn, cmd, cache: true)`), and an ETS read of the same replies: the p50 of a
  call in one process (ns) and the throughput of #{@procs} processes (calls/s), medians of
  `rounds` (`%{paths: [{label, p50_ns, calls_per_second}]}`).
  """
  def hit_paths(rounds) do
    server = RedisServer.start()

    try do
      port = server.port
      prepare(port)
      conn = connect(:redix_rs_cached, port)
      Enum.each(keys(), &get(:redix_rs_cached, conn, &1))
      cache = :persistent_term.get({RedixRs.Cache, conn})
      table = :ets.new(:bench_cache, [:set, :public, read_concurrency: true])
      Enum.each(keys(), &:ets.insert(table, {["GET", &1], @value}))
      commands = List.to_tuple(Enum.map(keys(), &["GET", &1]))

      paths = [
        {"NIF cache_get/2 (term built from the cached frame)",
         fn cmd -> {:ok, @value} = RedixRs.Native.cache_get(cache, cmd) end},
        {"ETS lookup (read_concurrency, keyed by command)",
         fn cmd -> [{_, @value}] = :ets.lookup(table, cmd) end},
        {"RedixRs.command(conn, cmd, cache: true) (the whole hit)",
         fn cmd -> {:ok, @value} = RedixRs.command(conn, cmd, cache: true) end}
      ]

      # Rounds alternate the paths (the machine's load changes over a run): per round and path,
      # the p50 of 100,000 calls timed one by one (robust to preemption), then the throughput of
      # 200 processes.
      measured =
        for _ <- 1..rounds, {label, fun} <- paths do
          {label, p50_ns(fun, commands, 100_000), many_processes(fun, commands, 5_000)}
        end

      result =
        for {label, _} <- paths do
          mine = for {^label, p50, many} <- measured, do: {p50, many}
          {label, median(Enum.map(mine, &elem(&1, 0))), median(Enum.map(mine, &elem(&1, 1)))}
        end

      RedixRs.stop(conn)
      %{paths: result}
    after
      RedisServer.stop(server)
    end
  end

  # The median of `n` calls, each timed on its own (the clock's own cost, ~20-40 ns, included).
  defp p50_ns(fun, commands, n) do
    samples =
      for i <- 1..n do
        cmd = elem(commands, rem(i, @keys))
        t0 = System.monotonic_time(:nanosecond)
        fun.(cmd)
        System.monotonic_time(:nanosecond) - t0
      end

    median(samples)
  end

  defp many_processes(fun, commands, per) do
    t0 = System.monotonic_time(:nanosecond)

    1..@procs
    |> Enum.map(fn _ -> Task.async(fn -> repeat(fun, commands, per) end) end)
    |> Task.await_many(120_000)

    @procs * per / ((System.monotonic_time(:nanosecond) - t0) / 1.0e9)
  end

  defp repeat(_fun, _commands, 0), do: :ok

  defp repeat(fun, commands, n) do
    fun.(elem(commands, rem(n, @keys)))
    repeat(fun, commands, n - 1)
  end

  defp median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))
end
