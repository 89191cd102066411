defmodule RedixRs.Test.ClusterFakeNode do
  @moduledoc false
  # A fake cluster node, for what a real one cannot do: answer every data command with `MOVED` to
  # itself, forever. It claims every slot (`CLUSTER SLOTS`; `CLUSTER SHARDS` is refused, as a
  # server before 7 would), knows no command (`COMMAND` is empty), and tells its owner about each
  # command it gets: `{:fake_node, command}`.

  @doc "Starts the fake on a free port; returns the port. It dies with the caller."
  def start do
    owner = self()
    parent = self()

    spawn_link(fn ->
      {:ok, listen} =
        :gen_tcp.listen(0, [:binary, active: false, reuseaddr: true, ip: {127, 0, 0, 1}])

      {:ok, port} = :inet.port(listen)
      send(parent, {:fake_port, port})
      accept(listen, port, owner)
    end)

    receive do
      {:fake_port, port} -> port
    end
  end

  defp accept(listen, port, owner) do
    {:ok, socket} = :gen_tcp.accept(listen)
    pid = spawn(fn -> serve(socket, port, owner, "") end)
    :ok = :gen_tcp.controlling_process(socket, pid)
    accept(listen, port, owner)
  end

  defp serve(socket, port, owner, buffer) do
    case RedixRs.Protocol.parse(buffer) do
      {:ok, command, rest} ->
        send(owner, {:fake_node, command})
        :gen_tcp.send(socket, answer(command, port))
        serve(socket, port, owner, rest)

      {:continuation, _} ->
        case :gen_tcp.recv(socket, 0) do
          {:ok, data} -> serve(socket, port, owner, buffer <> data)
          {:error, _} -> :ok
        end
    end
  end

  defp answer(command, port) do
    case Enum.map(command, &String.upcase/1) do
      ["CLUSTER", "SHARDS"] ->
        "-ERR unknown subcommand 'SHARDS'\r\n"

      ["CLUSTER", "SLOTS"] ->
        id = String.duplicate("f", 40)
        "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:#{port}\r\n$40\r\n#{id}\r\n"

      ["COMMAND" | _] ->
        "*0\r\n"

      _ ->
        "-MOVED 1234 127.0.0.1:#{port}\r\n"
    end
  end
end
