defmodule RedixRs.PubSub.Sender do
  # One lane's sender. The native side queues a pub/sub connection's messages for subscribers in
  # lanes, a subscriber's all in one lane (by its pid), and each lane has one process that sends its
  # messages (`Native.pubsub_drain_lane/3`): lane 0 is the `RedixRs.PubSub` process itself, the
  # others are these, so that with several schedulers the sending spreads over them while each
  # subscriber keeps one sender, and its messages their order.
  #
  # The `RedixRs.PubSub` process forwards it the wake-ups of its lane (`{:drain, handle, lane}`) and
  # asks it to flush the lane up to a point before answering a call that queued messages there
  # (`{:flush, handle, lane, count, from, ref}`, answered `{ref, :flushed}`), or wholly when its
  # connection ended (count `:all`). Linked to that process (either dying takes the other along),
  # and stopping when it stops normally too.
  @moduledoc false

  alias RedixRs.Native

  @doc "Starts a sender linked to the caller."
  @spec start_link() :: pid()
  def start_link do
    owner = self()
    spawn_link(fn -> init(owner) end)
  end

  @doc "Sends at least `count` messages of `lane` (or all of them, with `:all`) before returning."
  @spec flush(pid(), Native.handle(), pos_integer(), non_neg_integer() | :all) :: :ok
  def flush(sender, handle, lane, count) do
    ref = make_ref()
    send(sender, {:flush, handle, lane, count, self(), ref})

    receive do
      {^ref, :flushed} -> :ok
    end
  end

  defp init(owner) do
    ref = Process.monitor(owner)
    loop(ref)
  end

  defp loop(owner_ref) do
    receive do
      {:drain, handle, lane} ->
        # The subscribers' references are decoded natively (once per subscriber per batch): the
        # `RedixRs.PubSub` process's map of them is not copied here.
        case Native.pubsub_drain_lane(handle, %{}, lane) do
          {:more, _sent} -> send(self(), {:drain, handle, lane})
          {:done, _sent} -> :ok
        end

        loop(owner_ref)

      {:flush, handle, lane, count, from, ref} ->
        drain(handle, lane, count)
        send(from, {ref, :flushed})
        loop(owner_ref)

      {:DOWN, ^owner_ref, :process, _, _} ->
        :ok
    end
  end

  defp drain(handle, lane, count) do
    case Native.pubsub_drain_lane(handle, %{}, lane) do
      {:more, sent} when count == :all or sent < count ->
        drain(handle, lane, if(count == :all, do: :all, else: count - sent))

      {:more, _sent} ->
        send(self(), {:drain, handle, lane})

      {:done, _sent} ->
        :ok
    end
  end
end
