defmodule RedixRs.PubSub.Subscriptions do
  # Who subscribed to what, for the two processes behind `RedixRs.PubSub`: `RedixRs.PubSub.Connection`
  # (one server) and `RedixRs.PubSub.Cluster`. Both keep the same fields in their state, and these
  # functions read and update only those:
  #
  #   * `subscriptions`: `{kind, name}` => MapSet of subscriber pids
  #   * `subscribers`: pid => monitor ref (the `ref` of Redix's messages)
  #   * `refs`: the pids the native side sends to (a local subscriber, or a remote one's relay) =>
  #     the ref their messages carry: the map `RedixRs.Native.pubsub_drain/2` takes references from
  #   * `relays`: remote subscriber pid => its relay (`RedixRs.PubSub.Relay`)
  #   * `retiring`: remote pid => its last relay told to stop and not yet ended
  #   * `relay_monitors`: relay monitor ref => remote pid
  @moduledoc false

  alias RedixRs.PubSub.Relay

  # The state of either process: a struct with the fields above.
  @type state() :: map()
  @type kind() :: :channel | :pattern | :shard

  @doc """
  Adds `pid` to `names` of `kind`, monitoring it if it is new; returns `{ref, new_names, state}`,
  where `new_names` had no subscriber before (Redis must be told about them).
  """
  @spec add(state(), kind(), [String.t()], pid()) :: {reference(), [String.t()], state()}
  def add(state, kind, names, pid) do
    {ref, state} = monitor(state, pid)
    new = Enum.filter(names, &(not Map.has_key?(state.subscriptions, {kind, &1})))

    subscriptions =
      Enum.reduce(names, state.subscriptions, fn name, acc ->
        Map.update(acc, {kind, name}, MapSet.new([pid]), &MapSet.put(&1, pid))
      end)

    {ref, new, %{state | subscriptions: subscriptions}}
  end

  defp monitor(state, pid) do
    case state.subscribers do
      %{^pid => ref} ->
        {ref, state}

      _ ->
        ref = Process.monitor(pid)
        {sender, state} = sender(state, pid)

        {ref,
         %{
           state
           | subscribers: Map.put(state.subscribers, pid, ref),
             refs: Map.put(state.refs, sender, ref)
         }}
    end
  end

  @doc "The pid the native side sends `pid`'s messages to: `pid` itself, or its relay."
  @spec target(state(), pid()) :: pid()
  def target(state, pid), do: Map.get(state.relays, pid, pid)

  @doc """
  The process that sends `pid` its messages: itself when local, else its relay, started when it has
  none (after the previous one, if that one is still stopping). Returns `{sender, state}`.
  """
  @spec sender(state(), pid()) :: {pid(), state()}
  def sender(state, pid) when node(pid) == node(), do: {pid, state}

  def sender(state, pid) do
    case state.relays do
      %{^pid => relay} ->
        {relay, state}

      _ ->
        relay = Relay.start_link(pid, Map.get(state.retiring, pid))
        {relay, %{state | relays: Map.put(state.relays, pid, relay)}}
    end
  end

  # `pid` has nothing left here: its relay (if any) stops once it has forwarded what it was handed.
  defp release(state, pid) do
    case Map.pop(state.relays, pid) do
      {nil, _} ->
        state

      {relay, relays} ->
        Relay.stop(relay)
        ref = Process.monitor(relay)

        %{
          state
          | relays: relays,
            retiring: Map.put(state.retiring, pid, relay),
            relay_monitors: Map.put(state.relay_monitors, ref, pid)
        }
    end
  end

  @doc "A `:DOWN` that is not a subscriber's: a retiring relay (`ref`) that ended, or nothing known."
  @spec relay_ended(state(), reference(), pid()) :: state()
  def relay_ended(state, ref, relay) do
    case Map.pop(state.relay_monitors, ref) do
      {nil, _} ->
        state

      {pid, monitors} ->
        retiring =
          case state.retiring do
            %{^pid => ^relay} -> Map.delete(state.retiring, pid)
            retiring -> retiring
          end

        %{state | relay_monitors: monitors, retiring: retiring}
    end
  end

  @doc "Removes `pid` from `names`; returns `{state, emptied}`, the names nobody subscribes to any more."
  @spec remove(state(), kind(), [String.t()], pid()) :: {state(), [String.t()]}
  def remove(state, kind, names, pid) do
    Enum.reduce(names, {state, []}, fn name, {state, emptied} ->
      key = {kind, name}
      pids = Map.get(state.subscriptions, key, MapSet.new())
      rest = MapSet.delete(pids, pid)

      cond do
        not MapSet.member?(pids, pid) ->
          {state, emptied}

        MapSet.size(rest) == 0 ->
          {%{state | subscriptions: Map.delete(state.subscriptions, key)}, [name | emptied]}

        true ->
          {%{state | subscriptions: Map.put(state.subscriptions, key, rest)}, emptied}
      end
    end)
  end

  @doc "The subscriptions of `pid`, as `%{kind => [name]}`."
  @spec of(state(), pid()) :: %{kind() => [String.t()]}
  def of(state, pid) do
    for {{kind, name}, pids} <- state.subscriptions, MapSet.member?(pids, pid), reduce: %{} do
      acc -> Map.update(acc, kind, [name], &[name | &1])
    end
  end

  @doc "Forgets `pid` (demonitored) when it subscribes to nothing any more."
  @spec forget_if_idle(state(), pid()) :: state()
  def forget_if_idle(state, pid) do
    if Enum.any?(state.subscriptions, fn {_, pids} -> MapSet.member?(pids, pid) end) do
      state
    else
      case Map.get(state.subscribers, pid) do
        nil -> :ok
        ref -> Process.demonitor(ref, [:flush])
      end

      forget(state, pid)
    end
  end

  @doc "Forgets `pid` (its monitor is gone or fired) and lets its relay go."
  @spec forget(state(), pid()) :: state()
  def forget(state, pid) do
    state = %{
      state
      | subscribers: Map.delete(state.subscribers, pid),
        refs: Map.delete(state.refs, target(state, pid))
    }

    release(state, pid)
  end

  @doc "Sends every message `handle` still owes subscribers (an ended connection queues no more)."
  @spec drain_all(RedixRs.Native.handle(), map()) :: :ok
  def drain_all(handle, refs) do
    case RedixRs.Native.pubsub_drain(handle, refs) do
      {:more, _sent} -> drain_all(handle, refs)
      {:done, _sent} -> :ok
    end
  end

  @doc """
  The message telling a subscriber (with `ref`) that it unsubscribed from `name` of `kind`, from the
  calling process (the `RedixRs.PubSub` process): for when no native connection can send it.
  """
  @spec unsubscribed(reference(), kind(), String.t()) :: tuple()
  def unsubscribed(ref, kind, name),
    do: {:redix_pubsub, self(), ref, type(kind), props(kind, name)}

  defp type(:channel), do: :unsubscribed
  defp type(:pattern), do: :punsubscribed
  defp type(:shard), do: :sunsubscribed

  defp props(:pattern, name), do: %{pattern: name}
  defp props(_kind, name), do: %{channel: name}
end
