defmodule RedixRs.HandleLifetimeTest do
  # The native handle monitors its owner: when the connection process dies, however it dies, the socket
  # closes and the tokio task ends. Not async: it counts the server's clients.
  use ExUnit.Case, async: false

  alias RedixRs.Test.Servers
  import RedixRs.Test.Helpers

  test "killing the connection process closes its socket" do
    name = "lifetime-#{System.unique_integer([:positive])}"
    {:ok, c} = RedixRs.start_link(port: Servers.port(), client_name: name, sync_connect: true)
    assert listed?(name)
    Process.unlink(c)
    Process.exit(c, :kill)
    assert eventually(fn -> not listed?(name) end)
  end

  test "a caller holding the name of a killed connection gets an exit, not a hang" do
    name = :"lifetime_#{System.unique_integer([:positive])}"
    {:ok, c} = RedixRs.start_link(port: Servers.port(), name: name, sync_connect: true)
    Process.unlink(c)
    Process.exit(c, :kill)
    assert eventually(fn -> not Process.alive?(c) end)

    # Either the name is already gone (an exit, as calling any dead GenServer) or the stale handle
    # answers at once that it is closed: never a hang, never a reply from a dead connection.
    result =
      try do
        RedixRs.command(name, ["PING"], timeout: 1_000)
      catch
        :exit, reason -> {:exit, reason}
      end

    assert match?({:exit, _}, result) or
             match?({:error, %RedixRs.ConnectionError{reason: :closed}}, result)
  end

  test "500 connect/stop cycles leave no client behind on the server" do
    baseline = connected_clients()

    for _ <- 1..500 do
      {:ok, c} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
      {:ok, "PONG"} = RedixRs.command(c, ["PING"])
      :ok = RedixRs.stop(c)
    end

    assert eventually(fn -> connected_clients() <= baseline end),
           "connected_clients: #{connected_clients()} (baseline #{baseline})"
  end

  defp listed?(name) do
    {:ok, list} = RedixRs.command(:redix, ["CLIENT", "LIST"])
    list =~ "name=#{name} "
  end

  defp connected_clients do
    {:ok, info} = RedixRs.command(:redix, ["INFO", "clients"])
    [_, n] = Regex.run(~r/connected_clients:(\d+)/, info)
    String.to_integer(n)
  end
end
