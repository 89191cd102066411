defmodule RedixRs.PubSubLanesTest do
  # The senders of a pub/sub connection: with several schedulers, subscribers' messages are queued
  # in one lane per scheduler (a subscriber's all in one, by its pid) and each lane has one sender
  # process (lane 0: the RedixRs.PubSub process; the others: RedixRs.PubSub.Sender processes). Each
  # subscriber keeps its order and Redix's guarantees whatever its lane.
  use ExUnit.Case, async: true

  alias RedixRs.{Native, PubSub}
  alias RedixRs.Test.{RedisServer, Servers}

  @moduletag :capture_log

  setup do
    {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    {:ok, ps} = PubSub.start_link(port: Servers.port(), sync_connect: true)
    %{conn: conn, ps: ps}
  end

  test "one sender per scheduler beyond the first; they stop with the PubSub process", %{ps: ps} do
    senders = senders(ps)
    assert length(senders) == System.schedulers_online() - 1
    monitors = Enum.map(senders, &Process.monitor/1)
    :ok = PubSub.stop(ps)
    for ref <- monitors, do: assert_receive({:DOWN, ^ref, :process, _, _}, 5_000)
  end

  @tag timeout: 120_000
  test "subscribers in every lane get all messages in order, and :unsubscribed on return", %{
    conn: conn,
    ps: ps
  } do
    ch = "lanes:#{System.unique_integer([:positive])}"
    parent = self()
    count = 1_000

    # 40 subscribers: with 2 or more lanes, some in each (pids hash across them).
    subscribers = for _ <- 1..40, do: spawn_link(fn -> subscriber(ps, ch, parent, count) end)
    for pid <- subscribers, do: assert_receive({:ready, ^pid}, 30_000)

    1..count
    |> Enum.chunk_every(100)
    |> Enum.each(fn batch ->
      RedixRs.pipeline!(conn, Enum.map(batch, &["PUBLISH", ch, Integer.to_string(&1)]))
    end)

    for pid <- subscribers do
      assert_receive {:done, ^pid, result}, 60_000
      assert result == :ok
    end
  end

  test "the lane count is set before any subscription, not after", %{ps: ps} do
    %{handle: handle} = :sys.get_state(ps)
    # Already set when the connection came up (to the same count: nothing is subscribed yet).
    assert Native.pubsub_lanes(handle, max(System.schedulers_online(), 1)) == true
    {:ok, _ref} = PubSub.subscribe(ps, "lanes:set", self())
    assert_receive {:redix_pubsub, ^ps, _, :subscribed, _}, 5_000
    assert Native.pubsub_lanes(handle, 3) == false
    assert_raise ArgumentError, fn -> Native.pubsub_lanes(handle, 0) end
    assert_raise ArgumentError, fn -> Native.pubsub_drain_lane(handle, %{}, 64) end
  end

  test "a disconnection: every lane's subscribers get :disconnected, then :subscribed again" do
    server = RedisServer.start()
    {:ok, ps} = PubSub.start_link(port: server.port, sync_connect: true, backoff_initial: 100)
    ch = "lanes:restart"
    parent = self()

    pids =
      for _ <- 1..20 do
        spawn_link(fn ->
          {:ok, ref} = PubSub.subscribe(ps, ch)
          assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, _}, 5_000
          send(parent, {:ready, self()})
          assert_receive {:redix_pubsub, ^ps, ^ref, :disconnected, %{error: _}}, 10_000
          assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}}, 20_000
          send(parent, {:resubscribed, self()})
        end)
      end

    for pid <- pids, do: assert_receive({:ready, ^pid}, 10_000)
    RedisServer.stop(server)
    server = RedisServer.restart(server)
    for pid <- pids, do: assert_receive({:resubscribed, ^pid}, 30_000)
    RedisServer.stop(server)
  end

  defp senders(ps) do
    {:links, links} = Process.info(ps, :links)

    Enum.filter(links, fn pid ->
      is_pid(pid) and
        match?(
          {:current_function, {RedixRs.PubSub.Sender, _, _}},
          Process.info(pid, :current_function)
        )
    end)
  end

  defp subscriber(ps, ch, parent, count) do
    {:ok, ref} = PubSub.subscribe(ps, ch)

    receive do
      {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: ^ch}} -> :ok
    end

    send(parent, {:ready, self()})
    payloads = for _ <- 1..count, do: receive_message(ps, ref)
    expected = Enum.map(1..count, &Integer.to_string/1)
    :ok = PubSub.unsubscribe(ps, ch)

    result =
      cond do
        payloads != expected ->
          {:out_of_order, Enum.take(payloads, 5)}

        # As in Redix, the :unsubscribed message is in the mailbox when unsubscribe/3 returns,
        # whichever process sends this subscriber its messages.
        not match?(
          {:messages, [{:redix_pubsub, ^ps, ^ref, :unsubscribed, %{channel: ^ch}} | _]},
          Process.info(self(), :messages)
        ) ->
          {:no_unsubscribed, Process.info(self(), :messages)}

        true ->
          :ok
      end

    send(parent, {:done, self(), result})
  end

  defp receive_message(ps, ref) do
    receive do
      {:redix_pubsub, ^ps, ^ref, :message, %{payload: payload}} -> payload
    after
      30_000 -> :timeout
    end
  end
end
