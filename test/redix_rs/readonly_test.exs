defmodule RedixRs.ReadonlyTest do
  # Redix 1.6's `:readonly` start option: READONLY is sent after connecting (after AUTH, SELECT and
  # CLIENT SETNAME) and again after each reconnection. A server started with `--cluster-enabled yes`
  # (no slots assigned: READONLY only needs cluster support) accepts it and marks the client with the
  # `r` flag; a standalone server refuses it, which is fatal as in Redix (an error reply during the
  # handshake).
  use ExUnit.Case, async: true

  # Connections fail and exit on purpose.
  @moduletag :capture_log

  import RedixRs.Test.Helpers, only: [eventually: 1]

  alias RedixRs.{ConnectionError, Protocol}
  alias RedixRs.Test.{RedisServer, Servers}

  @refused %RedixRs.Error{message: "ERR This instance has cluster support disabled"}

  setup_all do
    %{cluster_node: RedisServer.start(args: ["--cluster-enabled", "yes"], password: "pw")}
  end

  # The flags of this connection's client, as the server sees them (`CLIENT INFO`).
  defp flags(conn) do
    {:ok, info} = RedixRs.command(conn, ["CLIENT", "INFO"])
    [_, flags] = Regex.run(~r/ flags=(\S+) /, info)
    flags
  end

  test "READONLY is sent after connecting: the client is read-only", %{cluster_node: node} do
    {:ok, conn} =
      RedixRs.start_link(port: node.port, password: "pw", readonly: true, sync_connect: true)

    assert flags(conn) =~ "r"

    # Without the option (the default), it is not.
    {:ok, plain} = RedixRs.start_link(port: node.port, password: "pw", sync_connect: true)
    refute flags(plain) =~ "r"
  end

  test "after AUTH, SELECT and CLIENT SETNAME, in that order, as the last command sent", %{
    cluster_node: node
  } do
    monitor = monitor(node)
    name = "readonly-#{System.unique_integer([:positive])}"

    {:ok, conn} =
      RedixRs.start_link(
        port: node.port,
        password: "pw",
        database: 0,
        client_name: name,
        readonly: true,
        sync_connect: true
      )

    # MONITOR shows what each client sent (the password of AUTH redacted); this client's first:
    {:ok, info} = RedixRs.command(conn, ["CLIENT", "INFO"])
    [_, address] = Regex.run(~r/ addr=(\S+) /, info)

    # ... then the CLIENT INFO of this test.
    assert next_commands(monitor, address, 5) == [
             ["AUTH", "(redacted)"],
             ["SELECT", "0"],
             ["CLIENT", "SETNAME", name],
             ["READONLY"],
             ["CLIENT", "INFO"]
           ]

    assert flags(conn) =~ "r"
  end

  test "again after every reconnection", %{cluster_node: node} do
    {:ok, conn} =
      RedixRs.start_link(
        port: node.port,
        password: "pw",
        readonly: true,
        backoff_initial: 50,
        sync_connect: true
      )

    for _ <- 1..2 do
      {:ok, id} = RedixRs.command(conn, ["CLIENT", "ID"])
      {:ok, admin} = RedixRs.start_link(port: node.port, password: "pw", sync_connect: true)
      assert {:ok, 1} = RedixRs.command(admin, ["CLIENT", "KILL", "ID", id])
      RedixRs.stop(admin)

      assert eventually(fn ->
               match?({:ok, new_id} when new_id != id, RedixRs.command(conn, ["CLIENT", "ID"]))
             end)

      assert flags(conn) =~ "r"
    end
  end

  test "RedixRs.PubSub takes it too, as Redix.PubSub does", %{cluster_node: node} do
    name = "readonly-pubsub-#{System.unique_integer([:positive])}"

    {:ok, _pubsub} =
      RedixRs.PubSub.start_link(
        port: node.port,
        password: "pw",
        readonly: true,
        client_name: name,
        sync_connect: true
      )

    {:ok, admin} = RedixRs.start_link(port: node.port, password: "pw", sync_connect: true)
    {:ok, clients} = RedixRs.command(admin, ["CLIENT", "LIST"])
    [line] = clients |> String.split("\n") |> Enum.filter(&(&1 =~ " name=#{name} "))
    assert [_, flags] = Regex.run(~r/ flags=(\S+) /, line)
    assert flags =~ "r"
  end

  describe "a server without cluster support refuses READONLY, and that is fatal, as in Redix" do
    test "sync_connect: true: start_link returns the error reply, nested" do
      Process.flag(:trap_exit, true)

      assert {:error, %ConnectionError{reason: @refused}} =
               RedixRs.start_link(port: Servers.port(), readonly: true, sync_connect: true)
    end

    test "sync_connect: false: the process exits with the error reply" do
      Process.flag(:trap_exit, true)
      {:ok, conn} = RedixRs.start_link(port: Servers.port(), readonly: true)
      assert_receive {:EXIT, ^conn, @refused}, 5_000
    end

    test "the option's value is checked" do
      assert_raise ArgumentError,
                   ~r/invalid value for :readonly option: expected a boolean/,
                   fn ->
                     RedixRs.start_link(readonly: :yes)
                   end
    end
  end

  # A MONITOR client on a plain socket, its replies read with RedixRs.Protocol.
  defp monitor(server) do
    {:ok, socket} = :gen_tcp.connect(~c"127.0.0.1", server.port, [:binary, active: false])
    :ok = :gen_tcp.send(socket, [Protocol.pack(["AUTH", "pw"]), Protocol.pack(["MONITOR"])])
    assert {:ok, ["OK", "OK"], rest} = read(socket, &Protocol.parse_multi(&1, 2), "")
    {socket, rest}
  end

  # The next `count` commands MONITOR reports for the client at `address` (its lines look like
  # `1700000000.123456 [0 127.0.0.1:5555] "SELECT" "0"`).
  defp next_commands({socket, buffered}, address, count, acc \\ []) do
    if length(acc) == count do
      Enum.reverse(acc)
    else
      {:ok, line, rest} = read(socket, &Protocol.parse/1, buffered)
      [_, from, args] = Regex.run(~r/^\S+ \[\d+ (\S+)\] (.*)$/, line)
      command = ~r/"((?:[^"\\]|\\.)*)"/ |> Regex.scan(args) |> Enum.map(&Enum.at(&1, 1))
      acc = if from == address, do: [command | acc], else: acc
      next_commands({socket, rest}, address, count, acc)
    end
  end

  defp read(socket, parse, buffered) do
    case parse.(buffered) do
      {:continuation, more} ->
        {:ok, data} = :gen_tcp.recv(socket, 0, 5_000)
        read(socket, more, data)

      done ->
        done
    end
  end
end
