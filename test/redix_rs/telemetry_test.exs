defmodule RedixRs.TelemetryTest do
  # The :telemetry events (Redix's, under the :redix_rs prefix) and the default logging handler, with
  # real redis-server processes. Not async: handlers are global. Every handler here has a unique id and
  # forwards events to the test process, which matches only the events of connections it owns.
  use ExUnit.Case, async: false

  import RedixRs.Test.Helpers, only: [closed_port: 0]

  # Connections are killed, refused and stopped on purpose.
  @moduletag :capture_log

  import ExUnit.CaptureLog
  require Logger

  alias RedixRs.ConnectionError
  alias RedixRs.Test.{RedisServer, Servers}

  @default_handler "redix_rs-default-telemetry-handler"

  @connection_events [
    [:redix_rs, :connection],
    [:redix_rs, :disconnection],
    [:redix_rs, :failed_connection]
  ]

  @pipeline_events [[:redix_rs, :pipeline, :start], [:redix_rs, :pipeline, :stop]]

  setup do
    id = "redix_rs-telemetry-test-#{System.unique_integer([:positive])}"

    :ok =
      :telemetry.attach_many(
        id,
        @connection_events ++ @pipeline_events,
        &__MODULE__.forward/4,
        self()
      )

    on_exit(fn -> :telemetry.detach(id) end)
    %{port: Servers.port(), key: "telemetry:#{System.unique_integer([:positive])}"}
  end

  @doc false
  # The handler: runs in the process that emitted the event, and says which process that was.
  def forward(event, measurements, metadata, test_pid) do
    send(test_pid, {:telemetry, event, measurements, metadata, self()})
  end

  describe "connection events" do
    test "[:redix_rs, :connection] on connect, with exactly Redix's metadata", %{port: port} do
      {:ok, c} = RedixRs.start_link(host: "127.0.0.1", port: port, sync_connect: true)

      assert_receive {:telemetry, [:redix_rs, :connection], measurements,
                      %{connection: ^c} = meta, emitter}

      assert measurements == %{}
      assert emitter == c

      assert meta == %{
               connection: c,
               connection_name: nil,
               address: "127.0.0.1:#{port}",
               reconnection: false
             }

      # Without sync_connect too, and with a name.
      name = :"telemetry_conn_#{System.unique_integer([:positive])}"
      {:ok, named} = RedixRs.start_link(host: "127.0.0.1", port: port, name: name)

      assert_receive {:telemetry, [:redix_rs, :connection], %{}, %{connection: ^named} = meta, _},
                     5_000

      assert meta == %{
               connection: named,
               connection_name: name,
               address: "127.0.0.1:#{port}",
               reconnection: false
             }

      # One event per connection, and no other connection event for these connections.
      refute_received {:telemetry, [:redix_rs, _], _, %{connection: ^c}, _}
      refute_received {:telemetry, [:redix_rs, _], _, %{connection: ^named}, _}
    end

    test "[:redix_rs, :disconnection], then [:redix_rs, :connection] with reconnection: true",
         %{port: port} do
      name = :"telemetry_reconnect_#{System.unique_integer([:positive])}"

      {:ok, c} =
        RedixRs.start_link(
          host: "127.0.0.1",
          port: port,
          name: name,
          backoff_initial: 50,
          sync_connect: true
        )

      assert_receive {:telemetry, [:redix_rs, :connection], _,
                      %{connection: ^c, reconnection: false}, _}

      kill_client(c)

      assert_receive {:telemetry, [:redix_rs, :disconnection], measurements,
                      %{connection: ^c} = meta, emitter},
                     5_000

      assert measurements == %{}
      assert emitter == c

      assert %{
               connection: ^c,
               connection_name: ^name,
               address: address,
               reason: %ConnectionError{} = reason
             } = meta

      assert map_size(meta) == 4
      assert address == "127.0.0.1:#{port}"
      assert is_binary(Exception.message(reason))

      assert_receive {:telemetry, [:redix_rs, :connection], %{}, %{connection: ^c} = meta, ^c},
                     5_000

      assert meta == %{
               connection: c,
               connection_name: name,
               address: "127.0.0.1:#{port}",
               reconnection: true
             }

      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])

      # Every later reconnection says so too.
      kill_client(c)
      assert_receive {:telemetry, [:redix_rs, :disconnection], _, %{connection: ^c}, _}, 5_000

      assert_receive {:telemetry, [:redix_rs, :connection], _,
                      %{connection: ^c, reconnection: true}, _},
                     5_000
    end

    test "[:redix_rs, :failed_connection] when nothing listens" do
      port = closed_port()

      {:ok, c} = RedixRs.start_link(host: "127.0.0.1", port: port, backoff_initial: 10_000)

      assert_receive {:telemetry, [:redix_rs, :failed_connection], measurements,
                      %{connection: ^c} = meta, emitter},
                     5_000

      assert measurements == %{}
      assert emitter == c

      assert meta == %{
               connection: c,
               connection_name: nil,
               address: "127.0.0.1:#{port}",
               reason: %ConnectionError{reason: :econnrefused}
             }

      refute_received {:telemetry, [:redix_rs, :connection], _, %{connection: ^c}, _}
      RedixRs.stop(c)

      # With sync_connect, start_link fails and the event is emitted all the same.
      name = :"telemetry_failed_#{System.unique_integer([:positive])}"
      Process.flag(:trap_exit, true)

      assert {:error, %ConnectionError{reason: :econnrefused}} =
               RedixRs.start_link(host: "127.0.0.1", port: port, name: name, sync_connect: true)

      assert_receive {:telemetry, [:redix_rs, :failed_connection], %{},
                      %{connection_name: ^name} = meta, _}

      assert %{
               connection: pid,
               address: address,
               reason: %ConnectionError{reason: :econnrefused}
             } = meta

      assert is_pid(pid)
      assert address == "127.0.0.1:#{port}"
    end
  end

  describe "pipeline events" do
    setup %{port: port} do
      name = :"telemetry_pipeline_#{System.unique_integer([:positive])}"
      {:ok, c} = RedixRs.start_link(host: "127.0.0.1", port: port, name: name, sync_connect: true)
      %{conn: c, name: name}
    end

    test ":start and :stop, in the caller, with the commands and metadata", %{conn: c} do
      before = System.system_time()
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])

      assert_receive {:telemetry, [:redix_rs, :pipeline, :start], start_measurements,
                      %{connection: ^c} = start_meta, start_emitter}

      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], stop_measurements,
                      %{connection: ^c} = stop_meta, stop_emitter}

      assert start_emitter == self()
      assert stop_emitter == self()

      assert %{system_time: system_time} = start_measurements
      assert map_size(start_measurements) == 1
      assert is_integer(system_time)
      assert system_time >= before and system_time <= System.system_time()

      assert %{duration: duration} = stop_measurements
      assert map_size(stop_measurements) == 1
      assert is_integer(duration) and duration > 0

      expected = %{connection: c, connection_name: nil, commands: [["PING"]], extra_metadata: %{}}
      assert start_meta == expected
      assert stop_meta == expected
    end

    test "invalid commands raise before any event is emitted, as in Redix", %{conn: c} do
      long = List.duplicate(["PING"], 100)

      for commands <- [[["GET", %{}]], [], [[]], long ++ [["SUBSCRIBE", "ch"]], long ++ ["PING"]] do
        assert_raise ArgumentError, fn -> RedixRs.pipeline(c, commands) end
      end

      assert_raise ArgumentError, fn -> RedixRs.transaction_pipeline(c, [["ECHO", self()]]) end
      refute_received {:telemetry, [:redix_rs, :pipeline, _], _, _, _}

      # A valid call still gets both events, :start first.
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
      assert_received {:telemetry, [:redix_rs, :pipeline, :start], _, _, _}
      assert_received {:telemetry, [:redix_rs, :pipeline, :stop], _, _, _}
    end

    test "a connection that is not connected: invalid commands still raise with no event" do
      {:ok, c} =
        RedixRs.start_link(
          port: closed_port(),
          sync_connect: false,
          backoff_initial: 5_000
        )

      assert_raise ArgumentError, fn -> RedixRs.pipeline(c, [["GET", %{}]]) end
      refute_received {:telemetry, [:redix_rs, :pipeline, _], _, _, _}

      assert {:error, %RedixRs.ConnectionError{}} = RedixRs.command(c, ["PING"], timeout: 500)
      assert_received {:telemetry, [:redix_rs, :pipeline, :start], _, %{connection: ^c}, _}
      assert_received {:telemetry, [:redix_rs, :pipeline, :stop], _, %{kind: :error}, _}
      RedixRs.stop(c)
    end

    test "a refused call still gets :start and :stop", %{conn: c} do
      assert {:error, %RedixRs.ConnectionError{reason: :timeout}} =
               RedixRs.command(c, ["PING"], timeout: 0)

      assert_received {:telemetry, [:redix_rs, :pipeline, :start], _, _, _}

      assert_received {:telemetry, [:redix_rs, :pipeline, :stop], _,
                       %{kind: :error, reason: %RedixRs.ConnectionError{reason: :timeout}}, _}
    end

    test "a pipeline reports its commands and its :telemetry_metadata", %{conn: c, key: k} do
      commands = [["SET", k, "1"], ["INCR", k], ["GET", k]]
      extra = %{request_id: "abc", attempt: 2}

      assert {:ok, ["OK", 2, "2"]} = RedixRs.pipeline(c, commands, telemetry_metadata: extra)

      expected = %{connection: c, connection_name: nil, commands: commands, extra_metadata: extra}
      assert_receive {:telemetry, [:redix_rs, :pipeline, :start], _, ^expected, _}
      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], %{duration: d}, ^expected, _}
      assert d > 0
    end

    test "connection_name is the name only when the call used it", %{conn: c, name: name} do
      assert {:ok, "x"} = RedixRs.command(name, ["ECHO", "x"])

      assert_receive {:telemetry, [:redix_rs, :pipeline, :start], _, %{connection: ^c} = start, _}
      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], _, %{connection: ^c} = stop, _}

      for meta <- [start, stop] do
        assert meta == %{
                 connection: c,
                 connection_name: name,
                 commands: [["ECHO", "x"]],
                 extra_metadata: %{}
               }
      end

      assert {:ok, "y"} = RedixRs.command(c, ["ECHO", "y"])

      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], _,
                      %{connection: ^c, commands: [["ECHO", "y"]]} = meta, _}

      assert meta.connection_name == nil
    end

    test "a Redis error reply is not an error of the call", %{conn: c} do
      assert {:error, %RedixRs.Error{}} = RedixRs.command(c, ["NOSUCHCOMMAND"])

      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], _, %{connection: ^c} = meta, _}
      refute Map.has_key?(meta, :kind)
      refute Map.has_key?(meta, :reason)
    end

    test "a timed-out call: :stop with kind: :error and the :timeout reason", %{conn: c, key: k} do
      assert {:error, %ConnectionError{reason: :timeout}} =
               RedixRs.command(c, ["BLPOP", k, 1], timeout: 100, telemetry_metadata: %{t: 1})

      assert_receive {:telemetry, [:redix_rs, :pipeline, :start], _, %{connection: ^c}, _}

      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], %{duration: duration},
                      %{connection: ^c} = meta, emitter}

      assert emitter == self()

      assert meta == %{
               connection: c,
               connection_name: nil,
               commands: [["BLPOP", k, 1]],
               extra_metadata: %{t: 1},
               kind: :error,
               reason: %ConnectionError{reason: :timeout}
             }

      assert System.convert_time_unit(duration, :native, :millisecond) >= 100
    end

    test "noreply calls report the commands wrapped in CLIENT REPLY OFF/ON", %{conn: c, key: k} do
      assert :ok = RedixRs.noreply_pipeline(c, [["SET", k, "1"], ["INCR", k]])

      expected = [
        ["CLIENT", "REPLY", "OFF"],
        ["SET", k, "1"],
        ["INCR", k],
        ["CLIENT", "REPLY", "ON"]
      ]

      assert_receive {:telemetry, [:redix_rs, :pipeline, :start], _,
                      %{connection: ^c, commands: ^expected}, _}

      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], _,
                      %{connection: ^c, commands: ^expected} = meta, _}

      refute Map.has_key?(meta, :kind)

      assert :ok = RedixRs.noreply_command(c, ["INCR", k], telemetry_metadata: %{n: 1})

      expected = [["CLIENT", "REPLY", "OFF"], ["INCR", k], ["CLIENT", "REPLY", "ON"]]

      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], _,
                      %{connection: ^c, commands: ^expected, extra_metadata: %{n: 1}}, _}
    end

    test "transactions report the commands wrapped in MULTI/EXEC", %{conn: c, key: k} do
      assert {:ok, [1, "1"]} = RedixRs.transaction_pipeline(c, [["INCR", k], ["GET", k]])
      expected = [["MULTI"], ["INCR", k], ["GET", k], ["EXEC"]]

      assert_receive {:telemetry, [:redix_rs, :pipeline, :start], _,
                      %{connection: ^c, commands: ^expected}, _}

      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], _,
                      %{connection: ^c, commands: ^expected} = meta, _}

      refute Map.has_key?(meta, :kind)

      # An aborted transaction returns {:error, %RedixRs.Error{}}, but as in Redix (whose events come
      # from the pipeline of MULTI ... EXEC, which got its replies) the :stop event is not an error.
      assert {:error, %RedixRs.Error{message: "EXECABORT" <> _}} =
               RedixRs.transaction_pipeline(c, [["INCR"]])

      assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], _,
                      %{connection: ^c, commands: [["MULTI"], ["INCR"], ["EXEC"]]} = meta, _}

      refute Map.has_key?(meta, :kind)
    end
  end

  describe "RedixRs.Telemetry.attach_default_handler/0" do
    setup do
      # Start from a clean slate, and never leave the handler attached for other tests.
      :telemetry.detach(@default_handler)
      on_exit(fn -> :telemetry.detach(@default_handler) end)
    end

    test "returns :ok, then {:error, :already_exists}" do
      assert RedixRs.Telemetry.attach_default_handler() == :ok
      assert RedixRs.Telemetry.attach_default_handler() == {:error, :already_exists}
      assert :telemetry.detach(@default_handler) == :ok
      assert RedixRs.Telemetry.attach_default_handler() == :ok
    end

    test "logs disconnections and reconnections, in Redix's words", %{port: port} do
      :ok = RedixRs.Telemetry.attach_default_handler()
      name = :"telemetry_logged_#{System.unique_integer([:positive])}"

      first_log =
        capture_log([level: :debug], fn ->
          {:ok, c} =
            RedixRs.start_link(
              host: "127.0.0.1",
              port: port,
              name: name,
              backoff_initial: 50,
              sync_connect: true
            )

          send(self(), {:conn, c})
        end)

      assert_received {:conn, c}
      # The first connection is not logged.
      refute first_log =~ "Redis at"

      log =
        capture_log([level: :debug], fn ->
          kill_client(c)

          assert_receive {:telemetry, [:redix_rs, :connection], _,
                          %{connection: ^c, reconnection: true}, _},
                         5_000

          flush_logs(c)
        end)

      assert log =~
               ~r/\[error\].*Connection #{Regex.escape(inspect(name))} disconnected from Redis at 127\.0\.0\.1:#{port}: \S/

      assert log =~ "[info]"

      assert log =~
               "Connection #{inspect(name)} reconnected to Redis at 127.0.0.1:#{port}"
    end

    test "logs failed connections, naming the pid of an unnamed connection" do
      :ok = RedixRs.Telemetry.attach_default_handler()
      port = closed_port()

      log =
        capture_log(fn ->
          {:ok, c} = RedixRs.start_link(host: "127.0.0.1", port: port, backoff_initial: 10_000)

          assert_receive {:telemetry, [:redix_rs, :failed_connection], _, %{connection: ^c}, _},
                         5_000

          flush_logs(c)
          send(self(), {:conn, c})
        end)

      assert_received {:conn, c}

      assert log =~
               "Connection #{inspect(c)} failed to connect to Redis at 127.0.0.1:#{port}: connection refused"

      RedixRs.stop(c)
    end

    test "after detaching, nothing is logged", %{port: port} do
      :ok = RedixRs.Telemetry.attach_default_handler()
      :ok = :telemetry.detach(@default_handler)
      {:ok, c} = RedixRs.start_link(host: "127.0.0.1", port: port, backoff_initial: 50)
      assert_receive {:telemetry, [:redix_rs, :connection], _, %{connection: ^c}, _}, 5_000

      log =
        capture_log(fn ->
          kill_client(c)

          assert_receive {:telemetry, [:redix_rs, :connection], _,
                          %{connection: ^c, reconnection: true}, _},
                         5_000

          flush_logs(c)
        end)

      refute log =~ "Redis at"
    end
  end

  # Every handler of an event runs in the connection process, in the callback that emitted it: once the
  # connection answers a call, they have all run; then the log is flushed.
  defp flush_logs(conn) do
    _ = :sys.get_state(conn)
    Logger.flush()
  end

  # Kills the server side of `conn`'s connection from another connection (CLIENT KILL ID).
  defp kill_client(conn) do
    {:ok, id} = RedixRs.command(conn, ["CLIENT", "ID"])
    assert RedisServer.redis_cli(Servers.get(:plain), ["CLIENT", "KILL", "ID", id]) == ":1\r\n"
  end

  # A port of 127.0.0.1 on which nothing listens.
end
