defmodule RedixRs.SchedulerTest do
  # No NIF call may hold a normal scheduler: under load (a 100,000-command pipeline, a 10 MiB value,
  # many small commands) the VM's long_schedule monitor must never name a RedixRs.Native function.
  # Not async: system_monitor is VM-wide.
  use ExUnit.Case, async: false

  alias RedixRs.Test.Servers

  test "no long_schedule report names a RedixRs.Native function" do
    {:ok, c} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    previous = :erlang.system_monitor(self(), [{:long_schedule, 5}])

    try do
      big = :crypto.strong_rand_bytes(10 * 1024 * 1024)
      {:ok, "OK"} = RedixRs.command(c, ["SET", "sched:big", big], timeout: 30_000)
      {:ok, ^big} = RedixRs.command(c, ["GET", "sched:big"], timeout: 30_000)

      commands = for i <- 1..100_000, do: ["SET", "sched:#{rem(i, 100)}", i]
      {:ok, replies} = RedixRs.pipeline(c, commands, timeout: 60_000)
      assert length(replies) == 100_000

      many_args = ["SADD", "sched:set" | Enum.map(1..50_000, &Integer.to_string/1)]
      {:ok, 50_000} = RedixRs.command(c, many_args, timeout: 30_000)

      1..50
      |> Enum.map(fn _ ->
        Task.async(fn -> for _ <- 1..200, do: RedixRs.command!(c, ["PING"]) end)
      end)
      |> Task.await_many(30_000)
    after
      restore(previous)
    end

    reports = collect_reports([])
    offending = Enum.filter(reports, &mentions_native?/1)
    assert offending == [], "long schedules inside RedixRs.Native: #{inspect(offending)}"
  end

  test "a large pub/sub payload is not copied on a normal scheduler" do
    {:ok, pubsub} = RedixRs.PubSub.start_link(port: Servers.port(), sync_connect: true)
    {:ok, c} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    # Redis drops a subscriber whose output buffer passes 32 MiB by default.
    {:ok, [_, limits]} = RedixRs.command(c, ["CONFIG", "GET", "client-output-buffer-limit"])

    {:ok, "OK"} =
      RedixRs.command(c, ["CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0"])

    on_exit(fn -> reset_limits(limits) end)
    {:ok, ref} = RedixRs.PubSub.subscribe(pubsub, "sched:big", self())
    assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "sched:big"}}
    big = :crypto.strong_rand_bytes(64 * 1024 * 1024)
    previous = :erlang.system_monitor(self(), [{:long_schedule, 5}])

    try do
      {:ok, 1} = RedixRs.command(c, ["PUBLISH", "sched:big", big], timeout: 30_000)
      assert_receive {:redix_pubsub, ^pubsub, ^ref, :message, %{payload: payload}}, 30_000
      assert payload == big
    after
      restore(previous)
    end

    # The PubSub process sends the message from a NIF called in its gen_server loop, so a report
    # names that loop rather than the NIF: any long schedule of that process counts.
    offending = Enum.filter(collect_reports([]), &(&1[:pid] == pubsub or mentions_native?(&1)))

    assert offending == [], "long schedules in the PubSub process: #{inspect(offending)}"
  end

  defp reset_limits(limits) do
    {:ok, c} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    {:ok, "OK"} = RedixRs.command(c, ["CONFIG", "SET", "client-output-buffer-limit", limits])
    RedixRs.stop(c)
  end

  defp restore({pid, opts}), do: :erlang.system_monitor(pid, opts)
  defp restore(:undefined), do: :erlang.system_monitor(:undefined)

  defp collect_reports(acc) do
    receive do
      {:monitor, pid, :long_schedule, info} -> collect_reports([[{:pid, pid} | info] | acc])
    after
      100 -> acc
    end
  end

  defp mentions_native?(info) do
    Enum.any?(info, fn
      {key, {RedixRs.Native, _, _}} when key in [:timeout, :in, :out] -> true
      _ -> false
    end)
  end
end
