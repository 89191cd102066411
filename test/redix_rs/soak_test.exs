defmodule RedixRs.SoakTest do
  # The short run of `make soak` (RedixRs.Test.Soak): 50,000 INCRs from 100 processes on one connection
  # to a redis-server with appendfsync always, while the connection is killed once (CLIENT KILL), the
  # server restarted once (SHUTDOWN, AOF replayed) and paused once (SIGSTOP for longer than the call
  # timeout); then 500 start/stop cycles of connections and of pub/sub connections. Every call gets
  # exactly one answer, the counter agrees with the acknowledged calls, no caller is left waiting, and
  # the VM's memory, OS threads, file descriptors and processes come back to where they started.
  #
  # Not async: it measures the whole VM's footprint, so nothing else may run beside it.
  use ExUnit.Case, async: false

  # Killed and restarted connections log their disconnections.
  @moduletag :capture_log

  alias RedixRs.Test.Soak

  @tag timeout: 180_000
  test "every INCR gets exactly one answer through kills, a restart and a pause; nothing leaks" do
    result =
      Soak.run(
        calls: 50_000,
        processes: 100,
        call_timeout: 500,
        pause_ms: 800,
        kills: 1,
        restarts: 1,
        pauses: 1,
        cycles: 500
      )

    report = IO.iodata_to_binary(Soak.Report.format(result))
    assert result.violations == [], report

    load = result.load
    # The faults really happened while the calls ran, and each one cost some calls their answer.
    assert Enum.map(load.fired, & &1.kind) |> Enum.sort() == [:kill, :pause, :restart], report
    assert load.outcomes.ok > 0 and load.outcomes.timeout > 0, report
    assert load.outcomes.disconnected + load.outcomes.closed > 0, report
  end
end
