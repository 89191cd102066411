defmodule RedixRs.Bench.Fanout do
  @moduledoc false
  # Pub/sub fan-out: 1 publisher, `subs` subscriber processes on ONE pub/sub connection, `n` messages.
  # redix_rs delivers from Rust straight to each subscriber; eredis_sub delivers to one controlling
  # process, which acks each message and relays it to the subscribers (what a pub/sub process does).
  # Redix.PubSub (when REDIX_PATH is set) sends each subscriber its messages from its connection process.
  # The publisher is the same (a redix_rs connection, pipelined) for all, so only delivery differs.

  @compile {:no_warn_undefined, [:eredis_sub, Redix.PubSub]}

  @channel "bench:fanout"

  def run(client, port, subs \\ 100, n \\ 10_000) do
    {:ok, publisher} = RedixRs.start_link(port: port, sync_connect: true)
    parent = self()
    subscribers = for _ <- 1..subs, do: spawn_link(fn -> count(parent, n) end)
    stop = subscribe(client, port, subscribers)
    wait_subscribed(publisher, subs)

    t0 = System.monotonic_time(:microsecond)

    for batch <- Enum.chunk_every(1..n, 100) do
      RedixRs.pipeline!(publisher, Enum.map(batch, &["PUBLISH", @channel, "m#{&1}"]))
    end

    for _ <- subscribers,
        do: receive(do: (:done -> :ok), after: (60_000 -> raise "fan-out timed out"))

    micros = System.monotonic_time(:microsecond) - t0
    stop.()
    RedixRs.stop(publisher)
    %{deliveries: subs * n, micros: micros}
  end

  defp subscribe(:redix_rs, port, subscribers) do
    {:ok, pubsub} = RedixRs.PubSub.start_link(port: port, sync_connect: true)
    Enum.each(subscribers, &RedixRs.PubSub.subscribe(pubsub, @channel, &1))
    fn -> RedixRs.PubSub.stop(pubsub) end
  end

  defp subscribe(:redix, port, subscribers) do
    {:ok, pubsub} = Redix.PubSub.start_link(host: "127.0.0.1", port: port, sync_connect: true)
    Enum.each(subscribers, &Redix.PubSub.subscribe(pubsub, @channel, &1))
    fn -> Redix.PubSub.stop(pubsub) end
  end

  defp subscribe(:eredis, port, subscribers) do
    {:ok, sub} = :eredis_sub.start_link(~c"127.0.0.1", port, ~c"")
    parent = self()

    relay =
      spawn_link(fn ->
        :eredis_sub.controlling_process(sub)
        :eredis_sub.subscribe(sub, [@channel])
        send(parent, :relay_ready)
        relay(sub, subscribers)
      end)

    receive do: (:relay_ready -> :ok)

    fn ->
      Enum.each([relay, sub], &Process.unlink/1)

      # eredis_sub stops by itself (reason :shutdown) once its controlling process is gone: stop it
      # first, and take a stop that lost that race as done (an uncaught {:shutdown, _} exit would end
      # `mix run` silently, with status 0, and the table unwritten).
      try do
        :eredis_sub.stop(sub)
      catch
        :exit, _ -> :ok
      end

      Process.exit(relay, :kill)
    end
  end

  defp relay(sub, subscribers) do
    receive do
      {:message, channel, payload, _pid} ->
        :eredis_sub.ack_message(sub)

        Enum.each(
          subscribers,
          &send(&1, {:redix_pubsub, self(), nil, :message, %{channel: channel, payload: payload}})
        )

      {:subscribed, _channel, _pid} ->
        :eredis_sub.ack_message(sub)

      _other ->
        :eredis_sub.ack_message(sub)
    end

    relay(sub, subscribers)
  end

  defp wait_subscribed(publisher, subs) do
    {:ok, ["bench:fanout", count]} =
      RedixRs.command(publisher, ["PUBSUB", "NUMSUB", @channel])
      |> then(fn {:ok, l} -> {:ok, l} end)

    if count < 1 do
      Process.sleep(10)
      wait_subscribed(publisher, subs)
    else
      # Redis counts connections, not processes: give the last local subscriptions a moment.
      Process.sleep(100)
    end
  end

  defp count(parent, 0), do: send(parent, :done)

  defp count(parent, left) do
    receive do
      {:redix_pubsub, _, _, :message, _} -> count(parent, left - 1)
      {:redix_pubsub, _, _, _other, _} -> count(parent, left)
    end
  end
end
