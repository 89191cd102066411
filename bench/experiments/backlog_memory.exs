# Memory of the pub/sub backlog while the `RedixRs.PubSub` process is suspended: 1 MiB messages are
# published to a channel with 10 subscribers until the connection closes with `:pubsub_backlog`;
# prints the VM's resident memory (VmRSS) before and at the peak, and when the bound stopped it.
#
#     MIX_ENV=bench mix run bench/experiments/backlog_memory.exs            # default bound, 256 MiB
#     BACKLOG_MIB=64 MIX_ENV=bench mix run bench/experiments/backlog_memory.exs
defmodule RedixRs.Bench.BacklogMemory do
  @mib 1024 * 1024

  def main do
    bound = String.to_integer(System.get_env("BACKLOG_MIB", "256")) * @mib

    server =
      RedixRs.Test.RedisServer.start(args: ["--client-output-buffer-limit", "pubsub 0 0 0"])

    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)

    {:ok, ps} =
      RedixRs.PubSub.start_link(port: server.port, sync_connect: true, backlog_limit: bound)

    subscribers = for _ <- 1..10, do: spawn(fn -> Process.sleep(:infinity) end)
    Enum.each(subscribers, &RedixRs.PubSub.subscribe(ps, "big", &1))
    :ok = RedixRs.PubSub.ping(ps)
    payload = :binary.copy("p", @mib)
    :erlang.garbage_collect()
    before = rss()
    :sys.suspend(ps)
    {published, peak} = publish_until_closed(conn, payload, 0, before)

    IO.puts(
      "bound #{div(bound, @mib)} MiB: #{published} messages of 1 MiB published before the " <>
        "connection closed; VmRSS #{div(before, @mib)} MiB before, peak #{div(peak, @mib)} MiB " <>
        "(+#{div(peak - before, @mib)} MiB)"
    )

    RedixRs.Test.RedisServer.stop(server)
  end

  # Publishes until Redis no longer counts the pub/sub connection as a receiver.
  defp publish_until_closed(conn, payload, n, peak) do
    {:ok, receivers} = RedixRs.command(conn, ["PUBLISH", "big", payload], timeout: 30_000)
    peak = max(peak, rss())

    if receivers == 0 or n > 10_000,
      do: {n, peak},
      else: publish_until_closed(conn, payload, n + 1, peak)
  end

  defp rss do
    "/proc/self/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn
      "VmRSS:" <> rest ->
        rest |> String.trim() |> String.split(" ") |> hd() |> String.to_integer()

      _ ->
        nil
    end)
    |> Kernel.*(1024)
  end
end

RedixRs.Bench.BacklogMemory.main()
