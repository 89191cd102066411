defmodule RedixRs.PubSub.Relay do
  # The local process that sends a subscriber on another node its messages. The native side sends
  # with `enif_send`, which reaches local pids only: it is given the relay's pid instead, and the
  # relay forwards every message it receives, in the order received, to the remote subscriber. The
  # `RedixRs.PubSub` process sends that subscriber everything through it too, so the subscriber
  # keeps one sender and its messages keep their order.
  #
  # Linked to the `RedixRs.PubSub` process, it dies with it; it traps exits so that the process
  # stopping normally ends it too (after forwarding what it received before). It stops on `stop/1`
  # once it has forwarded what it received before. A relay that replaces one still stopping (the
  # remote pid unsubscribed from everything, then subscribed again) forwards nothing before that
  # one has ended, so that the old relay's last messages are not overtaken by the new relay's first.
  @moduledoc false

  @stop {__MODULE__, :stop}

  @doc "Starts a relay to `target`, linked to the caller, forwarding once `previous` has ended."
  @spec start_link(pid(), pid() | nil) :: pid()
  def start_link(target, previous) when is_pid(target) do
    owner = self()

    # Off-heap message queue: a relay to a slow remote node may hold many messages at once.
    :erlang.spawn_opt(fn -> init(owner, target, previous) end, [
      :link,
      {:message_queue_data, :off_heap}
    ])
  end

  @doc "Stops `relay` once it has forwarded every message it received before this one."
  @spec stop(pid()) :: :ok
  def stop(relay) do
    send(relay, @stop)
    :ok
  end

  defp init(owner, target, previous) do
    Process.flag(:trap_exit, true)
    await_end(previous)
    loop(owner, target)
  end

  defp await_end(nil), do: :ok

  defp await_end(previous) do
    ref = Process.monitor(previous)

    receive do
      {:DOWN, ^ref, :process, _, _} -> :ok
    end
  end

  defp loop(owner, target) do
    receive do
      @stop ->
        :ok

      {:EXIT, ^owner, reason} ->
        exit(reason)

      message ->
        send(target, message)
        loop(owner, target)
    end
  end
end
