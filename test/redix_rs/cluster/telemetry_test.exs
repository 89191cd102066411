defmodule RedixRs.Cluster.TelemetryTest do
  # RedixRs.Cluster's telemetry events under the configured prefix (`[:redix_rs]` by default,
  # `[:redix]` for Redix's names), and the default handler's log lines. A fake node (always MOVED)
  # and an unreachable seed give every event but `:node_connection_failed`, which the SIGKILL test
  # of failover_test.exs checks on a real cluster. Not async: the prefix setting is global.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  import ExUnit.CaptureLog

  alias RedixRs.Test.ClusterFakeNode

  @default_handler "redix_rs-default-telemetry-handler"
  @events [:topology_change, :failed_topology_refresh, :node_connection_failed, :redirection]

  setup do
    on_exit(fn ->
      :telemetry.detach(@default_handler)
      Application.delete_env(:redix_rs, :telemetry_prefix)
      RedixRs.Telemetry.load_prefix!()
    end)
  end

  defp attach(prefix) do
    parent = self()
    id = "cluster-telemetry-#{System.unique_integer([:positive])}"
    names = for e <- @events, do: prefix ++ [:cluster, e]

    :telemetry.attach_many(
      id,
      names,
      fn name, m, meta, _ -> send(parent, {:event, name, m, meta}) end,
      nil
    )

    on_exit(fn -> :telemetry.detach(id) end)
  end

  for prefix <- [[:redix_rs], [:redix]] do
    test "topology_change, redirection and failed_topology_refresh under #{inspect(prefix)}" do
      prefix = unquote(prefix)
      Application.put_env(:redix_rs, :telemetry_prefix, prefix)
      attach(prefix)
      port = ClusterFakeNode.start()
      address = "127.0.0.1:#{port}"

      {:ok, _} =
        RedixRs.Cluster.start_link(
          name: :tele,
          nodes: [address |> then(&"redis://#{&1}")],
          sync_connect: true
        )

      topology = prefix ++ [:cluster, :topology_change]
      assert_receive {:event, ^topology, %{}, %{cluster: :tele, nodes: [^address]}}

      {:error, _} = RedixRs.Cluster.command(:tele, ["GET", "k"])
      redirection = prefix ++ [:cluster, :redirection]

      for _ <- 1..5 do
        assert_receive {:event, ^redirection, %{},
                        %{cluster: :tele, type: :moved, slot: 1234, target_address: ^address}}
      end

      refute_received {:event, ^redirection, _, _}
      RedixRs.Cluster.stop(:tele)

      closed = RedixRs.Test.Helpers.closed_port()

      {:ok, _} =
        RedixRs.Cluster.start_link(
          name: :tele_down,
          nodes: ["redis://127.0.0.1:#{closed}"],
          timeout: 500
        )

      failed = prefix ++ [:cluster, :failed_topology_refresh]

      assert_receive {:event, ^failed, %{},
                      %{
                        cluster: :tele_down,
                        reason: {:no_reachable_node, [{"127.0.0.1", ^closed, _why}]}
                      }}

      node_failed = prefix ++ [:cluster, :node_connection_failed]
      closed_address = "127.0.0.1:#{closed}"

      assert_receive {:event, ^node_failed, %{},
                      %{
                        cluster: :tele_down,
                        address: ^closed_address,
                        reason: %RedixRs.ConnectionError{reason: :econnrefused}
                      }}

      RedixRs.Cluster.stop(:tele_down)
    end
  end

  test "the default handler logs them in Redix.Cluster's words" do
    assert :ok = RedixRs.Telemetry.attach_default_handler()

    log =
      capture_log(fn ->
        :telemetry.execute([:redix_rs, :cluster, :redirection], %{}, %{
          cluster: :c,
          type: :moved,
          slot: 7,
          target_address: "h:1"
        })

        :telemetry.execute([:redix_rs, :cluster, :failed_topology_refresh], %{}, %{
          cluster: :c,
          reason: {:no_reachable_node, []}
        })

        :telemetry.execute([:redix_rs, :cluster, :node_connection_failed], %{}, %{
          cluster: :c,
          address: "h:2",
          reason: %RedixRs.ConnectionError{reason: :econnrefused}
        })

        :telemetry.execute([:redix_rs, :cluster, :topology_change], %{}, %{
          cluster: :c,
          nodes: ["h:1"]
        })
      end)

    assert log =~ "Cluster :c moved redirection for slot 7 to h:1"
    assert log =~ "Cluster :c failed to refresh topology: {:no_reachable_node, []}"
    assert log =~ "Cluster :c failed to connect to node h:2: connection refused"
    refute log =~ "h:1]"
  end
end
