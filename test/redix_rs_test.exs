defmodule RedixRsTest do
  use ExUnit.Case, async: true

  alias RedixRs.{ConnectionError, Error}
  alias RedixRs.Test.Servers
  import RedixRs.Test.Helpers

  doctest RedixRs
  doctest RedixRs.Error
  doctest RedixRs.ConnectionError

  setup do
    {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    prefix = "test:#{System.unique_integer([:positive])}:"
    %{conn: conn, key: fn name -> prefix <> name end}
  end

  describe "replies have Redix's RESP2 shapes" do
    test "simple strings, bulk strings, integers, nil, arrays, nested arrays", %{conn: c, key: k} do
      assert RedixRs.command(c, ["SET", k.("s"), "v"]) == {:ok, "OK"}
      assert RedixRs.command(c, ["GET", k.("s")]) == {:ok, "v"}
      assert RedixRs.command(c, ["GET", k.("missing")]) == {:ok, nil}
      assert RedixRs.command(c, ["RPUSH", k.("l"), "a", "b"]) == {:ok, 2}
      assert RedixRs.command(c, ["LRANGE", k.("l"), 0, -1]) == {:ok, ["a", "b"]}
      assert RedixRs.command(c, ["HGETALL", k.("missing")]) == {:ok, []}
      assert RedixRs.command(c, ["INCRBY", k.("n"), -7]) == {:ok, -7}
      assert RedixRs.command(c, ["BLPOP", k.("empty"), "0.01"]) == {:ok, nil}

      RedixRs.command!(c, ["ZADD", k.("z"), 1, "a"])
      assert {:ok, [[_cursor, ["a", "1"]]]} = RedixRs.pipeline(c, [["ZSCAN", k.("z"), 0]])
    end

    test "an error reply is {:error, %RedixRs.Error{}} from command/3", %{conn: c, key: k} do
      RedixRs.command!(c, ["SET", k.("s"), "x"])

      assert {:error, %Error{message: "ERR value is not an integer or out of range"} = error} =
               RedixRs.command(c, ["INCR", k.("s")])

      assert Exception.message(error) == "ERR value is not an integer or out of range"
      assert_raise Error, ~r/WRONGTYPE/, fn -> RedixRs.command!(c, ["LPUSH", k.("s"), "a"]) end
    end

    test "pipeline keeps error replies inline and in order", %{conn: c, key: k} do
      assert {:ok, ["OK", %Error{message: "ERR" <> _}, "x", 1]} =
               RedixRs.pipeline(c, [
                 ["SET", k.("a"), "x"],
                 ["INCR", k.("a")],
                 ["GET", k.("a")],
                 ["EXISTS", k.("a")]
               ])

      assert [%Error{}] = RedixRs.pipeline!(c, [["NOSUCHCOMMAND"]])
    end
  end

  describe "command elements" do
    test "binaries, atoms, integers, floats and nil go through to_string/1", %{conn: c, key: k} do
      assert {:ok, "OK"} = RedixRs.command(c, [:set, k.("a"), :value])
      assert {:ok, "value"} = RedixRs.command(c, ["GET", k.("a")])
      assert {:ok, "OK"} = RedixRs.command(c, ["SET", k.("f"), 1.5])
      assert {:ok, "1.5"} = RedixRs.command(c, ["GET", k.("f")])

      assert {:ok, "OK"} =
               RedixRs.command(c, ["SET", k.("big"), 123_456_789_012_345_678_901_234_567_890])

      assert {:ok, "123456789012345678901234567890"} = RedixRs.command(c, ["GET", k.("big")])
      assert {:ok, "OK"} = RedixRs.command(c, ["SET", k.("min"), -9_223_372_036_854_775_808])
      assert {:ok, "-9223372036854775808"} = RedixRs.command(c, ["GET", k.("min")])
      assert {:ok, "OK"} = RedixRs.command(c, ["SET", k.("nil"), nil])
      assert {:ok, ""} = RedixRs.command(c, ["GET", k.("nil")])
      assert {:ok, "OK"} = RedixRs.command(c, ["SET", k.("cl"), ~c"chars"])
      assert {:ok, "chars"} = RedixRs.command(c, ["GET", k.("cl")])
    end

    test "binary-safe values, including NUL and CRLF bytes and the empty string", %{
      conn: c,
      key: k
    } do
      value = <<0, 13, 10, 255, 0, "$5\r\n", 0>>
      assert {:ok, "OK"} = RedixRs.command(c, ["SET", k.("bin"), value])
      assert {:ok, ^value} = RedixRs.command(c, ["GET", k.("bin")])
      assert {:ok, "OK"} = RedixRs.command(c, ["SET", k.("empty"), ""])
      assert {:ok, ""} = RedixRs.command(c, ["GET", k.("empty")])
    end

    test "many arguments in one command", %{conn: c, key: k} do
      members = Enum.map(1..5_000, &"m#{&1}")
      assert {:ok, 5_000} = RedixRs.command(c, ["SADD", k.("set") | members])
      assert {:ok, 5_000} = RedixRs.command(c, ["SCARD", k.("set")])
    end

    test "a pid, map or tuple raises ArgumentError and the connection keeps working", %{conn: c} do
      for bad <- [self(), %{a: 1}, {:a, :b}, make_ref()] do
        assert_raise ArgumentError, ~r/expected each element .* String.Chars/, fn ->
          RedixRs.command(c, ["SET", "k", bad])
        end

        assert_raise ArgumentError, fn -> RedixRs.pipeline(c, [["PING"], ["ECHO", bad]]) end
      end

      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
      assert {:ok, ["a", "b"]} = RedixRs.pipeline(c, [["ECHO", "a"], ["ECHO", "b"]])
    end
  end

  describe "argument validation, as Redix does it, before anything is sent" do
    test "empty pipeline, empty command, non-list commands", %{conn: c} do
      assert_raise ArgumentError, "no commands passed to the pipeline", fn ->
        RedixRs.pipeline(c, [])
      end

      assert_raise ArgumentError,
                   "got an empty command ([]), which is not a valid Redis command",
                   fn -> RedixRs.command(c, []) end

      assert_raise ArgumentError, ~s(expected a list of Redis commands, got: "PING"), fn ->
        RedixRs.pipeline(c, "PING")
      end

      assert_raise ArgumentError,
                   ~s(expected a list of binaries as each Redis command, got: "PING"),
                   fn -> RedixRs.command(c, "PING") end

      assert_raise ArgumentError, fn -> RedixRs.pipeline(c, [["PING"] | :improper]) end
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
    end

    test "pub/sub commands and CLIENT REPLY are refused", %{conn: c} do
      for cmd <- [
            ["SUBSCRIBE", "ch"],
            ["psubscribe", "p*"],
            ["Unsubscribe", "ch"],
            ["PUNSUBSCRIBE", "p*"],
            ["SSUBSCRIBE", "ch"],
            [:subscribe, "ch"]
          ] do
        assert_raise ArgumentError, ~r/Pub\/Sub/, fn -> RedixRs.command(c, cmd) end
      end

      assert_raise ArgumentError, ~r/CLIENT REPLY commands are forbidden/, fn ->
        RedixRs.pipeline(c, [["PING"], ["client", "reply", "off"]])
      end

      # Unlike Redix, also without arguments: a bare UNSUBSCRIBE is answered only with a RESP3 push,
      # which would leave its caller waiting for the next caller's reply.
      assert_raise ArgumentError, ~r/Pub\/Sub/, fn -> RedixRs.command(c, ["UNSUBSCRIBE"]) end
      assert_raise ArgumentError, ~r/Pub\/Sub/, fn -> RedixRs.command(c, [:subscribe]) end

      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
    end

    test "a long pipeline with a bad command at its end runs none of it", %{conn: c, key: k} do
      # Long pipelines are checked whole before they are written (they go to the socket in chunks
      # while being encoded), so a refusal at the very end leaves nothing executed.
      incrs = List.duplicate(["INCR", k.("counter")], 2_000)

      bad_commands = [
        ["ECHO", %{a: 1}],
        ["SUBSCRIBE", "ch"],
        ["CLIENT", "REPLY", "OFF"],
        [],
        ["SET", k.("counter") | "improper"],
        "PING"
      ]

      for bad <- bad_commands do
        assert_raise ArgumentError, fn -> RedixRs.pipeline(c, incrs ++ [bad]) end
        assert_raise ArgumentError, fn -> RedixRs.transaction_pipeline(c, incrs ++ [bad]) end
      end

      assert {:ok, nil} = RedixRs.command(c, ["GET", k.("counter")])
      # Elements that only need converting (floats) are converted, and the whole pipeline runs.
      assert {:ok, replies} = RedixRs.pipeline(c, incrs ++ [["SET", k.("float"), 1.5]])
      assert Enum.at(replies, 1_999) == 2_000 and List.last(replies) == "OK"
      assert {:ok, "1.5"} = RedixRs.command(c, ["GET", k.("float")])
    end

    test "per-call options are validated", %{conn: c} do
      assert_raise ArgumentError, ~r/:timeout/, fn ->
        RedixRs.command(c, ["PING"], timeout: -1)
      end

      assert_raise ArgumentError, ~r/valid options/, fn ->
        RedixRs.command(c, ["PING"], foo: 1)
      end

      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"], timeout: :infinity)
    end
  end

  describe "timeouts" do
    test "a reply slower than :timeout gives reason :timeout; the connection keeps working",
         %{conn: c, key: k} do
      assert {:error, %ConnectionError{reason: :timeout}} =
               RedixRs.command(c, ["BLPOP", k.("never"), "0.3"], timeout: 50)

      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"], timeout: 5_000)
    end
  end

  describe "start_link/1,2 and options" do
    test "unknown options raise ArgumentError listing the valid ones" do
      assert_raise ArgumentError,
                   ~r/^unknown options \[:foo\], valid options are: \[:host, :port/,
                   fn ->
                     RedixRs.start_link(foo: 1)
                   end
    end

    test "invalid values raise ArgumentError naming the option" do
      assert_raise ArgumentError, ~r/invalid value for :port option/, fn ->
        RedixRs.start_link(port: -1)
      end

      assert_raise ArgumentError, ~r/expected :name option to be one of the following/, fn ->
        RedixRs.start_link(name: "conn")
      end

      assert_raise ArgumentError, ~r/invalid value for :socket_opts option/, fn ->
        RedixRs.start_link(socket_opts: :active)
      end

      assert_raise ArgumentError, ~r/the port must be 0/, fn ->
        RedixRs.start_link(host: {:local, "/tmp/x.sock"}, port: 7000)
      end
    end

    test "start_link(uri, opts): options win over the URI" do
      {:ok, c} =
        RedixRs.start_link("redis://localhost:1/5", port: Servers.port(), sync_connect: true)

      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
      # The database from the URI was selected.
      assert {:ok, info} = RedixRs.command(c, ["CLIENT", "INFO"])
      assert info =~ " db=5 "
    end

    test "a name: atom, {:global, _} and {:via, _, _}" do
      name = :"redix_rs_test_#{System.unique_integer([:positive])}"
      {:ok, pid} = RedixRs.start_link(port: Servers.port(), name: name, sync_connect: true)
      assert Process.whereis(name) == pid
      assert {:ok, "PONG"} = RedixRs.command(name, ["PING"])

      global = {:global, {:redix_rs_test, System.unique_integer()}}
      {:ok, _} = RedixRs.start_link(port: Servers.port(), name: global, sync_connect: true)
      assert {:ok, "PONG"} = RedixRs.command(global, ["PING"])
      assert :ok = RedixRs.stop(global)
    end

    test "hibernate_after, spawn_opt and debug reach the connection process" do
      {:ok, c} =
        RedixRs.start_link(
          port: Servers.port(),
          sync_connect: true,
          hibernate_after: 10,
          spawn_opt: [min_heap_size: 4_096],
          debug: [:statistics]
        )

      assert {:min_heap_size, heap} = Process.info(c, :min_heap_size)
      assert heap >= 4_096
      assert {:ok, _stats} = :sys.statistics(c, :get)

      assert eventually(fn ->
               Process.info(c, :current_function) == {:current_function, {:erlang, :hibernate, 3}}
             end)

      # Commands do not go through the process: a hibernating connection serves them all the same.
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
    end

    test "child_spec/1 accepts options, a URI, or {uri, options}" do
      assert %{id: RedixRs, start: {RedixRs, :start_link, ["redis://h"]}} =
               RedixRs.child_spec("redis://h")

      assert %{start: {RedixRs, :start_link, ["redis://h", [name: :x]]}} =
               RedixRs.child_spec({"redis://h", name: :x})

      spec = RedixRs.child_spec(port: Servers.port(), name: :redix_rs_supervised)
      {:ok, sup} = Supervisor.start_link([spec], strategy: :one_for_one)

      assert eventually(fn -> RedixRs.command(:redix_rs_supervised, ["PING"]) == {:ok, "PONG"} end)

      Supervisor.stop(sup)
    end

    test "stop/2 closes the connection; the server sees it go" do
      name = "redix_rs_stop_#{System.unique_integer([:positive])}"
      {:ok, c} = RedixRs.start_link(port: Servers.port(), client_name: name, sync_connect: true)
      assert client_listed?(name)
      assert :ok = RedixRs.stop(c)
      refute Process.alive?(c)
      assert eventually(fn -> not client_listed?(name) end)
    end

    test "a process that is not connected yet makes the caller wait for the connection" do
      {:ok, c} = RedixRs.start_link(port: Servers.port())
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
    end

    test "with nothing listening, sync_connect fails with the POSIX reason" do
      Process.flag(:trap_exit, true)
      port = closed_port()

      assert {:error, %ConnectionError{reason: :econnrefused}} =
               RedixRs.start_link(port: port, sync_connect: true)
    end

    test "without sync_connect, calls get reason :closed while the connection is down" do
      {:ok, c} = RedixRs.start_link(port: closed_port(), backoff_initial: 10_000)
      assert {:error, %ConnectionError{reason: :closed}} = RedixRs.command(c, ["PING"])
      assert Process.alive?(c)
    end
  end

  defp client_listed?(name) do
    {:ok, list} = RedixRs.command(:redix, ["CLIENT", "LIST"])
    list =~ "name=#{name} "
  end
end
