defmodule RedixRs.RedixErrorsTest do
  # Errors read as Redix's: ConnectionError messages (Redix 1.6's texts for its reasons, computed as
  # Redix computes them; ours for the others), the :name and URI validation messages, and the exit of
  # a caller whose connection is not running, with real connections and servers.
  use ExUnit.Case, async: true

  # Connections are killed on purpose.
  @moduletag :capture_log

  import RedixRs.Test.Helpers, only: [closed_port: 0, eventually: 1]

  alias RedixRs.ConnectionError
  alias RedixRs.Test.{RedisServer, Servers}

  defp message(reason), do: Exception.message(%ConnectionError{reason: reason})

  # Redix 1.6's `format_reason/1` for an atom it has no sentence for, as it is compiled for the OTP
  # release running this test (Redix decides at compile time; `:inet.format_error/1` changed in OTP
  # 26), written out here from its documented behaviour.
  defp redix_atom_text(reason) do
    text = :inet.format_error(reason)

    if System.otp_release() < "26" and text == ~c"unknown POSIX error" do
      "unknown POSIX error: #{reason}"
    else
      List.to_string(text)
    end
  end

  describe "Exception.message/1 of RedixRs.ConnectionError" do
    test "Redix 1.6's sentences" do
      assert message(:tcp_closed) == "TCP connection closed"
      assert message(:ssl_closed) == "SSL connection closed"
      assert message(:closed) == "the connection to Redis is closed"
      assert message({:wrong_role, "slave"}) == "wrong role: slave"

      assert message(:health_check_timeout) ==
               "a command went unanswered for longer than the configured :health_check_interval"

      assert message(:no_replica_connection) ==
               "no replica connection available for the slot (was the cluster started with " <>
                 "read_from_replicas: true?)"
    end

    test "the other atoms of Redix's reasons, through :inet.format_error/1 as in Redix" do
      for reason <- [
            :timeout,
            :disconnected,
            :no_viable_sentinel_connection,
            :sentinel_no_primary_found,
            :sentinel_no_replicas_found_for_given_primary,
            :client_id_not_stored,
            :econnrefused,
            :econnreset,
            :ehostunreach,
            :nxdomain,
            :etimedout
          ] do
        assert message(reason) == redix_atom_text(reason), inspect(reason)
      end

      # On this machine's OTP release, spelled out.
      if System.otp_release() < "26" do
        assert message(:timeout) == "unknown POSIX error: timeout"
        assert message(:disconnected) == "unknown POSIX error: disconnected"
      end

      assert message(:econnrefused) == "connection refused"
      assert message(:nxdomain) == "non-existing domain"
    end

    test "other terms are inspected, as in Redix" do
      error = %RedixRs.Error{message: "ERR This instance has cluster support disabled"}
      assert message(error) == inspect(error)
      assert message({:something, 1}) == "{:something, 1}"
    end

    test "reasons only redix_rs has get sentences of their own, with no numbers in them" do
      ours = [
        :write_queue_full,
        :pubsub_backlog,
        :unexpected_reply,
        :partial_submission,
        {:tls_alert, {:unknown_ca, "the certificate is not trusted"}},
        {:tls_config, "cannot read /x.pem"},
        {:protocol_error, "invalid type byte 0x25"},
        {:io_error, "some error"},
        {:panic, "boom"}
      ]

      for reason <- ours do
        text = message(reason)
        refute text =~ "unknown POSIX error", inspect(reason)
        refute text =~ inspect(reason), inspect(reason)
      end

      assert message(:write_queue_full) == "the write queue of the connection is full"
      refute message(:pubsub_backlog) =~ ~r/\d/

      assert message({:tls_alert, {:unknown_ca, "the certificate is not trusted"}}) ==
               "TLS alert unknown_ca: the certificate is not trusted"
    end

    test "what real failures read as" do
      Process.flag(:trap_exit, true)

      assert {:error, %ConnectionError{reason: :econnrefused} = refused} =
               RedixRs.start_link(port: closed_port(), sync_connect: true)

      assert Exception.message(refused) == "connection refused"

      {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)

      assert {:error, %ConnectionError{reason: :timeout} = timeout} =
               RedixRs.command(conn, ["BLPOP", "redix_errors:nothing", 1], timeout: 50)

      assert Exception.message(timeout) == redix_atom_text(:timeout)

      # A server that goes away: the caller in flight gets :disconnected.
      server = RedisServer.start()

      {:ok, conn} =
        RedixRs.start_link(port: server.port, sync_connect: true, backoff_initial: 60_000)

      task = Task.async(fn -> RedixRs.command(conn, ["BLPOP", "redix_errors:q", 0]) end)

      assert eventually(fn ->
               RedisServer.redis_cli(server, ["CLIENT", "LIST"]) =~ "cmd=blpop"
             end)

      RedisServer.stop(server)

      assert {:error, %ConnectionError{reason: :disconnected} = disconnected} =
               Task.await(task, 5_000)

      assert Exception.message(disconnected) == redix_atom_text(:disconnected)
    end
  end

  describe "validation messages, in Redix's words" do
    test "an invalid :name" do
      message = """
      expected :name option to be one of the following:

        * nil
        * atom
        * {:global, term}
        * {:via, module, term}

      Got: "conn"
      """

      assert_raise ArgumentError, message, fn -> RedixRs.start_link(name: "conn") end

      assert_raise ArgumentError, ~r/Got: \{:local, :conn\}/, fn ->
        RedixRs.PubSub.start_link(name: {:local, :conn})
      end
    end

    test "URIs" do
      assert_raise ArgumentError,
                   "expected scheme to be redis://, valkey://, or rediss://, got: http://",
                   fn -> RedixRs.URI.to_start_options("http://localhost") end

      assert_raise ArgumentError, ~s/expected database to be an integer, got: "\/db"/, fn ->
        RedixRs.URI.to_start_options("redis://localhost/db")
      end

      assert_raise ArgumentError, ~r/^expected scheme to be redis:/, fn ->
        RedixRs.start_link("memcached://localhost")
      end
    end
  end

  describe "calling a connection that is not running" do
    test "exits with {:redix_exited_during_call, :noproc}, as Redix" do
      {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
      :ok = RedixRs.stop(conn)

      not_running = [
        conn,
        :"redix_errors_#{System.unique_integer([:positive])}",
        {:global, {:redix_errors, make_ref()}},
        {:via, Registry, {RedixRs.RedixErrorsTest.Registry, :nobody}}
      ]

      {:ok, _} = Registry.start_link(keys: :unique, name: RedixRs.RedixErrorsTest.Registry)

      for conn <- not_running,
          call <- [
            &RedixRs.command(&1, ["PING"]),
            &RedixRs.pipeline(&1, [["PING"]], timeout: 0),
            &RedixRs.noreply_command(&1, ["PING"]),
            &RedixRs.transaction_pipeline(&1, [["PING"]])
          ] do
        assert catch_exit(call.(conn)) == {:redix_exited_during_call, :noproc}
      end
    end

    test "code that catches that exit keeps working" do
      name = :"redix_errors_#{System.unique_integer([:positive])}"

      result =
        try do
          RedixRs.command(name, ["GET", "k"])
        catch
          :exit, {:redix_exited_during_call, reason} -> {:fallback, reason}
        end

      assert result == {:fallback, :noproc}
    end

    test "a connection that dies while the call waits for it to connect" do
      # A server that accepts connections but never answers keeps the connection attempt going.
      {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1}, active: false)
      {:ok, port} = :inet.port(listener)
      Process.flag(:trap_exit, true)
      {:ok, conn} = RedixRs.start_link(port: port, password: "pw", timeout: 10_000)

      caller = Task.async(fn -> catch_exit(RedixRs.command(conn, ["PING"], timeout: 5_000)) end)
      # The caller waits for the connection process to connect (no handle is published yet).
      assert eventually(fn -> :sys.get_state(conn).waiting != [] end)

      Process.exit(conn, :kill)
      assert Task.await(caller) == {:redix_exited_during_call, :killed}
      :gen_tcp.close(listener)
    end

    test "invalid connection arguments raise ArgumentError" do
      assert_raise ArgumentError, ~r/expected a connection/, fn ->
        RedixRs.command("conn", ["PING"])
      end
    end
  end
end
