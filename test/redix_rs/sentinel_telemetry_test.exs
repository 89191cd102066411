defmodule RedixRs.SentinelTelemetryTest do
  # What a connection through Sentinel emits, as Redix does: one `failed_connection` event per
  # sentinel that could not be used (with `:sentinel_address`), logged by the default handler in
  # Redix's words; `:address` the server the sentinels named. Under the `[:redix]` prefix, against a
  # real Sentinel deployment. Not async: the prefix setting and the handlers are global.
  use ExUnit.Case, async: false

  # Sentinels are dead on purpose, connections are killed.
  @moduletag :capture_log
  @moduletag timeout: 120_000

  import ExUnit.CaptureLog
  import RedixRs.Test.Helpers, only: [closed_port: 0]
  require Logger

  alias RedixRs.ConnectionError
  alias RedixRs.Test.{RedisServer, SentinelSetup}

  @default_handler "redix_rs-default-telemetry-handler"

  setup_all do
    setup = SentinelSetup.start()
    on_exit(fn -> SentinelSetup.stop(setup) end)
    %{setup: setup}
  end

  setup do
    Application.put_env(:redix_rs, :telemetry_prefix, [:redix])
    id = "redix_rs-sentinel-telemetry-test-#{System.unique_integer([:positive])}"
    events = for event <- [:connection, :disconnection, :failed_connection], do: [:redix, event]
    :ok = :telemetry.attach_many(id, events, &__MODULE__.forward/4, self())
    :telemetry.detach(@default_handler)
    :ok = RedixRs.Telemetry.attach_default_handler()

    on_exit(fn ->
      :telemetry.detach(id)
      :telemetry.detach(@default_handler)
      Application.delete_env(:redix_rs, :telemetry_prefix)
      RedixRs.Telemetry.load_prefix!()
    end)
  end

  @doc false
  def forward(event, measurements, metadata, test_pid) do
    send(test_pid, {:telemetry, event, measurements, metadata})
  end

  test "a dead sentinel: one event with :sentinel_address, logged as Redix logs it; then the " <>
         "connection, at the primary's address",
       %{setup: setup} do
    dead = closed_port()
    name = :"sentinel_telemetry_#{System.unique_integer([:positive])}"

    log =
      capture_log(fn ->
        {:ok, conn} =
          RedixRs.start_link(
            sentinel: [
              sentinels: ["redis://127.0.0.1:#{dead}" | SentinelSetup.sentinel_uris(setup)],
              group: "mymaster"
            ],
            name: name,
            backoff_initial: 50,
            sync_connect: true
          )

        flush_logs(conn)
        send(self(), {:conn, conn})
      end)

    assert_received {:conn, conn}
    primary = "127.0.0.1:#{setup.primary.port}"

    assert_received {:telemetry, [:redix, :failed_connection], measurements, metadata}
    assert measurements == %{}

    assert metadata == %{
             connection: conn,
             connection_name: name,
             sentinel_address: "127.0.0.1:#{dead}",
             reason: %ConnectionError{reason: :econnrefused}
           }

    assert log =~
             "Connection #{inspect(name)} failed to connect to sentinel at 127.0.0.1:#{dead}: " <>
               "connection refused"

    assert_received {:telemetry, [:redix, :connection], %{},
                     %{connection: ^conn, address: ^primary, reconnection: false}}

    # A disconnection and the reconnection are at the primary's address too.
    {:ok, id} = RedixRs.command(conn, ["CLIENT", "ID"])
    RedisServer.redis_cli(setup.primary, ["CLIENT", "KILL", "ID", Integer.to_string(id)])

    assert_receive {:telemetry, [:redix, :disconnection], %{},
                    %{connection: ^conn, address: ^primary}},
                   5_000

    assert_receive {:telemetry, [:redix, :connection], %{},
                    %{connection: ^conn, address: ^primary, reconnection: true}},
                   5_000
  end

  test "sync_connect with every sentinel dead: an event per sentinel before start_link returns, " <>
         "then one with address \"sentinel\"" do
    Process.flag(:trap_exit, true)
    dead = [closed_port(), closed_port()]
    name = :"sentinel_telemetry_#{System.unique_integer([:positive])}"

    log =
      capture_log(fn ->
        assert {:error, %ConnectionError{reason: :no_viable_sentinel_connection}} =
                 RedixRs.start_link(
                   sentinel: [sentinels: Enum.map(dead, &"redis://127.0.0.1:#{&1}"), group: "g"],
                   name: name,
                   sync_connect: true
                 )

        Logger.flush()
      end)

    for port <- dead do
      address = "127.0.0.1:#{port}"

      assert_received {:telemetry, [:redix, :failed_connection], %{},
                       %{sentinel_address: ^address, connection_name: ^name}}

      assert log =~
               "Connection #{inspect(name)} failed to connect to sentinel at #{address}: " <>
                 "connection refused"
    end

    assert_received {:telemetry, [:redix, :failed_connection], %{},
                     %{address: "sentinel", connection_name: ^name} = metadata}

    assert metadata.reason == %ConnectionError{reason: :no_viable_sentinel_connection}

    assert log =~
             "Connection #{inspect(name)} failed to connect to Redis at sentinel: " <>
               Exception.message(metadata.reason)
  end

  test "a round that fails after the sentinels named a server: :address is that server, and " <>
         "a sentinel's error reply is a RedixRs.Error",
       %{setup: setup} do
    # The sentinels have no password: sending one (from the second connection on) makes their AUTH
    # fail.
    {:ok, password} = Agent.start_link(fn -> nil end)

    {:ok, conn} =
      RedixRs.start_link(
        sentinel: [
          sentinels: SentinelSetup.sentinel_uris(setup),
          group: "mymaster",
          password: {Agent, :get, [password, & &1]}
        ],
        backoff_initial: 100,
        sync_connect: true
      )

    primary = "127.0.0.1:#{setup.primary.port}"

    assert_received {:telemetry, [:redix, :connection], %{},
                     %{connection: ^conn, address: ^primary}}

    Agent.update(password, fn _ -> "not-the-password" end)
    {:ok, id} = RedixRs.command(conn, ["CLIENT", "ID"])
    RedisServer.redis_cli(setup.primary, ["CLIENT", "KILL", "ID", Integer.to_string(id)])

    assert_receive {:telemetry, [:redix, :disconnection], %{},
                    %{connection: ^conn, address: ^primary}},
                   5_000

    for sentinel <- setup.sentinels do
      address = "127.0.0.1:#{sentinel.port}"

      assert_receive {:telemetry, [:redix, :failed_connection], %{},
                      %{connection: ^conn, sentinel_address: ^address} = metadata},
                     5_000

      assert %ConnectionError{reason: %RedixRs.Error{message: "ERR " <> _}} = metadata.reason
    end

    assert_receive {:telemetry, [:redix, :failed_connection], %{},
                    %{connection: ^conn, address: ^primary} = metadata},
                   5_000

    assert metadata.reason == %ConnectionError{reason: :no_viable_sentinel_connection}
    RedixRs.stop(conn)
  end

  # Every handler of an event runs in the connection process, in the callback that emitted it: once
  # the connection answers a call, they have all run; then the log is flushed.
  defp flush_logs(conn) do
    _ = :sys.get_state(conn)
    Logger.flush()
  end
end
