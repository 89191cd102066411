defmodule :telemetry do
  @moduledoc false
  # A minimal stand-in for the :telemetry library, which cannot be fetched here (no hex.pm): the same
  # attach/detach/execute functions, so the tests exercise redix_rs's real event calls.

  @table :redix_rs_test_telemetry_handlers

  def attach(id, event, fun, config), do: attach_many(id, [event], fun, config)

  def attach_many(id, events, fun, config) do
    table()

    if :ets.match_object(@table, {id, :_, :_, :_}) != [] do
      {:error, :already_exists}
    else
      Enum.each(events, &:ets.insert(@table, {id, &1, fun, config}))
      :ok
    end
  end

  def detach(id) do
    table()

    case :ets.match_delete(@table, {id, :_, :_, :_}) do
      true -> :ok
    end
  end

  def execute(event, measurements, metadata) do
    table()

    for {_id, ^event, fun, config} <- :ets.tab2list(@table) do
      fun.(event, measurements, metadata, config)
    end

    :ok
  end

  defp table do
    if :ets.whereis(@table) == :undefined do
      parent = self()

      spawn(fn ->
        try do
          :ets.new(@table, [:named_table, :public, :bag])
        rescue
          ArgumentError -> :already_created
        end

        send(parent, :table_ready)
        Process.sleep(:infinity)
      end)

      receive do
        :table_ready -> :ok
      end
    end
  end
end
