defmodule RedixRs.NoreplyTransactionTest do
  # noreply_pipeline/noreply_command (CLIENT REPLY OFF ... ON), transaction_pipeline (MULTI ... EXEC)
  # and their bang variants, against real redis-server processes: the replies callers get, and that the
  # shared connection stays in sync afterwards (every later caller gets its own replies).
  use ExUnit.Case, async: true

  # Some tests stop the connections they start (and a paused server makes a connection wait).
  @moduletag :capture_log

  alias RedixRs.Error
  alias RedixRs.Test.{RedisServer, Servers}

  setup do
    {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    %{conn: conn, prefix: "nrtx:#{System.unique_integer([:positive])}:"}
  end

  describe "noreply_pipeline/3 and noreply_command/3" do
    test "return :ok and the writes happened", %{conn: c, prefix: p} do
      assert :ok =
               RedixRs.noreply_pipeline(c, [
                 ["SET", p <> "a", "1"],
                 ["INCR", p <> "a"],
                 ["RPUSH", p <> "l", "x", "y", "z"]
               ])

      assert {:ok, "2"} = RedixRs.command(c, ["GET", p <> "a"])
      assert {:ok, ["x", "y", "z"]} = RedixRs.command(c, ["LRANGE", p <> "l", 0, -1])

      assert :ok = RedixRs.noreply_command(c, ["SET", p <> "b", "hello"])
      assert {:ok, "hello"} = RedixRs.command(c, ["GET", p <> "b"])

      # Non-binary arguments go through String.Chars, as in every other call.
      assert :ok = RedixRs.noreply_command(c, [:INCRBY, p <> "a", 40])
      assert {:ok, "42"} = RedixRs.command(c, ["GET", p <> "a"])
    end

    test "bang variants return :ok and the writes happened", %{conn: c, prefix: p} do
      assert :ok = RedixRs.noreply_pipeline!(c, [["SET", p <> "a", "1"], ["INCR", p <> "a"]])
      assert :ok = RedixRs.noreply_command!(c, ["INCRBY", p <> "a", 10])
      assert {:ok, "12"} = RedixRs.command(c, ["GET", p <> "a"])
    end

    test "a noreply call is answered only once Redis has run it", %{conn: c, prefix: p} do
      # The value is read back on another connection: :ok must mean "done", not "queued".
      {:ok, other} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
      commands = for i <- 1..1_000, do: ["RPUSH", p <> "list", i]
      assert :ok = RedixRs.noreply_pipeline(c, commands)
      assert {:ok, 1_000} = RedixRs.command(other, ["LLEN", p <> "list"])
    end

    test "errors inside a noreply pipeline are not reported, and the connection stays in sync",
         %{conn: c, prefix: p} do
      assert :ok =
               RedixRs.noreply_pipeline(c, [
                 ["SET", p <> "s", "text"],
                 # a runtime error
                 ["INCR", p <> "s"],
                 # a wrong number of arguments
                 ["SET", p <> "only-key"],
                 # an unknown command
                 ["NOSUCHCOMMAND", "x"],
                 ["SET", p <> "after", "ok"]
               ])

      # Had any of those error replies come back, these would be off by one (or more).
      assert {:ok, "text"} = RedixRs.command(c, ["GET", p <> "s"])
      assert {:ok, "ok"} = RedixRs.command(c, ["GET", p <> "after"])
      assert {:ok, nil} = RedixRs.command(c, ["GET", p <> "only-key"])
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])

      assert {:ok, ["a", "b", 1]} =
               RedixRs.pipeline(c, [["ECHO", "a"], ["ECHO", "b"], ["DEL", p <> "s"]])

      assert :ok = RedixRs.noreply_command(c, ["INCR", p <> "s"])
      assert {:ok, "1"} = RedixRs.command(c, ["GET", p <> "s"])
    end

    test "concurrent callers keep their own replies around noreply calls", %{conn: c, prefix: p} do
      tasks =
        for i <- 1..20 do
          Task.async(fn ->
            for j <- 1..50 do
              value = "#{i}:#{j}"
              assert :ok = RedixRs.noreply_pipeline(c, [["SET", "#{p}#{i}", value], ["BADCMD"]])
              assert {:ok, ^value} = RedixRs.command(c, ["GET", "#{p}#{i}"])
              assert {:ok, ^value} = RedixRs.command(c, ["ECHO", value])
            end
          end)
        end

      Task.await_many(tasks, 30_000)
    end
  end

  describe "noreply_pipeline/3 on a server that disables CLIENT" do
    setup do
      # Redis 7.0 accepts rename-command on the command line; renaming to "" disables the command.
      server = RedisServer.start(args: ["--rename-command", "CLIENT", ""])
      {:ok, conn} = RedixRs.start_link(host: "127.0.0.1", port: server.port, sync_connect: true)

      assert {:error, %Error{message: "ERR unknown command" <> _}} =
               RedixRs.command(conn, ["CLIENT", "ID"])

      %{server: server, conn: conn}
    end

    test "returns {:error, %RedixRs.Error{}} and no reply leaks to the next caller", %{conn: c} do
      assert {:error, %Error{message: message} = error} =
               RedixRs.noreply_pipeline(c, [["SET", "a", "1"], ["GET", "a"], ["INCR", "a"]])

      # The error is Redis's refusal of CLIENT REPLY OFF, which says what is wrong.
      assert message =~ "unknown command"
      assert message =~ "CLIENT"
      assert Exception.message(error) == message

      # Without CLIENT REPLY OFF the commands ran (and answered); those answers ("OK", "1", 2) and the
      # error of CLIENT REPLY ON must not reach the next callers.
      assert {:ok, "2"} = RedixRs.command(c, ["GET", "a"])
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
      assert {:ok, "hello"} = RedixRs.command(c, ["ECHO", "hello"])
      assert {:ok, 3} = RedixRs.command(c, ["INCR", "a"])
      assert {:ok, ["x", "y"]} = RedixRs.pipeline(c, [["ECHO", "x"], ["ECHO", "y"]])

      assert {:error, %Error{}} = RedixRs.noreply_command(c, ["SET", "b", "2"])

      assert_raise Error, ~r/CLIENT/, fn -> RedixRs.noreply_pipeline!(c, [["SET", "c", "3"]]) end
      assert_raise Error, ~r/CLIENT/, fn -> RedixRs.noreply_command!(c, ["SET", "d", "4"]) end

      values = for i <- 1..100, do: "value-#{i}"
      assert {:ok, _} = RedixRs.pipeline(c, for(i <- 1..100, do: ["SET", "k#{i}", "value-#{i}"]))
      assert {:ok, ^values} = RedixRs.pipeline(c, for(i <- 1..100, do: ["GET", "k#{i}"]))
      assert {:ok, "2"} = RedixRs.command(c, ["GET", "b"])
    end

    test "a refused noreply pipeline whose commands fail too keeps the connection in sync",
         %{conn: c} do
      assert {:error, %Error{}} =
               RedixRs.noreply_pipeline(c, [["SET", "s", "x"], ["INCR", "s"], ["SET", "only"]])

      assert {:ok, "x"} = RedixRs.command(c, ["GET", "s"])
      assert {:ok, ["PONG", "x"]} = RedixRs.pipeline(c, [["PING"], ["GET", "s"]])
    end

    test "other callers running at the same time get their own replies", %{conn: c} do
      tasks =
        for i <- 1..20 do
          Task.async(fn ->
            for j <- 1..50 do
              value = "#{i}:#{j}"

              if rem(j, 2) == 0 do
                assert {:error, %Error{}} =
                         RedixRs.noreply_pipeline(c, [["SET", "t#{i}", value], ["ECHO", "leak"]])

                assert {:ok, ^value} = RedixRs.command(c, ["GET", "t#{i}"])
              else
                assert {:ok, [^value, "OK"]} =
                         RedixRs.pipeline(c, [["ECHO", value], ["SET", "t#{i}", value]])
              end
            end
          end)
        end

      Task.await_many(tasks, 30_000)
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
    end
  end

  describe "transaction_pipeline/3" do
    test "returns the replies of EXEC", %{conn: c, prefix: p} do
      assert {:ok, ["OK", 2, "2"]} =
               RedixRs.transaction_pipeline(c, [
                 ["SET", p <> "t", "1"],
                 ["INCR", p <> "t"],
                 ["GET", p <> "t"]
               ])

      assert {:ok, [3]} = RedixRs.transaction_pipeline(c, [["INCR", p <> "t"]])

      assert ["OK", "v"] =
               RedixRs.transaction_pipeline!(c, [["SET", p <> "u", "v"], ["GET", p <> "u"]])

      # The connection is out of MULTI afterwards.
      assert {:ok, "3"} = RedixRs.command(c, ["GET", p <> "t"])
    end

    test "an error while queueing aborts it: {:error, EXECABORT}", %{conn: c, prefix: p} do
      assert {:error, %Error{message: "EXECABORT" <> _}} =
               RedixRs.transaction_pipeline(c, [["SET", p <> "t", "1"], ["SET", p <> "t"]])

      # Nothing ran, and the connection is not left inside MULTI.
      assert {:ok, nil} = RedixRs.command(c, ["GET", p <> "t"])
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
      assert {:ok, ["OK"]} = RedixRs.transaction_pipeline(c, [["SET", p <> "t", "2"]])

      assert_raise Error, ~r/^EXECABORT/, fn ->
        RedixRs.transaction_pipeline!(c, [["INCR", p <> "t"], ["GET"]])
      end

      assert {:ok, "2"} = RedixRs.command(c, ["GET", p <> "t"])
    end

    test "an error while running stays inline in the list", %{conn: c, prefix: p} do
      assert {:ok, ["OK", %Error{message: "ERR value is not an integer" <> _}, "text"]} =
               RedixRs.transaction_pipeline(c, [
                 ["SET", p <> "s", "text"],
                 ["INCR", p <> "s"],
                 ["GET", p <> "s"]
               ])

      assert ["OK", %Error{message: "WRONGTYPE" <> _}] =
               RedixRs.transaction_pipeline!(c, [["SET", p <> "s", "x"], ["LPUSH", p <> "s", "y"]])
    end

    test "an empty list of commands raises FunctionClauseError, as in Redix", %{conn: c} do
      assert_raise FunctionClauseError, fn -> RedixRs.transaction_pipeline(c, []) end
      assert_raise FunctionClauseError, fn -> RedixRs.transaction_pipeline!(c, []) end
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
    end

    test "a WATCHed key changed by another connection: {:ok, nil}", %{conn: c, prefix: p} do
      {:ok, other} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
      key = p <> "watched"
      assert {:ok, "OK"} = RedixRs.command(c, ["SET", key, "1"])

      assert {:ok, "OK"} = RedixRs.command(c, ["WATCH", key])
      assert {:ok, "OK"} = RedixRs.command(other, ["SET", key, "changed"])
      assert {:ok, nil} = RedixRs.transaction_pipeline(c, [["SET", key, "mine"], ["GET", key]])
      # Nothing ran, and the connection is not left inside MULTI.
      assert {:ok, "changed"} = RedixRs.command(c, ["GET", key])

      assert {:ok, "OK"} = RedixRs.command(c, ["WATCH", key])
      assert {:ok, 1} = RedixRs.command(other, ["DEL", key])
      assert nil == RedixRs.transaction_pipeline!(c, [["SET", key, "mine"]])
      assert {:ok, nil} = RedixRs.command(c, ["GET", key])

      # EXEC unwatches: without a new WATCH the transaction runs although the key changed again.
      assert {:ok, "OK"} = RedixRs.command(other, ["SET", key, "again"])

      assert {:ok, ["OK", "mine"]} =
               RedixRs.transaction_pipeline(c, [["SET", key, "mine"], ["GET", key]])

      # A WATCHed key nobody changed: it runs.
      assert {:ok, "OK"} = RedixRs.command(c, ["WATCH", key])
      assert {:ok, [1]} = RedixRs.transaction_pipeline(c, [["DEL", key]])
    end

    test "no other caller's command lands between MULTI and EXEC", %{conn: c, prefix: p} do
      k = p <> "k"
      k2 = p <> "k2"
      stop = :atomics.new(1, [])

      incrementers =
        for _ <- 1..50 do
          Task.async(fn ->
            Stream.repeatedly(fn ->
              # INCR on k2 too: had one landed inside a transaction, its GET would not be "1".
              assert {:ok, [n, _]} = RedixRs.pipeline(c, [["INCR", k], ["INCR", k2]])
              assert {:ok, _} = RedixRs.command(c, ["INCR", k2])
              n
            end)
            |> Enum.reduce_while(0, fn _, count ->
              if :atomics.get(stop, 1) == 1, do: {:halt, count}, else: {:cont, count + 1}
            end)
          end)
        end

      # The incrementers are running before the first transaction.
      assert RedixRs.Test.Helpers.eventually(fn -> counter(c, k) > 500 end)
      before = counter(c, k)

      results =
        Task.async(fn ->
          for _ <- 1..200 do
            RedixRs.transaction_pipeline(c, [["SET", k2, "0"], ["INCR", k2], ["GET", k2]])
          end
        end)
        |> Task.await(60_000)

      after_transactions = counter(c, k)
      :atomics.put(stop, 1, 1)
      counts = Task.await_many(incrementers, 30_000)

      assert Enum.uniq(results) == [{:ok, ["OK", 1, "1"]}]
      # The other callers really were interleaving with the transactions.
      assert after_transactions - before > 200
      assert Enum.all?(counts, &(&1 > 0))
    end
  end

  describe "write_queue_limit" do
    test "a single submission larger than the limit is accepted when nothing is queued", %{
      prefix: p
    } do
      {:ok, c} =
        RedixRs.start_link(port: Servers.port(), write_queue_limit: 1_000, sync_connect: true)

      value = :binary.copy("v", 100_000)

      assert {:ok, ["OK"]} = RedixRs.pipeline(c, [["SET", p <> "big", value]])
      assert {:ok, ^value} = RedixRs.command(c, ["GET", p <> "big"])

      commands = for i <- 1..500, do: ["SET", "#{p}#{i}", "value-#{i}"]
      assert :ok = RedixRs.noreply_pipeline(c, commands)
      assert {:ok, ["OK" | _]} = RedixRs.transaction_pipeline(c, commands)
      assert {:ok, "value-500"} = RedixRs.command(c, ["GET", "#{p}500"])
    end
  end

  # The integer value of a counter key (0 when it does not exist).
  defp counter(conn, key) do
    case RedixRs.command(conn, ["GET", key]) do
      {:ok, nil} -> 0
      {:ok, value} -> String.to_integer(value)
    end
  end
end

defmodule RedixRs.NoreplyTransactionSyncTest do
  # Tests that measure the VM's memory or time a call: not async, so that no other test module
  # allocates or loads the schedulers at the same time.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias RedixRs.ConnectionError
  alias RedixRs.Test.RedisServer

  @mb 1024 * 1024

  @tag timeout: 300_000
  test "a noreply_pipeline of 1,000,000 SETs works and does not hold on to memory" do
    server = RedisServer.start()
    {:ok, c} = RedixRs.start_link(host: "127.0.0.1", port: server.port, sync_connect: true)
    assert {:ok, 0} = RedixRs.command(c, ["DBSIZE"])

    # One 100-byte value shared by every command: the list stays small (~100 MB of terms) while the
    # encoded commands take ~140 MB, so holding on to them would fail the 64 MB bound below.
    value = :binary.copy("v", 100)

    # Built in another process and kept as a persistent term: the list lives outside this process's
    # heap, so the garbage of building it and the sizing of this heap do not blur the measures.
    key = {__MODULE__, :commands}

    {builder, ref} =
      spawn_monitor(fn ->
        :persistent_term.put(key, for(i <- 1..1_000_000, do: ["SET", "key:#{i}", value]))
      end)

    # Gone, heap and all, before the first measure.
    assert_receive {:DOWN, ^ref, :process, ^builder, :normal}, 60_000

    commands = :persistent_term.get(key)
    {beam_before, rss_before} = settled_memory()

    assert :ok = RedixRs.noreply_pipeline(c, commands, timeout: 120_000)

    {beam_after, rss_after} = settled_memory()

    assert {:ok, 1_000_000} = RedixRs.command(c, ["DBSIZE"])
    assert {:ok, ^value} = RedixRs.command(c, ["GET", "key:1000000"])
    # The connection is in sync and replies again after REPLY ON.
    assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])

    assert beam_after - beam_before < 64 * @mb,
           "BEAM memory grew by #{div(beam_after - beam_before, @mb)} MB"

    assert rss_after - rss_before < 64 * @mb,
           "RSS grew by #{div(rss_after - rss_before, @mb)} MB"

    # The command list stays alive until here, so the measures are of what the call kept.
    assert length(commands) == 1_000_000
    :persistent_term.erase(key)
    RedixRs.stop(c)
    RedisServer.stop(server)
  end

  @tag timeout: 120_000
  test "a full write queue refuses new submissions at once, and drains when Redis reads again" do
    server = RedisServer.start()

    {:ok, c} =
      RedixRs.start_link(
        host: "127.0.0.1",
        port: server.port,
        write_queue_limit: 1_000,
        sync_connect: true
      )

    assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])

    try do
      :ok = RedisServer.os_kill(server, "STOP")

      # 50 MB that the paused server does not read: the socket buffers fill and the writer waits with
      # it, so the queue behind it is empty.
      big = :binary.copy("x", 50_000_000)
      big_set = Task.async(fn -> RedixRs.command(c, ["SET", "big", big], timeout: 60_000) end)
      Process.sleep(500)
      assert Task.yield(big_set, 0) == nil

      # One submission larger than the limit is accepted on an empty queue; it now waits.
      filler = :binary.copy("f", 2_000)

      filled =
        Task.async(fn -> RedixRs.pipeline(c, [["SET", "filler", filler]], timeout: 60_000) end)

      assert Task.yield(filled, 300) == nil

      # Now the queue holds more than the limit: anything else is refused at once.
      for call <- [
            fn -> RedixRs.command(c, ["PING"]) end,
            fn -> RedixRs.pipeline(c, [["GET", "a"], ["GET", "b"]]) end,
            fn -> RedixRs.noreply_command(c, ["SET", "a", "1"]) end,
            fn -> RedixRs.transaction_pipeline(c, [["INCR", "n"]]) end
          ] do
        {micros, result} = :timer.tc(call)
        assert {:error, %ConnectionError{reason: :write_queue_full} = error} = result
        assert Exception.message(error) == "the write queue of the connection is full"
        # At once, not after the call's 5 s timeout (the paused server never drains the queue).
        assert micros < 1_000_000, "refused after #{div(micros, 1000)} ms"
      end

      assert_raise ConnectionError, fn -> RedixRs.command!(c, ["PING"]) end

      :ok = RedisServer.os_kill(server, "CONT")

      assert {:ok, "OK"} = Task.await(big_set, 60_000)
      assert {:ok, ["OK"]} = Task.await(filled, 60_000)
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
      assert {:ok, 50_000_000} = RedixRs.command(c, ["STRLEN", "big"])
      assert {:ok, ^filler} = RedixRs.command(c, ["GET", "filler"])
      # The refused calls were never sent, and left nothing in the mailbox.
      assert {:ok, nil} = RedixRs.command(c, ["GET", "a"])
      assert {:ok, nil} = RedixRs.command(c, ["GET", "n"])
      assert {:messages, []} = Process.info(self(), :messages)
    after
      RedisServer.os_kill(server, "CONT")
    end

    RedixRs.stop(c)
    RedisServer.stop(server)
  end

  # {:erlang.memory(:total), RSS} once both have stopped moving (within 2 MB over 3 s, polled after a
  # garbage collection): the VM gives the memory of a big exited heap back to the OS over several
  # seconds, which would otherwise blur a before/after comparison by hundreds of MB.
  defp settled_memory do
    deadline = System.monotonic_time(:millisecond) + 60_000
    settled_memory([], deadline)
  end

  defp settled_memory(samples, deadline) do
    :erlang.garbage_collect()
    now = System.monotonic_time(:millisecond)
    sample = {now, :erlang.memory(:total), rss_bytes()}
    samples = [sample | Enum.filter(samples, fn {t, _, _} -> now - t <= 3_500 end)]
    {oldest, _, _} = List.last(samples)

    spread = fn index ->
      {min, max} = samples |> Enum.map(&elem(&1, index)) |> Enum.min_max()
      max - min
    end

    if (now - oldest >= 3_000 and spread.(1) < 2 * @mb and spread.(2) < 2 * @mb) or now > deadline do
      {elem(sample, 1), elem(sample, 2)}
    else
      Process.sleep(250)
      settled_memory(samples, deadline)
    end
  end

  # The resident set size of this OS process (the BEAM), from /proc/self/status.
  defp rss_bytes do
    "/proc/self/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn
      "VmRSS:" <> rest ->
        rest |> String.trim() |> String.trim_trailing(" kB") |> String.to_integer()

      _ ->
        nil
    end)
    |> Kernel.*(1024)
  end
end
