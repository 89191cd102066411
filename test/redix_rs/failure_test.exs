defmodule RedixRs.FailureTest do
  # Failure handling, as in Redix: connections killed by the server, servers that stop and come back,
  # timeouts, connection processes that die mid-call, backoff, exit_on_disconnection, QUIT, and calls
  # made while a connection attempt is in progress. Every test that kills, stops or blocks a server
  # (DEBUG SLEEP blocks the whole server) starts its own, so the tests can run side by side.
  use ExUnit.Case, async: true

  # Connections that stop on purpose log their exit, as Redix's do.
  @moduletag :capture_log

  alias RedixRs.ConnectionError
  alias RedixRs.Test.RedisServer

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

  # Polls PING until it answers PONG; returns the milliseconds it took, or :never after `within_ms`.
  defp await_pong(conn, within_ms) do
    started = now()
    await_pong(conn, started, started + within_ms)
  end

  defp await_pong(conn, started, deadline) do
    case RedixRs.command(conn, ["PING"], timeout: 500) do
      {:ok, "PONG"} ->
        now() - started

      _other ->
        if now() >= deadline do
          :never
        else
          Process.sleep(10)
          await_pong(conn, started, deadline)
        end
    end
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
             2_000
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

  ## CLIENT KILL with calls in flight

  test "CLIENT KILL during in-flight DEBUG SLEEPs: one answer per caller, then a reconnect" do
    server = start_server()
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true, backoff_initial: 100)
    id = client_id(conn)

    # The first DEBUG SLEEP runs (and blocks the server); a BLPOP behind it blocks this client once
    # the sleep is over, so that the CLIENT KILL (sent meanwhile) is served before the other 49
    # sleeps: they are in flight, written but never run. (Without the BLPOP, Redis would run every
    # sleep it has read before looking at the other connection.)
    first = call_task(conn, ["DEBUG", "SLEEP", "0.5"], timeout: 10_000)
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
    results = Task.await_many([gate | tasks], 2_000)

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

    # backoff_initial: 100 → back within about a second of the kill, on a new server-side client.
    assert await_true(fn -> match?({:ok, "PONG"}, RedixRs.command(conn, ["PING"])) end, 1_000)
    assert now() - killed_at < 1_200
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

    # Once the loss has been noticed, calls are refused at once.
    assert await_true(fn -> RedixRs.command(conn, ["PING"]) == @closed end, 2_000)

    for _ <- 1..5 do
      {elapsed_us, result} = :timer.tc(fn -> RedixRs.command(conn, ["PING"]) end)
      assert result == @closed
      assert elapsed_us < 100_000, "a call took #{div(elapsed_us, 1000)} ms to be refused"
      Process.sleep(30)
    end

    server = RedisServer.restart(server)
    assert is_integer(await_pong(conn, 3_000))
    assert {:ok, "OK"} = RedixRs.command(conn, ["SET", "failure:back", "yes"])
    assert RedisServer.redis_cli(server, ["GET", "failure:back"]) == "$3\r\nyes\r\n"
    assert Process.alive?(conn)
  end

  ## Timeouts

  test "a reply slower than :timeout gives :timeout, no stray message, and the connection works" do
    server = start_server()
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)

    {elapsed_us, result} =
      :timer.tc(fn -> RedixRs.command(conn, ["DEBUG", "SLEEP", "0.3"], timeout: 50) end)

    assert result == @timeout
    assert elapsed_us < 250_000

    # The reply to DEBUG SLEEP arrives about 250 ms later and must be dropped.
    refute_receive _, 500
    assert {:message_queue_len, 0} = Process.info(self(), :message_queue_len)

    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    # Replies still go to the right callers after the discarded one.
    assert {:ok, "after"} = RedixRs.command(conn, ["ECHO", "after"])
  end

  test "timeout: 0 times out a command that is still running, and leaves nothing behind" do
    server = start_server()
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)

    assert RedixRs.command(conn, ["DEBUG", "SLEEP", "0.1"], timeout: 0) == @timeout
    refute_receive _, 300
    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
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

    results = Task.yield_many(tasks, 1_000)
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
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)

    # A few calls answered quickly, then 50 blocked behind a BLPOP that never returns.
    quick = for i <- 1..10, do: call_task(conn, ["ECHO", "#{i}"])
    await_in_flight(quick)
    gate = call_task(conn, ["BLPOP", "failure:never", "0"], timeout: :infinity)
    await_in_flight([gate])
    blocked = for i <- 1..50, do: call_task(conn, ["ECHO", "#{i}"], timeout: :infinity)
    await_in_flight(blocked)

    {stop_us, :ok} = :timer.tc(fn -> RedixRs.stop(conn) end)
    assert stop_us < 1_000_000
    refute Process.alive?(conn)

    tasks = quick ++ [gate | blocked]
    results = Task.yield_many(tasks, 1_500)
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
      assert is_integer(await_pong(conn, 2_000))
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

    assert_receive {:telemetry, :disconnection, disconnected_at, _}, 2_000
    failures = collect_events(:failed_connection, 4, 3_000)
    # 200, then 300, 450, 675.
    expected = [200, 300, 450, 675]
    actual = gaps([disconnected_at | failures])

    for {gap, want} <- Enum.zip(actual, expected) do
      assert gap >= 0.8 * want and gap <= 2 * want,
             "gaps #{inspect(actual)}, expected about #{inspect(expected)}"
    end

    # A success resets the backoff: the next loss waits backoff_initial again.
    server = RedisServer.restart(server)
    assert_receive {:telemetry, :connection, _, %{reconnection: true}}, 3_000
    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    flush_telemetry()

    RedisServer.stop(server)
    assert_receive {:telemetry, :disconnection, disconnected_at, _}, 2_000
    assert_receive {:telemetry, :failed_connection, failed_at, _}, 2_000
    gap = failed_at - disconnected_at
    assert gap >= 160 and gap <= 400, "first attempt after a reset waited #{gap} ms"
  end

  test "backoff_max caps the wait between attempts" do
    server = start_server()

    {:ok, conn} =
      RedixRs.start_link(
        port: server.port,
        sync_connect: true,
        backoff_initial: 100,
        backoff_max: 200
      )

    attach_telemetry(conn, [:disconnection, :failed_connection])
    RedisServer.stop(server)

    assert_receive {:telemetry, :disconnection, disconnected_at, _}, 2_000
    failures = collect_events(:failed_connection, 6, 3_000)
    # 100, 150, then capped at 200 (uncapped it would be 225, 338, 506, 759). Timers never fire
    # early, so the lower bounds are tight; the upper ones leave room for a loaded machine.
    actual = gaps([disconnected_at | failures])
    expected = [100, 150, 200, 200, 200, 200]

    for {gap, want} <- Enum.zip(actual, expected) do
      assert gap >= 0.8 * want and gap <= 2 * want,
             "gaps #{inspect(actual)}, expected about #{inspect(expected)}"
    end
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
    assert_receive {:EXIT, ^conn, %ConnectionError{}}, 1_000
    refute Process.alive?(conn)
  end

  test "exit_on_disconnection: true, the server stops: the process exits" do
    server = start_server()
    Process.flag(:trap_exit, true)

    {:ok, conn} =
      RedixRs.start_link(port: server.port, sync_connect: true, exit_on_disconnection: true)

    RedisServer.stop(server)
    assert_receive {:EXIT, ^conn, %ConnectionError{}}, 1_000
  end

  test "while waiting to reconnect (server stopped), calls get :closed immediately" do
    server = start_server()

    {:ok, conn} =
      RedixRs.start_link(port: server.port, sync_connect: true, backoff_initial: 5_000)

    attach_telemetry(conn, [:disconnection])
    RedisServer.stop(server)
    assert_receive {:telemetry, :disconnection, _, _}, 2_000

    {elapsed_us, results} =
      :timer.tc(fn -> for _ <- 1..20, do: RedixRs.command(conn, ["PING"], timeout: 5_000) end)

    assert Enum.all?(results, &(&1 == @closed)), inspect(Enum.uniq(results))
    assert elapsed_us < 100_000, "20 refused calls took #{div(elapsed_us, 1000)} ms"
    assert Process.alive?(conn)
  end

  ## QUIT

  test "QUIT answers OK, then the connection reconnects by itself" do
    server = start_server()
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true, backoff_initial: 100)
    attach_telemetry(conn, [:disconnection, :connection])
    id = client_id(conn)

    assert {:ok, "OK"} = RedixRs.command(conn, ["QUIT"])
    assert_receive {:telemetry, :disconnection, _, _}, 1_000
    assert_receive {:telemetry, :connection, _, %{reconnection: true}}, 2_000
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
      assert RedixRs.command(conn, ["PING"], timeout: 1_000) == @closed
      Process.sleep(50)
    end

    assert Process.alive?(conn)
    _server = RedisServer.restart(server)
    assert is_integer(await_pong(conn, 3_000))
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

    assert_receive :accepted, 1_000

    {elapsed_us, result} = :timer.tc(fn -> RedixRs.command(conn, ["PING"], timeout: 100) end)

    assert result == @timeout
    assert elapsed_us < 300_000, "the call took #{div(elapsed_us, 1000)} ms"
    assert Process.alive?(conn)

    # When the attempt gives up (after 2 s), nothing is sent to the caller that already timed out.
    refute_receive _, 2_500
    assert Process.alive?(conn)
  end
end
