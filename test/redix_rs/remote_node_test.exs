defmodule RedixRs.RemoteNodeTest do
  # A connection living on another node still works, through its process (a native handle cannot
  # cross nodes). Not async: it makes this VM a distributed node.
  use ExUnit.Case, async: false

  alias RedixRs.Test.Servers

  setup do
    {_peer, node} = RedixRs.Test.PeerNode.start!()
    %{node: node}
  end

  test "commands, pipelines and errors through a connection on another node", %{node: node} do
    {:ok, conn} = start_remote(node, port: Servers.port(), sync_connect: true)
    assert node(conn) == node

    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])

    assert {:ok, ["OK", "v"]} =
             RedixRs.pipeline(conn, [["SET", "remote:k", "v"], ["GET", "remote:k"]])

    assert {:error, %RedixRs.Error{}} = RedixRs.command(conn, ["INCR", "remote:k"])

    assert {:ok, [_deleted, 1]} =
             RedixRs.transaction_pipeline(conn, [["DEL", "remote:n"], ["INCR", "remote:n"]])

    # Validation still happens in the caller, before anything crosses the network.
    assert_raise ArgumentError, fn -> RedixRs.command(conn, ["GET", self()]) end
  end

  test "a {:global, name} registered on another node", %{node: node} do
    name = {:global, {:redix_rs_remote, System.unique_integer()}}

    {:ok, _} = start_remote(node, port: Servers.port(), name: name, sync_connect: true)

    :global.sync()
    assert {:ok, "PONG"} = RedixRs.command(name, ["PING"])
  end

  # Started under the peer's own supervisor: a process started by :erpc would be linked to the
  # short-lived process that ran the call.
  defp start_remote(node, opts) do
    spec = Map.put(RedixRs.child_spec(opts), :id, make_ref())
    :erpc.call(node, Supervisor, :start_child, [RedixRs.Supervisor, spec])
  end
end
