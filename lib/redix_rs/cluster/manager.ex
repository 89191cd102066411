defmodule RedixRs.Cluster.Manager do
  # The process that owns a cluster's native handle: it starts the native side (which discovers the
  # topology, keeps one connection per node and routes calls), publishes the handle for callers
  # (`RedixRs.Handles`, key `{RedixRs.Cluster, name}`), turns the native side's events into
  # telemetry, and closes everything when it stops. It is never on the path of a call.
  @moduledoc false
  use GenServer

  alias RedixRs.{Connector, Handles, Native, Telemetry}

  def start_link({cluster_opts, node_opts}),
    do: GenServer.start_link(__MODULE__, {cluster_opts, node_opts})

  @doc "The handle of the cluster registered as `name`, and its owner."
  def lookup(name) when is_atom(name), do: Handles.lookup({RedixRs.Cluster, name})

  @impl true
  def init({cluster_opts, node_opts}) do
    name = cluster_opts[:name]
    Handles.watch()
    config = RedixRs.Redact.scrub(fn -> Connector.native_config(node_opts, :plain) end)

    settings = %{
      read_from_replicas: cluster_opts[:read_from_replicas],
      refresh_interval: cluster_opts[:topology_refresh_interval],
      backoff_initial: node_opts[:backoff_initial],
      backoff_max: node_opts[:backoff_max],
      health_check_interval: node_opts[:health_check_interval]
    }

    {:ok, handle} = Native.cluster_start(config, cluster_opts[:nodes], settings, self())
    Handles.put([{RedixRs.Cluster, name}], handle)
    state = %{name: name, handle: handle}

    if cluster_opts[:sync_connect] do
      await_discovery(state)
    else
      {:ok, state}
    end
  end

  # The first discovery: its `topology_change` (or `failed_topology_refresh`) event comes first.
  defp await_discovery(state) do
    receive do
      {:redix_rs_cluster, {:topology_change, _} = event} ->
        emit(event, state)
        {:ok, state}

      {:redix_rs_cluster, {:failed_topology_refresh, reason} = event} ->
        emit(event, state)
        {:stop, reason}

      {:redix_rs_cluster, event} ->
        emit(event, state)
        await_discovery(state)
    end
  end

  @impl true
  def handle_info({:redix_rs_cluster, event}, state) do
    emit(event, state)
    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def handle_call(:handle, _from, state), do: {:reply, state.handle, state}

  @impl true
  def terminate(_reason, state) do
    Handles.delete([{RedixRs.Cluster, state.name}])
    Native.cluster_close(state.handle)
  end

  defp emit({:topology_change, nodes}, state),
    do: execute(:topology_change, %{cluster: state.name, nodes: nodes})

  defp emit({:failed_topology_refresh, reason}, state),
    do: execute(:failed_topology_refresh, %{cluster: state.name, reason: reason})

  defp emit({:node_connection_failed, address, reason}, state) do
    execute(:node_connection_failed, %{
      cluster: state.name,
      address: address,
      reason: %RedixRs.ConnectionError{reason: reason}
    })
  end

  defp emit({:redirection, type, slot, address}, state) do
    execute(:redirection, %{cluster: state.name, type: type, slot: slot, target_address: address})
  end

  defp execute(event, metadata),
    do: Telemetry.execute([:redix_rs, :cluster, event], %{}, metadata)
end
