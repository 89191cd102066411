defmodule RedixRs.Test.PeerNode do
  @moduledoc false
  # A second BEAM node for the tests of connections and subscribers on another node: makes this VM a
  # distributed node (once), then starts a peer with this VM's code paths and redix_rs running.

  @doc "Starts epmd and makes this VM a distributed node, unless it is one already."
  def distribute! do
    {_, 0} = System.cmd("epmd", ["-daemon"])
    # `epmd -daemon` returns before epmd listens: on a fresh machine Node.start could beat it.
    true =
      RedixRs.Test.Helpers.eventually(fn -> match?({_, 0}, System.cmd("epmd", ["-names"])) end)

    unless Node.alive?() do
      {:ok, _} = Node.start(:"redix_rs_test_#{System.unique_integer([:positive])}@127.0.0.1")
    end

    :ok
  end

  @doc "A telemetry handler for a peer node: sends `{:peer_telemetry, event, metadata}` to `pid`."
  def forward_event(event, _measurements, metadata, pid),
    do: send(pid, {:peer_telemetry, event, metadata})

  @doc "A peer node linked to the caller (it goes away with the test), redix_rs started: `{peer, node}`."
  def start! do
    distribute!()
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    {:ok, peer, node} =
      :peer.start_link(%{
        name: :"redix_rs_peer_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        args: paths
      })

    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:redix_rs])
    {peer, node}
  end
end
