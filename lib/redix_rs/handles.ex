defmodule RedixRs.Handles do
  # `{pid_or_name, handle, owner}` rows: written by a connection process when it connects, deleted when
  # it disconnects or stops, and read by every caller. This process also monitors the owners, so that
  # the rows of a killed connection (no `terminate/2`) do not outlive it, and remembers for a while why
  # each owner exited: callers whose call was cut short by that exit exit with
  # `{:redix_exited_during_call, reason}`, as Redix callers do.
  @moduledoc false
  use GenServer

  @table __MODULE__
  @remember_exit_ms 10_000

  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @doc "The handle of a connected connection and the pid of its owner, by pid or registered atom name."
  def lookup(key) do
    case :ets.lookup(@table, key) do
      [{_, handle, owner}] -> {:ok, handle, owner}
      [] -> :error
    end
  end

  @doc "Publishes `handle` under each of `keys`; called by the owning connection process."
  def put(keys, handle) do
    :ets.insert(@table, Enum.map(keys, &{&1, handle, self()}))
  end

  @doc "Withdraws the calling connection's rows."
  def delete(keys), do: Enum.each(keys, &:ets.match_delete(@table, {&1, :_, self()}))

  @doc """
  Asks for the rows of the calling process to be removed when it dies, and for its exit reason to be
  remembered. A call, so that the monitor is in place before the caller can die.
  """
  def watch, do: GenServer.call(__MODULE__, {:watch, self()})

  @doc "Why `owner` exited; waits for its exit to be seen (it is exiting when this is asked)."
  def exit_reason(owner) do
    GenServer.call(__MODULE__, {:exit_reason, owner}, 5_000)
  catch
    :exit, _ -> :unknown
  end

  @impl true
  def init(nil) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    {:ok, %{exits: %{}, asking: %{}}}
  end

  @impl true
  def handle_call({:watch, pid}, _from, state) do
    Process.monitor(pid)
    {:reply, :ok, state}
  end

  def handle_call({:exit_reason, pid}, from, state) do
    case state.exits do
      %{^pid => reason} -> {:reply, reason, state}
      _ -> {:noreply, update_in(state.asking[pid], &[from | &1 || []])}
    end
  end

  @impl true
  def handle_info({:DOWN, _ref, :process, pid, reason}, state) do
    :ets.match_delete(@table, {:_, :_, pid})
    RedixRs.Cache.forget_pid(pid)
    {asking, remaining} = Map.pop(state.asking, pid, [])
    Enum.each(asking, &GenServer.reply(&1, reason))
    Process.send_after(self(), {:forget, pid}, @remember_exit_ms)
    {:noreply, %{state | exits: Map.put(state.exits, pid, reason), asking: remaining}}
  end

  def handle_info({:forget, pid}, state) do
    {:noreply, %{state | exits: Map.delete(state.exits, pid)}}
  end
end
