defmodule RedixRs.FailureTest do
  # Failure handling, as in Redix: connections killed by the server, servers that stop and come back,
  # timeouts, connection processes that die mid-call, backoff, exit_on_disconnection, QUIT, and calls
  # made while a connection attempt is in progress. Every test that kills, stops or blocks a server
  # (DEBUG SLEEP blocks the whole server) starts its own, so the tests can run side by side.
  #
  # Wall-clock bounds hold on a loaded 2-core machine: an upper bound on how long something takes is
  # set well apart from what the behaviour it rules out would take (a call that waits for its 5 s
  # timeout, a caller that hangs), and bounds on waiting (assert_receive, polling) are seconds.
  use ExUnit.Case, async: true

  # Connections that stop on purpose log their exit, as Redix's do.
  @moduletag :capture_log

  alias RedixRs.ConnectionError
  alias RedixRs.Test.{Helpers, RedisServer}

  # redis 7 refuses DEBUG unless it is enabled at start.
  @debug_args ["--enable-debug-command", "yes"]

  @disconnected {:error, %ConnectionError{reason: :disconnected}}
  @closed {:error, %ConnectionError{reason: :closed}}
  @timeout {:error, %ConnectionError{reason: :timeout}}

  ## Helpers

  defp start_server(opts \\ []) do
    RedisServer.start(Keyword.update(opts, :args, @debug_args, &(@debug_args ++ &1)))
  end

  defp now, do: System.monotonic_time(:millisecond)

  # A command whose caller may exit (the connection died): the exit is returned as {:exit, reason}.
  defp safe_command(conn, command, opts) do
    RedixRs.command(conn, command, opts)
  catch
    :exit, reason -> {:exit, reason}
  end

  # A task that runs one command, then waits a little and reports how many messages arrived after
  # its answer: a caller must get exactly one answer and nothing later.
  defp call_task(conn, command, opts \\ []) do
    Task.async(fn ->
      result = safe_command(conn, command, opts)
      Process.sleep(200)
      {:message_queue_len, stray} = Process.info(self(), :message_queue_len)
      {result, stray}
    end)
  end

  # Polls `fun` until it returns true or `within_ms` passes.
  defp await_true(fun, within_ms) do
    deadline = now() + within_ms

    Stream.repeatedly(fn ->
      cond do
        fun.() -> true
        now() >= deadline -> false
        true -> Process.sleep(10) && nil
      end
    end)
    |> Enum.find(&is_boolean/1)
  end

  # Waits until each task's process blocks in a receive: its command has been submitted (the caller
  # then waits for its answer; submissions go out in the order they were made).
  defp await_in_flight(tasks) do
    assert await_true(
             fn ->
               Enum.all?(tasks, &(Process.info(&1.pid, :status) in [{:status, :waiting}, nil]))
             end,
             5_000
           )
  end

  # Whether the server is blocked (in a DEBUG SLEEP): a PING on a fresh connection gets no answer.
  defp server_busy?(server) do
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, server.port, [:binary, active: false])

    try do
      :ok = :gen_tcp.send(socket, "*1\r\n$4\r\nPING\r\n")
      :gen_tcp.recv(socket, 0, 100) == {:error, :timeout}
    after
      :gen_tcp.close(socket)
    end
  end

  defp client_id(conn) do
    {:ok, id} = RedixRs.command(conn, ["CLIENT", "ID"])
    id
  end

  # CLIENT KILL from another connection (not the client under test).
  defp kill_client(server, id) do
    assert RedisServer.redis_cli(server, ["CLIENT", "KILL", "ID", id]) == ":1\r\n"
  end

  # Sends the test process {:telemetry, event_name, monotonic_ms, metadata} for `events` of `conn`.
  defp attach_telemetry(conn, events) do
    id = "failure-test-#{System.unique_integer([:positive])}"
    test = self()

    handler = fn [:redix_rs, name], _measurements, meta, _config ->
      if meta.connection == conn, do: send(test, {:telemetry, name, now(), meta})
    end

    :ok = :telemetry.attach_many(id, Enum.map(events, &[:redix_rs, &1]), handler, nil)
    on_exit(fn -> :telemetry.detach(id) end)
    id
  end

  defp collect_events(name, count, timeout) do
    for _ <- 1..count do
      assert_receive {:telemetry, ^name, at, _meta}, timeout
      at
    end
  end

  defp gaps([_]), do: []
  defp gaps([a, b | rest]), do: [b - a | gaps([b | rest])]

  # Each measured wait between attempts against the expected one. Timers never fire early, so the
  # lower bound is tight (0.8: the events are timestamped when emitted, not when the timer starts);
  # the upper one allows 400 ms of scheduling delay on a loaded machine between two attempts, and
  # 700 ms for the first gap, which also holds noticing the loss and running the first attempt
  # (measured up to 539 ms late with two test suites and a build sharing 2 cores). Both still rule
  # out the neighbouring behaviours each test names.
  @backoff_slack_ms 400
  @first_gap_slack_ms 700

  # `outliers`: how many gaps may exceed their upper bound (by one more scheduling stall of up to
  # 1 s), for tests with enough gaps that the behaviour they rule out breaks the bound more than once.
  defp assert_backoff(actual, expected, outliers \\ 0) do
    assert length(actual) == length(expected)
    slacks = [@first_gap_slack_ms | List.duplicate(@backoff_slack_ms, length(expected) - 1)]
    checks = Enum.zip([actual, expected, slacks])
    message = "gaps #{inspect(actual)}, expected about #{inspect(expected)}"

    for {gap, want, slack} <- checks do
      assert gap >= 0.8 * want and gap <= want + slack + 1_000 * min(outliers, 1), message
    end

    late = Enum.count(checks, fn {gap, want, slack} -> gap > want + slack end)
    assert late <= outliers, message
  end

  ## CLIENT KILL with calls in flight

  test "CLIENT KILL during in-flight DEBUG SLEEPs: one answer per caller, then a reconnect" do
    server = start_server()
    # No side connections: the BLPOP below must block this connection.
    opts = [port: server.port, sync_connect: true, backoff_initial: 100, max_side_connections: 0]
    {:ok, conn} = RedixRs.start_link(opts)
    id = client_id(conn)

    # The first DEBUG SLEEP runs (and blocks the server); a BLPOP behind it blocks this client once
    # the sleep is over, so that the CLIENT KILL (sent meanwhile) is served before the other 49
    # sleeps: they are in flight, written but never run. (Without the BLPOP, Redis would run every
    # sleep it has read before looking at the other connection.)
    # 1 s: time enough to submit the other 50 calls while it runs, even on a loaded machine.
    first = call_task(conn, ["DEBUG", "SLEEP", "1"], timeout: 10_000)
    await_in_flight([first])
    gate = call_task(conn, ["BLPOP", "failure:gate", "0"], timeout: 10_000)
    await_in_flight([gate])
    sleeps = for _ <- 1..49, do: call_task(conn, ["DEBUG", "SLEEP", "0.5"], timeout: 10_000)
    await_in_flight(sleeps)
    # The first sleep is running: the kill cannot be served before it.
    assert server_busy?(server)

    kill_client(server, id)
    killed_at = now()

    tasks = [first | sleeps]
    # The kill is served once the running sleep ends (within 1 s); then every caller is answered.
    results = Task.await_many([gate | tasks], 10_000)

    for {_result, stray} <- results, do: assert(stray == 0, "a caller got a message too many")
    [{gate_result, _} | sleep_results] = results
    sleep_results = Enum.map(sleep_results, &elem(&1, 0))

    assert gate_result == @disconnected
    assert length(sleep_results) == 50
    assert Enum.all?(sleep_results, &(&1 in [{:ok, "OK"}, @disconnected])), inspect(sleep_results)
    assert Enum.count(sleep_results, &(&1 == @disconnected)) >= 1
    # The sleep that ran was answered before the kill; those behind the BLPOP never ran.
    assert hd(sleep_results) == {:ok, "OK"}
    assert Enum.all?(tl(sleep_results), &(&1 == @disconnected))

    # Back by itself, on a new server-side client. (It takes about 1 s from the kill: the rest of the
    # running sleep, then backoff_initial; how long backoff waits is checked by the backoff tests.)
    assert await_true(fn -> match?({:ok, "PONG"}, RedixRs.command(conn, ["PING"])) end, 10_000),
           "not reconnected #{now() - killed_at} ms after the kill"

    assert client_id(conn) != id
    assert Process.alive?(conn)
  end

  ## The server goes away and comes back

  test "a stopped server gives :closed at once; after a restart on the same port the same process reconnects" do
    server = start_server()

    {:ok, conn} =
      RedixRs.start_link(
        port: server.port,
        sync_connect: true,
        backoff_initial: 100,
        backoff_max: 500
      )

    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    RedisServer.stop(server)

    # Once the loss has been noticed, calls are refused at once: not after their 5 s timeout (the
    # 1 s bound leaves room for a loaded machine and still tells the two apart).
    assert await_true(fn -> RedixRs.command(conn, ["PING"]) == @closed end, 5_000)

    for _ <- 1..5 do
      {elapsed_us, result} = :timer.tc(fn -> RedixRs.command(conn, ["PING"], timeout: 5_000) end)
      assert result == @closed
      assert elapsed_us < 1_000_000, "a call took #{div(elapsed_us, 1000)} ms to be refused"
      Process.sleep(30)
    end

    server = RedisServer.restart(server)
    assert is_integer(Helpers.await_pong(conn, 10_000))
    assert {:ok, "OK"} = RedixRs.command(conn, ["SET", "failure:back", "yes"])
    assert RedisServer.redis_cli(server, ["GET", "failure:back"]) == "$3\r\nyes\r\n"
    assert Process.alive?(conn)
  end

  ## Timeouts

  test "a reply slower than :timeout gives :timeout, no stray message, and the connection works" do
    server = start_server()
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)

    {elapsed_us, result} =
      :timer.tc(fn -> RedixRs.command(conn, ["DEBUG", "SLEEP", "2"], timeout: 50) end)

    # Returned at its 50 ms timeout, not with the reply (2 s).
    assert result == @timeout
    assert elapsed_us < 1_000_000, "the call took #{div(elapsed_us, 1000)} ms"

    # The PING is answered after the reply to DEBUG SLEEP was read (in order): that reply was
    # dropped, not sent to this process.
    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    refute_receive _, 200
    assert {:message_queue_len, 0} = Process.info(self(), :message_queue_len)

    # Replies still go to the right callers after the discarded one.
    assert {:ok, "after"} = RedixRs.command(conn, ["ECHO", "after"])
  end

  test "timeout: 0 times out a command that is still running, and leaves nothing behind" do
    server = start_server()
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)

    assert RedixRs.command(conn, ["DEBUG", "SLEEP", "0.1"], timeout: 0) == @timeout
    # Answered after the sleep's reply was read and dropped.
    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    refute_receive _, 200
  end

  # As in Redix, `timeout: 0` is always a timeout, even when the reply beat the caller to its receive
  # (before the fix, about 1 in 2,000 ECHOs returned {:ok, _}).
  test "timeout: 0 always times out, even for fast commands" do
    server = start_server()
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)

    # Several callers at once make it likelier that one is descheduled right after submitting.
    results =
      1..8
      |> Enum.map(fn _ ->
        Task.async(fn ->
          for i <- 1..2_000, do: RedixRs.command(conn, ["ECHO", "#{i}"], timeout: 0)
        end)
      end)
      |> Task.await_many(30_000)
      |> List.flatten()

    assert Enum.all?(results, &(&1 == @timeout)),
           inspect(Enum.frequencies(results) |> Enum.take(5))

    refute_receive _, 200
    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    assert {:ok, "last"} = RedixRs.command(conn, ["ECHO", "last"])
  end

  ## The connection process dies mid-call

  test "killing the connection process with 100 calls in flight: every caller ends, none hangs" do
    server = start_server()
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)
    Process.unlink(conn)

    tasks =
      for i <- 1..100 do
        Task.async(fn ->
          safe_command(conn, ["BLPOP", "failure:never:#{i}", "0"], timeout: :infinity)
        end)
      end

    await_in_flight(tasks)
    killed_at = now()
    Process.exit(conn, :kill)

    # Every caller ends when the process dies (a hang would be forever: :infinity timeouts).
    results = Task.yield_many(tasks, 5_000)
    elapsed = now() - killed_at
    hung = Enum.count(results, fn {_task, result} -> result == nil end)

    Enum.each(results, fn {task, result} ->
      if result == nil, do: Task.shutdown(task, :brutal_kill)
    end)

    assert hung == 0, "#{hung} callers still waiting #{elapsed} ms after the kill"
    results = Enum.map(results, fn {_task, {:ok, result}} -> result end)

    assert Enum.all?(results, fn
             {:exit, {:redix_exited_during_call, :killed}} -> true
             {:error, %ConnectionError{}} -> true
             _ -> false
           end),
           inspect(Enum.uniq(results))

    assert Enum.any?(results, &(&1 == {:exit, {:redix_exited_during_call, :killed}}))
  end

  test "RedixRs.stop/1 with calls in flight: callers exit with :normal or get an answer" do
    server = start_server()
    # No side connections: the BLPOP below must block this connection.
    {:ok, conn} =
      RedixRs.start_link(port: server.port, sync_connect: true, max_side_connections: 0)

    # A few calls answered quickly, then 50 blocked behind a BLPOP that never returns.
    quick = for i <- 1..10, do: call_task(conn, ["ECHO", "#{i}"])
    await_in_flight(quick)
    gate = call_task(conn, ["BLPOP", "failure:never", "0"], timeout: :infinity)
    await_in_flight([gate])
    blocked = for i <- 1..50, do: call_task(conn, ["ECHO", "#{i}"], timeout: :infinity)
    await_in_flight(blocked)

    # stop/1 does not wait for the BLPOP (which never returns) nor for the calls behind it.
    {stop_us, :ok} = :timer.tc(fn -> RedixRs.stop(conn) end)
    assert stop_us < 5_000_000, "stop/1 took #{div(stop_us, 1000)} ms"
    refute Process.alive?(conn)

    tasks = quick ++ [gate | blocked]
    results = Task.yield_many(tasks, 5_000)
    hung = Enum.count(results, fn {_task, result} -> result == nil end)

    Enum.each(results, fn {task, result} ->
      if result == nil, do: Task.shutdown(task, :brutal_kill)
    end)

    assert hung == 0, "#{hung} callers hang after RedixRs.stop/1"

    results = Enum.map(results, fn {_task, {:ok, result}} -> result end)
    for {_result, stray} <- results, do: assert(stray == 0, "a caller got a message too many")
    {quick_results, in_flight} = results |> Enum.map(&elem(&1, 0)) |> Enum.split(10)

    # Submitted before the BLPOP: answered, unless the stop came before their replies did.
    for {result, i} <- Enum.with_index(quick_results, 1) do
      assert result in [{:ok, "#{i}"}, {:exit, {:redix_exited_during_call, :normal}}]
    end

    assert Enum.all?(in_flight, &(&1 == {:exit, {:redix_exited_during_call, :normal}})),
           inspect(Enum.uniq(in_flight))
  end

  ## Passwords from {m, f, a}

  def counting_password(counter, password) do
    :counters.add(counter, 1, 1)
    password
  end

  test "an {m, f, a} password is called again at each reconnection" do
    server = start_server(password: "rotating")
    counter = :counters.new(1, [])

    {:ok, conn} =
      RedixRs.start_link(
        port: server.port,
        password: {__MODULE__, :counting_password, [counter, "rotating"]},
        sync_connect: true,
        backoff_initial: 50
      )

    assert :counters.get(counter, 1) == 1

    for expected <- 2..4 do
      id = client_id(conn)
      kill_client(server, id)
      assert is_integer(Helpers.await_pong(conn, 10_000))
      assert client_id(conn) != id
      assert :counters.get(counter, 1) == expected
    end
  end

  ## Backoff

  test "reconnection attempts back off by x1.5 from backoff_initial, and start over after a success" do
    server = start_server()

    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true, backoff_initial: 200)

    attach_telemetry(conn, [:disconnection, :failed_connection, :connection])
    RedisServer.stop(server)

    assert_receive {:telemetry, :disconnection, disconnected_at, _}, 5_000
    failures = collect_events(:failed_connection, 4, 5_000)
    # 200, then 300, 450, 675. Ruled out: a constant 200 (the second gap would be under 240), x2
    # (the fourth would be 1,600 > 1,075), the default 500 ignoring backoff_initial (the second
    # would be 750 > 700).
    assert_backoff(gaps([disconnected_at | failures]), [200, 300, 450, 675])

    # A success resets the backoff: the next loss waits backoff_initial again (200 ms, not the
    # 1,012 ms that would come next, over the 900 allowed).
    server = RedisServer.restart(server)
    assert_receive {:telemetry, :connection, _, %{reconnection: true}}, 5_000
    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    flush_telemetry()

    RedisServer.stop(server)
    assert_receive {:telemetry, :disconnection, disconnected_at, _}, 5_000
    assert_receive {:telemetry, :failed_connection, failed_at, _}, 5_000
    assert_backoff([failed_at - disconnected_at], [200])
  end

  test "backoff_max caps the wait between attempts" do
    server = start_server()

    {:ok, conn} =
      RedixRs.start_link(
        port: server.port,
        sync_connect: true,
        backoff_initial: 200,
        backoff_max: 300
      )

    attach_telemetry(conn, [:disconnection, :failed_connection])
    RedisServer.stop(server)

    assert_receive {:telemetry, :disconnection, disconnected_at, _}, 5_000
    failures = collect_events(:failed_connection, 6, 5_000)
    # 200, then capped at 300 (uncapped: 450, 675, then 1,012 and 1,518: two gaps over the 700
    # allowed, so one gap stretched by a stall of the loaded machine is tolerated).
    assert_backoff(gaps([disconnected_at | failures]), [200, 300, 300, 300, 300, 300], 1)
  end

  defp flush_telemetry do
    receive do
      {:telemetry, _, _, _} -> flush_telemetry()
    after
      0 -> :ok
    end
  end

  ## exit_on_disconnection

  test "exit_on_disconnection: true makes the process exit with the ConnectionError on CLIENT KILL" do
    server = start_server()
    Process.flag(:trap_exit, true)

    {:ok, conn} =
      RedixRs.start_link(port: server.port, sync_connect: true, exit_on_disconnection: true)

    kill_client(server, client_id(conn))
    assert_receive {:EXIT, ^conn, %ConnectionError{}}, 5_000
    refute Process.alive?(conn)
  end

  test "exit_on_disconnection: true, the server stops: the process exits" do
    server = start_server()
    Process.flag(:trap_exit, true)

    {:ok, conn} =
      RedixRs.start_link(port: server.port, sync_connect: true, exit_on_disconnection: true)

    RedisServer.stop(server)
    assert_receive {:EXIT, ^conn, %ConnectionError{}}, 5_000
  end

  test "while waiting to reconnect (server stopped), calls get :closed immediately" do
    server = start_server()

    {:ok, conn} =
      RedixRs.start_link(port: server.port, sync_connect: true, backoff_initial: 5_000)

    attach_telemetry(conn, [:disconnection])
    RedisServer.stop(server)
    assert_receive {:telemetry, :disconnection, _, _}, 5_000

    {elapsed_us, results} =
      :timer.tc(fn -> for _ <- 1..20, do: RedixRs.command(conn, ["PING"], timeout: 5_000) end)

    # Refused at once: all 20 in less than half of one call's timeout (or of the backoff).
    assert Enum.all?(results, &(&1 == @closed)), inspect(Enum.uniq(results))
    assert elapsed_us < 2_500_000, "20 refused calls took #{div(elapsed_us, 1000)} ms"
    assert Process.alive?(conn)
  end

  ## QUIT

  test "QUIT answers OK, then the connection reconnects by itself" do
    server = start_server()
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true, backoff_initial: 100)
    attach_telemetry(conn, [:disconnection, :connection])
    id = client_id(conn)

    assert {:ok, "OK"} = RedixRs.command(conn, ["QUIT"])
    assert_receive {:telemetry, :disconnection, _, _}, 5_000
    assert_receive {:telemetry, :connection, _, %{reconnection: true}}, 5_000
    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    assert client_id(conn) != id
  end

  ## Starting while the server is down

  test "sync_connect: false with the server down: start_link succeeds, calls get :closed until it is up" do
    server = start_server()
    RedisServer.stop(server)

    {:ok, conn} =
      RedixRs.start_link(
        port: server.port,
        sync_connect: false,
        backoff_initial: 100,
        backoff_max: 300
      )

    assert is_pid(conn)

    for _ <- 1..3 do
      assert RedixRs.command(conn, ["PING"], timeout: 5_000) == @closed
      Process.sleep(50)
    end

    assert Process.alive?(conn)
    _server = RedisServer.restart(server)
    assert is_integer(Helpers.await_pong(conn, 10_000))
    assert {:ok, "up"} = RedixRs.command(conn, ["ECHO", "up"])
  end

  ## Calls during a connection attempt

  test "a call during a stalled connection attempt waits no longer than its own timeout" do
    # A listener that accepts and never answers: the handshake (AUTH) stalls.
    {:ok, listen} =
      :gen_tcp.listen(0, [:binary, ip: {127, 0, 0, 1}, active: false, reuseaddr: true])

    {:ok, port} = :inet.port(listen)
    test = self()

    acceptor =
      spawn_link(fn ->
        {:ok, socket} = :gen_tcp.accept(listen)
        send(test, :accepted)
        Process.sleep(:infinity)
        :gen_tcp.close(socket)
      end)

    on_exit(fn -> Process.exit(acceptor, :kill) end)

    {:ok, conn} =
      RedixRs.start_link(
        port: port,
        password: "never-checked",
        sync_connect: false,
        timeout: 2_000,
        backoff_initial: 10_000
      )

    assert_receive :accepted, 5_000

    # It returns at its own 100 ms timeout, not when the attempt gives up (2 s).
    {elapsed_us, result} = :timer.tc(fn -> RedixRs.command(conn, ["PING"], timeout: 100) end)

    assert result == @timeout
    assert elapsed_us < 1_000_000, "the call took #{div(elapsed_us, 1000)} ms"
    assert Process.alive?(conn)

    # When the attempt gives up (after 2 s), nothing is sent to the caller that already timed out.
    refute_receive _, 2_500
    assert Process.alive?(conn)
  end
end
