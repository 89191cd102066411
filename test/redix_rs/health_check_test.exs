defmodule RedixRs.HealthCheckTest do
  # `health_check_interval`: a frozen server (SIGSTOP: the kernel still ACKs, so TCP sees nothing wrong)
  # is detected; a connection merely busy with a blocking command is not declared dead.
  use ExUnit.Case, async: true

  @moduletag :capture_log

  alias RedixRs.ConnectionError
  alias RedixRs.Test.RedisServer

  setup do
    server = RedisServer.start()
    on_exit(fn -> RedisServer.stop(server) end)
    handler = "health-#{System.unique_integer([:positive])}"
    test = self()

    :telemetry.attach_many(
      handler,
      [[:redix_rs, :disconnection], [:redix_rs, :connection]],
      fn event, _, meta, _ -> send(test, {:event, event, meta}) end,
      nil
    )

    on_exit(fn -> :telemetry.detach(handler) end)
    %{server: server}
  end

  test "a frozen server is detected within about two intervals, then reconnected", %{
    server: server
  } do
    {:ok, conn} =
      RedixRs.start_link(port: server.port, health_check_interval: 200, sync_connect: true)

    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    RedisServer.os_kill(server, "STOP")
    frozen_at = System.monotonic_time(:millisecond)
    in_flight = Task.async(fn -> RedixRs.command(conn, ["GET", "k"], timeout: 5_000) end)

    assert_receive {:event, [:redix_rs, :disconnection], %{connection: ^conn, reason: reason}},
                   5_000

    assert reason == %ConnectionError{reason: :health_check_timeout}
    # At most three intervals (the check that was due, its PING's deadline, the probe's), plus a
    # second for a loaded machine: the intervals drive the detection, not a timeout of seconds
    # (the 5 s of the call in flight, or of a connection attempt).
    detected_after = System.monotonic_time(:millisecond) - frozen_at
    assert detected_after < 3 * 200 + 1_000, "detected #{detected_after} ms after the freeze"
    assert Task.await(in_flight) == {:error, %ConnectionError{reason: :disconnected}}

    RedisServer.os_kill(server, "CONT")

    assert_receive {:event, [:redix_rs, :connection], %{connection: ^conn, reconnection: true}},
                   5_000

    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
  end

  test "a connection blocked in BLPOP 0 is not declared dead", %{server: server} do
    # 300 ms: a probe (a fresh connection and a PING, within one interval) answers in time on a
    # loaded machine.
    # No side connections: the BLPOP must block this connection (Redix's behaviour).
    {:ok, conn} =
      RedixRs.start_link(
        port: server.port,
        health_check_interval: 300,
        sync_connect: true,
        max_side_connections: 0
      )

    blocked =
      Task.async(fn ->
        RedixRs.command(conn, ["BLPOP", "health:list", "0"], timeout: :infinity)
      end)

    # Five intervals: each health PING waits behind the BLPOP, and each probe finds the server alive.
    refute_receive {:event, [:redix_rs, :disconnection], %{connection: ^conn}}, 1_500
    RedisServer.redis_cli(server, ["RPUSH", "health:list", "v"])
    assert Task.await(blocked) == {:ok, ["health:list", "v"]}
    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
  end

  test "off by default: no PING is sent", %{server: server} do
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)
    {:ok, before} = RedixRs.command(conn, ["INFO", "commandstats"])
    Process.sleep(300)
    {:ok, later} = RedixRs.command(conn, ["INFO", "commandstats"])
    assert ping_calls(later) == ping_calls(before)
  end

  defp ping_calls(info) do
    case Regex.run(~r/cmdstat_ping:calls=(\d+)/, info) do
      [_, n] -> String.to_integer(n)
      nil -> 0
    end
  end
end
