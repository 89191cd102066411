defmodule RedixRs.MalformedReplyTest do
  # What a real server cannot produce: garbage, a reply nobody asked for, a reset mid-reply. A tiny
  # fake server (a :gen_tcp listener in the test) plays those; everything else uses real servers.
  use ExUnit.Case, async: true

  # Connections that stop on purpose log their exit, as Redix's do.
  @moduletag :capture_log

  alias RedixRs.ConnectionError

  # Starts a listener; `script` gets each accepted socket.
  defp fake_server(script) do
    {:ok, listen} =
      :gen_tcp.listen(0, [:binary, ip: {127, 0, 0, 1}, active: false, reuseaddr: true])

    {:ok, port} = :inet.port(listen)
    test = self()

    spawn_link(fn ->
      accept_loop(listen, script, test)
    end)

    port
  end

  defp accept_loop(listen, script, test) do
    case :gen_tcp.accept(listen) do
      {:ok, socket} ->
        send(test, :accepted)
        script.(socket)
        accept_loop(listen, script, test)

      {:error, _} ->
        :ok
    end
  end

  defp recv_command(socket) do
    {:ok, data} = :gen_tcp.recv(socket, 0, 5_000)
    data
  end

  test "a malformed reply closes the connection with a clear error, then it reconnects" do
    port =
      fake_server(fn socket ->
        _ = recv_command(socket)
        :gen_tcp.send(socket, "?this is not RESP\r\n")
        Process.sleep(50)
        :gen_tcp.close(socket)
      end)

    {:ok, c} = RedixRs.start_link(port: port, sync_connect: true, backoff_initial: 10)
    assert {:error, %ConnectionError{reason: :disconnected}} = RedixRs.command(c, ["PING"])
    assert Process.alive?(c)
    # It reconnected (a second accept), so the process recovered from the bad reply.
    assert_receive :accepted
    assert_receive :accepted, 5_000
  end

  test "a hostile declared length is refused without allocating it" do
    port =
      fake_server(fn socket ->
        _ = recv_command(socket)
        :gen_tcp.send(socket, "$99999999999999\r\n")
        Process.sleep(100)
        :gen_tcp.close(socket)
      end)

    {:ok, c} = RedixRs.start_link(port: port, sync_connect: true, exit_on_disconnection: true)
    Process.flag(:trap_exit, true)
    # Its caller is told which limit (`:reply_limits`); the connection ends with the whole story.
    assert {:error, %ConnectionError{reason: {:protocol_error, :bulk_too_long}}} =
             RedixRs.command(c, ["GET", "k"])

    assert_receive {:EXIT, ^c, %ConnectionError{reason: {:protocol_error, message}}}, 5_000
    assert message =~ "bulk"
  end

  test "a reply nobody asked for ends the connection instead of mismatching later replies" do
    port =
      fake_server(fn socket ->
        :gen_tcp.send(socket, "+UNSOLICITED\r\n")
        Process.sleep(200)
        :gen_tcp.close(socket)
      end)

    Process.flag(:trap_exit, true)
    {:ok, c} = RedixRs.start_link(port: port, sync_connect: true, exit_on_disconnection: true)
    assert_receive {:EXIT, ^c, %ConnectionError{reason: :unexpected_reply}}, 5_000
  end

  test "a reset in the middle of a reply fails the caller with :disconnected" do
    port =
      fake_server(fn socket ->
        _ = recv_command(socket)
        :gen_tcp.send(socket, "$10\r\nabc")
        Process.sleep(20)
        :gen_tcp.close(socket)
      end)

    {:ok, c} = RedixRs.start_link(port: port, sync_connect: true)
    assert {:error, %ConnectionError{reason: :disconnected}} = RedixRs.command(c, ["GET", "k"])
  end

  test "a server that never answers: the call times out, and the caller is free" do
    port = fake_server(fn socket -> Process.sleep(5_000) && :gen_tcp.close(socket) end)
    {:ok, c} = RedixRs.start_link(port: port, sync_connect: true)
    {elapsed, result} = :timer.tc(fn -> RedixRs.command(c, ["PING"], timeout: 100) end)
    assert {:error, %ConnectionError{reason: :timeout}} = result
    # At its 100 ms timeout, not when the server closes the socket (5 s).
    assert elapsed < 2_500_000
  end

  # Only a server older than Redis 6 answers this, and there is none here.
  test "protocol: :resp3 against a server without HELLO is a clear, fatal error" do
    port =
      fake_server(fn socket ->
        _ = recv_command(socket)
        :gen_tcp.send(socket, "-ERR unknown command 'HELLO'\r\n")
        Process.sleep(100)
        :gen_tcp.close(socket)
      end)

    Process.flag(:trap_exit, true)

    assert {:error, %ConnectionError{reason: %RedixRs.Error{message: message}}} =
             RedixRs.start_link(port: port, protocol: :resp3, sync_connect: true)

    assert message =~ "protocol: :resp3 needs a server that knows HELLO (Redis 6 or later)"
    assert message =~ "ERR unknown command 'HELLO'"
  end
end
