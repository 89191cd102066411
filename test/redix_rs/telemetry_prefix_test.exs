defmodule RedixRs.TelemetryPrefixTest do
  # `config :redix_rs, telemetry_prefix: [:redix]`: every event under Redix's own names, with Redix's
  # measurements and metadata, for handlers written for Redix; and the default handler, which logs
  # them in Redix's words. Against real servers. Not async: the setting and the handlers are global.
  use ExUnit.Case, async: false

  # Connections are killed, refused and stopped on purpose.
  @moduletag :capture_log

  import ExUnit.CaptureLog
  import RedixRs.Test.Helpers, only: [closed_port: 0]
  require Logger

  alias RedixRs.ConnectionError
  alias RedixRs.Test.{RedisServer, Servers}

  @default_handler "redix_rs-default-telemetry-handler"

  doctest RedixRs.Telemetry

  @events (for prefix <- [[:redix], [:redix_rs]],
               event <- [
                 [:connection],
                 [:disconnection],
                 [:failed_connection],
                 [:pipeline, :start],
                 [:pipeline, :stop]
               ] do
             prefix ++ event
           end)

  setup do
    set_prefix([:redix])
    id = "redix_rs-prefix-test-#{System.unique_integer([:positive])}"
    :ok = :telemetry.attach_many(id, @events, &__MODULE__.forward/4, self())

    on_exit(fn ->
      :telemetry.detach(id)
      :telemetry.detach(@default_handler)
      Application.delete_env(:redix_rs, :telemetry_prefix)
      RedixRs.Telemetry.load_prefix!()
    end)

    %{port: Servers.port()}
  end

  @doc false
  def forward(event, measurements, metadata, test_pid) do
    send(test_pid, {:telemetry, event, measurements, metadata, self()})
  end

  defp set_prefix(prefix), do: Application.put_env(:redix_rs, :telemetry_prefix, prefix)

  describe "with telemetry_prefix: [:redix]" do
    test "connection events: Redix's names, measurements and metadata", %{port: port} do
      name = :"prefix_conn_#{System.unique_integer([:positive])}"

      {:ok, c} =
        RedixRs.start_link(
          host: "127.0.0.1",
          port: port,
          name: name,
          backoff_initial: 50,
          sync_connect: true
        )

      assert_receive {:telemetry, [:redix, :connection], measurements, %{connection: ^c} = meta,
                      ^c}

      assert measurements == %{}

      assert meta == %{
               connection: c,
               connection_name: name,
               address: "127.0.0.1:#{port}",
               reconnection: false
             }

      kill_client(c)

      assert_receive {:telemetry, [:redix, :disconnection], %{}, %{connection: ^c} = meta, ^c},
                     5_000

      assert %{connection_name: ^name, reason: %ConnectionError{}} = meta
      assert meta.address == "127.0.0.1:#{port}"
      assert map_size(meta) == 4

      assert_receive {:telemetry, [:redix, :connection], %{},
                      %{connection: ^c, reconnection: true}, ^c},
                     5_000

      # A connection that cannot connect.
      closed = closed_port()

      {:ok, failing} =
        RedixRs.start_link(host: "127.0.0.1", port: closed, backoff_initial: 60_000)

      assert_receive {:telemetry, [:redix, :failed_connection], %{},
                      %{connection: ^failing} = meta, ^failing},
                     5_000

      assert meta == %{
               connection: failing,
               connection_name: nil,
               address: "127.0.0.1:#{closed}",
               reason: %ConnectionError{reason: :econnrefused}
             }

      # Nothing under the default prefix.
      refute_received {:telemetry, [:redix_rs | _], _, _, _}
    end

    test "pipeline events, in the caller", %{port: port} do
      name = :"prefix_pipeline_#{System.unique_integer([:positive])}"
      {:ok, c} = RedixRs.start_link(port: port, name: name, sync_connect: true)
      key = "prefix:#{System.unique_integer([:positive])}"

      assert {:ok, ["OK", 2]} =
               RedixRs.transaction_pipeline(name, [["SET", key, "1"], ["INCR", key]],
                 telemetry_metadata: %{id: 7}
               )

      expected = %{
        connection: c,
        connection_name: name,
        commands: [["MULTI"], ["SET", key, "1"], ["INCR", key], ["EXEC"]],
        extra_metadata: %{id: 7}
      }

      assert_received {:telemetry, [:redix, :pipeline, :start], %{system_time: t}, ^expected,
                       emitter}

      assert emitter == self() and is_integer(t)
      assert_received {:telemetry, [:redix, :pipeline, :stop], %{duration: d}, ^expected, _}
      assert d > 0

      assert {:error, %ConnectionError{reason: :timeout}} =
               RedixRs.command(c, ["BLPOP", key <> ":q", 1], timeout: 50)

      assert_received {:telemetry, [:redix, :pipeline, :start], _, %{connection_name: nil}, _}

      assert_received {:telemetry, [:redix, :pipeline, :stop], _,
                       %{kind: :error, reason: %ConnectionError{reason: :timeout}} = meta, _}

      assert meta.connection == c and meta.commands == [["BLPOP", key <> ":q", 1]]
      refute_received {:telemetry, [:redix_rs | _], _, _, _}
    end

    test "pipeline events of a call that waits for its connection, or finds none", %{port: port} do
      # Connecting (the handle is not published yet): the call waits, then runs.
      {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1}, active: false)
      {:ok, silent_port} = :inet.port(listener)
      {:ok, c} = RedixRs.start_link(port: silent_port, password: "pw", timeout: 5_000)

      assert {:error, %ConnectionError{reason: :timeout}} =
               RedixRs.command(c, ["PING"], timeout: 100)

      assert_received {:telemetry, [:redix, :pipeline, :start], _, %{connection: ^c}, _}

      assert_received {:telemetry, [:redix, :pipeline, :stop], _, %{connection: ^c, kind: :error},
                       _}

      :gen_tcp.close(listener)

      # Nothing registered under the name: :start (with connection: nil, as in Redix), then the
      # caller exits, with no :stop.
      name = :"prefix_missing_#{System.unique_integer([:positive])}"

      assert catch_exit(RedixRs.command(name, ["PING"])) ==
               {:redix_exited_during_call, :noproc}

      assert_received {:telemetry, [:redix, :pipeline, :start], _, meta, _}

      assert meta == %{
               connection: nil,
               connection_name: name,
               commands: [["PING"]],
               extra_metadata: %{}
             }

      refute_received {:telemetry, [_, :pipeline, :stop], _, _, _}

      # RedixRs.PubSub connections emit the connection events under the prefix too.
      {:ok, pubsub} = RedixRs.PubSub.start_link(port: port, sync_connect: true)
      assert_received {:telemetry, [:redix, :connection], %{}, %{connection: ^pubsub}, ^pubsub}
      refute_received {:telemetry, [:redix_rs | _], _, _, _}
    end

    test "the default handler logs in Redix's words", %{port: port} do
      :telemetry.detach(@default_handler)
      assert RedixRs.Telemetry.attach_default_handler() == :ok
      name = :"prefix_logged_#{System.unique_integer([:positive])}"

      {:ok, c} =
        RedixRs.start_link(port: port, name: name, backoff_initial: 50, sync_connect: true)

      log =
        capture_log([level: :debug], fn ->
          kill_client(c)

          assert_receive {:telemetry, [:redix, :connection], _,
                          %{connection: ^c, reconnection: true}, _},
                         5_000

          flush_logs(c)
        end)

      assert log =~ "Connection #{inspect(name)} disconnected from Redis at localhost:#{port}: "
      assert log =~ "Connection #{inspect(name)} reconnected to Redis at localhost:#{port}"

      closed = closed_port()

      log =
        capture_log(fn ->
          {:ok, failing} = RedixRs.start_link(port: closed, backoff_initial: 60_000)
          assert_receive {:telemetry, [:redix, :failed_connection], _, _, ^failing}, 5_000
          flush_logs(failing)
          send(self(), {:failing, failing})
        end)

      assert_received {:failing, failing}

      assert log =~
               "Connection #{inspect(failing)} failed to connect to Redis at localhost:#{closed}: " <>
                 "connection refused"
    end
  end

  describe "when the prefix is read" do
    test "when a connection starts; from then on every event uses it", %{port: port} do
      set_prefix([:redix_rs])
      {:ok, old} = RedixRs.start_link(port: port, sync_connect: true)
      assert_received {:telemetry, [:redix_rs, :connection], _, %{connection: ^old}, _}

      # Changing the setting alone changes nothing...
      set_prefix([:redix])
      assert {:ok, "PONG"} = RedixRs.command(old, ["PING"])
      assert_received {:telemetry, [:redix_rs, :pipeline, :stop], _, %{connection: ^old}, _}

      # ... until a connection starts.
      {:ok, new} = RedixRs.start_link(port: port, sync_connect: true)
      assert_received {:telemetry, [:redix, :connection], _, %{connection: ^new}, _}
      assert {:ok, "PONG"} = RedixRs.command(old, ["PING"])
      assert_received {:telemetry, [:redix, :pipeline, :stop], _, %{connection: ^old}, _}
    end

    test "a bad setting raises ArgumentError when a connection starts", %{port: port} do
      for bad <- [[], :redix, "redix", [:redix, "x"], nil] do
        set_prefix(bad)

        assert_raise ArgumentError, ~r/:telemetry_prefix setting of :redix_rs/, fn ->
          RedixRs.start_link(port: port)
        end

        assert_raise ArgumentError, ~r/:telemetry_prefix setting of :redix_rs/, fn ->
          RedixRs.PubSub.start_link(port: port)
        end
      end

      # Any non-empty list of atoms will do.
      set_prefix([:my_app, :redis])
      id = "redix_rs-prefix-test-custom"
      :ok = :telemetry.attach(id, [:my_app, :redis, :connection], &__MODULE__.forward/4, self())

      try do
        {:ok, c} = RedixRs.start_link(port: port, sync_connect: true)
        assert_received {:telemetry, [:my_app, :redis, :connection], %{}, %{connection: ^c}, ^c}
      after
        :telemetry.detach(id)
      end
    end
  end

  # Every handler of an event runs in the connection process, in the callback that emitted it: once
  # the connection answers a call, they have all run; then the log is flushed.
  defp flush_logs(conn) do
    _ = :sys.get_state(conn)
    Logger.flush()
  end

  # Kills the server side of `conn`'s connection from another connection (CLIENT KILL ID).
  defp kill_client(conn) do
    {:ok, id} = RedixRs.command(conn, ["CLIENT", "ID"])
    assert RedisServer.redis_cli(Servers.get(:plain), ["CLIENT", "KILL", "ID", id]) == ":1\r\n"
  end
end
