defmodule RedixRs.Bench.Cluster do
  @moduledoc false
  # Scenario b on a Redis Cluster: 200 processes × 500 GETs on one `RedixRs.Cluster` (one
  # multiplexed connection per node, routing in the NIF) against a cluster of 3 primaries (no
  # replicas), side by side with the same load on one `RedixRs` connection to a single
  # redis-server. The keys are spread over every shard (the same keys on both). Starts and stops its
  # own servers; rounds alternate the two clients.
  #
  #     MIX_ENV=bench mix run bench/cluster.exs

  alias RedixRs.Test.RedisServer

  @procs 200
  @per 500
  @keys 300
  @value String.duplicate("v", 32)

  @spec run(pos_integer(), pos_integer()) :: [{String.t(), %{atom() => [map()]}}]
  def run(rounds, primaries \\ 3) do
    single = RedisServer.start([])
    nodes = start_cluster(primaries)

    try do
      {:ok, conn} = RedixRs.start_link(port: single.port, sync_connect: true)
      uris = for n <- nodes, do: "redis://127.0.0.1:#{n.port}"
      {:ok, _} = RedixRs.Cluster.start_link(name: :bench_cluster, nodes: uris, sync_connect: true)
      sets = for i <- 1..@keys, do: ["SET", key(i), @value]
      RedixRs.pipeline!(conn, sets)
      RedixRs.Cluster.pipeline!(:bench_cluster, sets)

      # Warm-up, not reported.
      concurrent_get(fn cmd -> RedixRs.command(conn, cmd) end)
      concurrent_get(fn cmd -> RedixRs.Cluster.command(:bench_cluster, cmd) end)

      results =
        Enum.reduce(1..rounds, %{redix_rs_single_node: [], redix_rs_cluster: []}, fn _, acc ->
          single_r = concurrent_get(fn cmd -> RedixRs.command(conn, cmd) end)
          cluster_r = concurrent_get(fn cmd -> RedixRs.Cluster.command(:bench_cluster, cmd) end)

          %{
            acc
            | redix_rs_single_node: acc.redix_rs_single_node ++ [single_r],
              redix_rs_cluster: acc.redix_rs_cluster ++ [cluster_r]
          }
        end)

      RedixRs.Cluster.stop(:bench_cluster)
      RedixRs.stop(conn)

      [
        {"b: #{@procs} procs x #{@per} GET, keys over #{primaries} shards (cluster) / 1 server",
         results}
      ]
    after
      RedisServer.stop(single)
      Enum.each(nodes, &RedisServer.stop/1)
    end
  end

  defp key(i), do: "bench:c:#{i}"

  defp concurrent_get(call) do
    t0 = System.monotonic_time(:microsecond)

    latencies =
      1..@procs
      |> Enum.map(fn p ->
        Task.async(fn ->
          for i <- 1..@per do
            cmd = ["GET", key(rem(p * 7 + i, @keys) + 1)]
            s = System.monotonic_time(:microsecond)
            {:ok, _} = call.(cmd)
            System.monotonic_time(:microsecond) - s
          end
        end)
      end)
      |> Task.await_many(300_000)
      |> List.flatten()

    %{
      ops: length(latencies),
      micros: System.monotonic_time(:microsecond) - t0,
      latencies: latencies
    }
  end

  # `primaries` cluster-enabled servers joined with `redis-cli --cluster create` (no replicas).
  defp start_cluster(primaries) do
    nodes =
      for _ <- 1..primaries do
        RedisServer.start(
          args:
            ~w(--cluster-enabled yes --cluster-config-file nodes.conf) ++
              ["--cluster-port", Integer.to_string(free_port())]
        )
      end

    addresses = for n <- nodes, do: "127.0.0.1:#{n.port}"

    if primaries == 1 do
      # redis-cli --cluster create wants 3 primaries: one node takes every slot itself.
      [node] = nodes
      "+OK\r\n" = RedisServer.redis_cli(node, ["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
    else
      {out, status} =
        System.cmd("redis-cli", ["--cluster", "create" | addresses] ++ ["--cluster-yes"],
          stderr_to_stdout: true
        )

      if status != 0, do: raise("redis-cli --cluster create failed:\n#{out}")
    end

    wait_ok(nodes, 600)
    nodes
  end

  defp wait_ok(_nodes, 0), do: raise("the bench cluster did not reach cluster_state:ok")

  defp wait_ok(nodes, tries) do
    if Enum.all?(nodes, &(RedisServer.redis_cli(&1, ["CLUSTER", "INFO"]) =~ "cluster_state:ok")) do
      :ok
    else
      Process.sleep(50)
      wait_ok(nodes, tries - 1)
    end
  end

  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end
end
