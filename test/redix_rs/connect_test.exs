defmodule RedixRs.ConnectTest do
  # Transports (TCP, Unix socket) and the handshake (AUTH, ACL users, SELECT, CLIENT SETNAME).
  use ExUnit.Case, async: true

  # Connections that stop on purpose log their exit, as Redix's do.
  @moduletag :capture_log

  alias RedixRs.{ConnectionError, Error}
  alias RedixRs.Test.Servers

  test "AUTH with a password" do
    port = Servers.port(:password)
    {:ok, c} = RedixRs.start_link(port: port, password: "s3cret", sync_connect: true)
    assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])

    {:ok, c} = RedixRs.start_link("redis://:s3cret@127.0.0.1:#{port}", sync_connect: true)
    assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
  end

  test "the password may be an {m, f, a}, called at connect" do
    port = Servers.port(:password)

    {:ok, c} =
      RedixRs.start_link(port: port, password: {String, :reverse, ["terc3s"]}, sync_connect: true)

    assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
  end

  test "AUTH with an ACL username and password" do
    port = Servers.port(:acl)

    {:ok, c} =
      RedixRs.start_link(
        port: port,
        username: "alice",
        password: "wonderland",
        sync_connect: true
      )

    assert {:ok, "alice"} = RedixRs.command(c, ["ACL", "WHOAMI"])

    {:ok, c} =
      RedixRs.start_link("redis://alice:wonderland@localhost:#{port}", sync_connect: true)

    assert {:ok, "alice"} = RedixRs.command(c, ["ACL", "WHOAMI"])
  end

  test "a wrong password is fatal: {:error, %ConnectionError{reason: %RedixRs.Error{}}}" do
    Process.flag(:trap_exit, true)
    port = Servers.port(:password)

    assert {:error, %ConnectionError{reason: %Error{message: "WRONGPASS" <> _}}} =
             RedixRs.start_link(port: port, password: "wrong", sync_connect: true)

    {:ok, pid} = RedixRs.start_link(port: port, password: "wrong")
    assert_receive {:EXIT, ^pid, %Error{message: "WRONGPASS" <> _}}, 2_000
  end

  test "a server that needs a password answers NOAUTH without one" do
    {:ok, c} = RedixRs.start_link(port: Servers.port(:password), sync_connect: true)
    assert {:error, %Error{message: "NOAUTH" <> _}} = RedixRs.command(c, ["PING"])
  end

  test "SELECT of :database, as an integer or a string" do
    {:ok, c} = RedixRs.start_link(port: Servers.port(), database: 3, sync_connect: true)
    key = "db:#{System.unique_integer([:positive])}"
    RedixRs.command!(c, ["SET", key, "in 3"])
    {:ok, c2} = RedixRs.start_link(port: Servers.port(), database: "3", sync_connect: true)
    assert {:ok, "in 3"} = RedixRs.command(c2, ["GET", key])
    assert {:ok, nil} = RedixRs.command(:redix, ["GET", key])
  end

  test "an out-of-range database is fatal, as in Redix" do
    Process.flag(:trap_exit, true)

    assert {:error, %ConnectionError{reason: %Error{message: "ERR DB index is out of range"}}} =
             RedixRs.start_link(port: Servers.port(), database: 1000, sync_connect: true)
  end

  test "client_name is set with CLIENT SETNAME" do
    {:ok, c} = RedixRs.start_link(port: Servers.port(), client_name: "my-app", sync_connect: true)
    assert {:ok, "my-app"} = RedixRs.command(c, ["CLIENT", "GETNAME"])
  end

  test "Unix socket through host: {:local, path} and through a unix:// URI" do
    path = Servers.get(:unix).unix_path
    {:ok, c} = RedixRs.start_link(host: {:local, path}, port: 0, sync_connect: true)
    assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
    assert {:ok, info} = RedixRs.command(c, ["CLIENT", "INFO"])
    assert info =~ "laddr=#{path}"

    {:ok, c} = RedixRs.start_link("unix://" <> path, sync_connect: true)
    assert {:ok, ["PONG", "x"]} = RedixRs.pipeline(c, [["PING"], ["ECHO", "x"]])
  end

  test "a missing Unix socket fails with :enoent" do
    Process.flag(:trap_exit, true)

    assert {:error, %ConnectionError{reason: :enoent}} =
             RedixRs.start_link(host: {:local, "/nonexistent/redis.sock"}, sync_connect: true)
  end

  test "socket_opts for plain TCP: keepalive, buffer sizes, nodelay, inet6 with fallback" do
    opts = [port: Servers.port(), sync_connect: true]

    for socket_opts <- [
          [keepalive: true],
          [sndbuf: 262_144, recbuf: 262_144],
          [buffer: 65_536, nodelay: false],
          [:inet6],
          [:inet]
        ] do
      {:ok, c} = RedixRs.start_link([socket_opts: socket_opts] ++ opts)
      assert {:ok, "PONG"} = RedixRs.command(c, ["PING"]), inspect(socket_opts)
    end
  end

  test "an unknown host fails with :nxdomain" do
    Process.flag(:trap_exit, true)

    assert {:error, %ConnectionError{reason: :nxdomain}} =
             RedixRs.start_link(host: "no-such-host.invalid", sync_connect: true)
  end
end
