defmodule RedixRs.Test.ClusterFakeNode do
  @moduledoc false
  # A fake cluster node, for what a real one cannot do: answer every data command with `MOVED`,
  # forever (to itself, or to another fake). It claims every slot (`CLUSTER SLOTS`; `CLUSTER
  # SHARDS` is refused, as a server before 7 would), knows no command (`COMMAND` is empty), and
  # tells its owner about each command it gets: `{:fake_node, port, command}`.

  @doc """
  Starts the fake on a free port; returns the port. It dies with the caller. Its `MOVED` replies
  name itself, or the port `moved_to` returns (called at each reply: two fakes can send clients
  to each other).
  """
  def start(moved_to \\ nil) do
    owner = self()
    parent = self()

    spawn_link(fn ->
      {:ok, listen} =
        :gen_tcp.listen(0, [:binary, active: false, reuseaddr: true, ip: {127, 0, 0, 1}])

      {:ok, port} = :inet.port(listen)
      send(parent, {:fake_port, port})
      accept(listen, {port, moved_to || fn -> port end}, owner)
    end)

    receive do
      {:fake_port, port} -> port
    end
  end

  defp accept(listen, ports, owner) do
    {:ok, socket} = :gen_tcp.accept(listen)
    pid = spawn(fn -> serve(socket, ports, owner, "") end)
    :ok = :gen_tcp.controlling_process(socket, pid)
    accept(listen, ports, owner)
  end

  defp serve(socket, {port, _} = ports, owner, buffer) do
    case RedixRs.Protocol.parse(buffer) do
      {:ok, command, rest} ->
        send(owner, {:fake_node, port, command})
        :gen_tcp.send(socket, answer(command, ports))
        serve(socket, ports, owner, rest)

      {:continuation, _} ->
        case :gen_tcp.recv(socket, 0) do
          {:ok, data} -> serve(socket, ports, owner, buffer <> data)
          {:error, _} -> :ok
        end
    end
  end

  defp answer(command, {port, moved_to}) do
    case Enum.map(command, &String.upcase/1) do
      ["CLUSTER", "SHARDS"] ->
        "-ERR unknown subcommand 'SHARDS'\r\n"

      ["CLUSTER", "SLOTS"] ->
        id = String.duplicate("f", 40)
        "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:#{port}\r\n$40\r\n#{id}\r\n"

      ["COMMAND" | _] ->
        "*0\r\n"

      _ ->
        "-MOVED 1234 127.0.0.1:#{moved_to.()}\r\n"
    end
  end
end
