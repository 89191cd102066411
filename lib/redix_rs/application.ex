defmodule RedixRs.Application do
  # Owns the ETS table through which callers find a connection's native handle without a process hop.
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [RedixRs.Handles]
    Supervisor.start_link(children, strategy: :one_for_one, name: RedixRs.Supervisor)
  end
end

defmodule RedixRs.Handles do
  # `{pid_or_name, handle, owner}` rows: written by a connection process when it connects, deleted when
  # it disconnects or stops, and read by every caller. This process also monitors the owners, so that
  # the rows of a killed connection (no `terminate/2`) do not outlive it.
  @moduledoc false
  use GenServer

  @table __MODULE__

  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @doc "The handle of a connected connection, by pid or registered atom name."
  def lookup(key) do
    case :ets.lookup(@table, key) do
      [{_, handle, _}] -> {:ok, handle}
      [] -> :error
    end
  end

  @doc "Publishes `handle` under each of `keys`; called by the owning connection process."
  def put(keys, handle) do
    :ets.insert(@table, Enum.map(keys, &{&1, handle, self()}))
  end

  @doc "Withdraws the calling connection's rows."
  def delete(keys), do: Enum.each(keys, &:ets.match_delete(@table, {&1, :_, self()}))

  @doc "Asks for the rows of the calling process to be removed when it dies."
  def watch, do: GenServer.cast(__MODULE__, {:watch, self()})

  @impl true
  def init(nil) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    {:ok, nil}
  end

  @impl true
  def handle_cast({:watch, pid}, state) do
    Process.monitor(pid)
    {:noreply, state}
  end

  @impl true
  def handle_info({:DOWN, _ref, :process, pid, _reason}, state) do
    :ets.match_delete(@table, {:_, :_, pid})
    {:noreply, state}
  end
end
