defmodule RedixRs.RemoteNameTest do
  # `{name, node}` addressing of a connection, as with Redix: calls on a connection registered under
  # a name on another node run through that connection's process (a native handle cannot cross
  # nodes); on this node they take the usual path. Not async: it makes this VM a distributed node.
  use ExUnit.Case, async: false

  alias RedixRs.Test.Servers

  setup do
    {peer, node} = RedixRs.Test.PeerNode.start!()

    id = "redix_rs-remote-name-test-#{System.unique_integer([:positive])}"
    events = [[:redix_rs, :pipeline, :start], [:redix_rs, :pipeline, :stop]]
    :ok = :telemetry.attach_many(id, events, &__MODULE__.forward/4, self())
    on_exit(fn -> :telemetry.detach(id) end)

    %{node: node, peer: peer, name: :"redix_rs_remote_#{System.unique_integer([:positive])}"}
  end

  @doc false
  def forward(event, measurements, metadata, test_pid) do
    send(test_pid, {:telemetry, event, measurements, metadata})
  end

  test "every kind of call through {name, node}", %{node: node, name: name} do
    {:ok, pid} = start_remote(node, port: Servers.port(), name: name, sync_connect: true)
    conn = {name, node}
    key = "remote_name:#{System.unique_integer([:positive])}"

    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    assert "PONG" = RedixRs.command!(conn, ["PING"])
    assert {:ok, ["OK", "v"]} = RedixRs.pipeline(conn, [["SET", key, "v"], ["GET", key]])

    assert {:error, %RedixRs.Error{message: "ERR value is not" <> _}} =
             RedixRs.command(conn, ["INCR", key])

    assert {:ok, [_, 1]} = RedixRs.transaction_pipeline(conn, [["DEL", key], ["INCR", key]])
    assert :ok = RedixRs.noreply_command(conn, ["INCR", key])
    assert {:ok, "2"} = RedixRs.command(conn, ["GET", key])

    # The same process as seen by its pid.
    assert {:ok, "2"} = RedixRs.command(pid, ["GET", key])

    # Validation still happens in the caller, before anything crosses the network.
    assert_raise ArgumentError, fn -> RedixRs.command(conn, ["GET", self()]) end
  end

  test "telemetry metadata as Redix reports it", %{node: node, name: name} do
    {:ok, _} = start_remote(node, port: Servers.port(), name: name, sync_connect: true)
    conn = {name, node}

    assert {:ok, "x"} = RedixRs.command(conn, ["ECHO", "x"], telemetry_metadata: %{n: 1})

    # `GenServer.whereis/1` of a remote name is the name itself.
    expected = %{
      connection: conn,
      connection_name: conn,
      commands: [["ECHO", "x"]],
      extra_metadata: %{n: 1}
    }

    assert_received {:telemetry, [:redix_rs, :pipeline, :start], _, ^expected}
    assert_received {:telemetry, [:redix_rs, :pipeline, :stop], %{duration: d}, ^expected}
    assert d > 0
  end

  test "{name, node()} on this node", %{name: name} do
    {:ok, pid} = RedixRs.start_link(port: Servers.port(), name: name, sync_connect: true)
    assert {:ok, "PONG"} = RedixRs.command({name, node()}, ["PING"])

    assert_received {:telemetry, [:redix_rs, :pipeline, :stop], _,
                     %{connection: ^pid, connection_name: {^name, _}}}
  end

  test "nothing registered under the name there: the caller exits as a Redix caller does",
       %{node: node, name: name} do
    assert catch_exit(RedixRs.command({name, node}, ["PING"])) ==
             {:redix_exited_during_call, :noproc}
  end

  test "a node that went away: the caller exits with :noconnection, as a Redix caller does",
       %{node: node, peer: peer, name: name} do
    {:ok, _} = start_remote(node, port: Servers.port(), name: name, sync_connect: true)
    assert {:ok, "PONG"} = RedixRs.command({name, node}, ["PING"])

    Process.unlink(peer)
    :ok = :peer.stop(peer)

    assert catch_exit(RedixRs.command({name, node}, ["PING"])) ==
             {:redix_exited_during_call, :noconnection}
  end

  # Started under the peer's own supervisor: a process started by :erpc would be linked to the
  # short-lived process that ran the call.
  defp start_remote(node, opts) do
    spec = Map.put(RedixRs.child_spec(opts), :id, make_ref())
    :erpc.call(node, Supervisor, :start_child, [RedixRs.Supervisor, spec])
  end
end
