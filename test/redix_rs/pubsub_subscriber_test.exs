defmodule RedixRs.PubSubSubscriberTest do
  # RedixRs.PubSub.Subscriber: a supervised subscriber module, against a real redis-server.
  use ExUnit.Case, async: true

  # The subscriber crashes on purpose; its crash report is logged.
  @moduletag :capture_log

  alias RedixRs.PubSub
  alias RedixRs.Test.{Helpers, Servers}

  doctest RedixRs.PubSub.Subscriber

  defmodule Listener do
    use RedixRs.PubSub.Subscriber

    def start_link(%{test: _, pubsub: pubsub, channels: channels, patterns: patterns} = config) do
      RedixRs.PubSub.Subscriber.start_link(__MODULE__, config,
        pubsub: pubsub,
        channels: channels,
        patterns: patterns,
        shard_channels: Map.get(config, :shard_channels, [])
      )
    end

    @impl RedixRs.PubSub.Subscriber
    def init(config) do
      send(config.test, {:listener_started, self()})
      {:ok, Map.put(config, :count, 0)}
    end

    @impl RedixRs.PubSub.Subscriber
    def handle_message(_channel, "crash", _state), do: raise("crashing on purpose")

    def handle_message(channel, payload, state) do
      send(state.test, {:handle_message, self(), channel, payload})
      {:noreply, %{state | count: state.count + 1}}
    end

    @impl RedixRs.PubSub.Subscriber
    def handle_pmessage(pattern, channel, payload, state) do
      send(state.test, {:handle_pmessage, self(), pattern, channel, payload})
      {:noreply, %{state | count: state.count + 1}}
    end

    def handle_call(:count, _from, state), do: {:reply, state.count, state}
    def handle_call({:echo, term}, _from, state), do: {:reply, {:echoed, term}, state}

    def handle_info(message, state) do
      send(state.test, {:handle_info, self(), message})
      {:noreply, state}
    end
  end

  # Only handle_message/3: no init/1, handle_pmessage/4, handle_info/2 nor handle_call/3.
  defmodule Minimal do
    use RedixRs.PubSub.Subscriber

    @impl RedixRs.PubSub.Subscriber
    def handle_message(channel, payload, test) do
      send(test, {:minimal, channel, payload})
      {:noreply, test}
    end
  end

  setup do
    {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    base = "subscriber:#{System.unique_integer([:positive])}"
    pubsub = :"subscriber_test_pubsub_#{System.unique_integer([:positive])}"
    %{conn: conn, base: base, pubsub: pubsub}
  end

  defp start_tree!(%{pubsub: pubsub} = context, config) do
    config = Map.merge(%{test: self(), pubsub: pubsub}, config)

    children = [
      {PubSub, port: Servers.port(), name: pubsub, sync_connect: true},
      {Listener, config}
    ]

    sup =
      start_supervised!(%{
        id: :tree,
        type: :supervisor,
        start: {Supervisor, :start_link, [children, [strategy: :one_for_one]]}
      })

    assert_receive {:listener_started, listener}, 5_000
    Map.merge(context, %{sup: sup, listener: listener, ps: Process.whereis(pubsub)})
  end

  defp listener(sup) do
    {Listener, pid, _, _} = List.keyfind(Supervisor.which_children(sup), Listener, 0)
    pid
  end

  defp numsub(conn, ch) do
    {:ok, [^ch, n]} = RedixRs.command(conn, ["PUBSUB", "NUMSUB", ch])
    n
  end

  test "gets messages on its channels and patterns through the callbacks", context do
    %{base: base, conn: conn} = context
    [ch1, ch2, sch] = [base <> ":one", base <> ":two", base <> ":shard"]
    pattern = base <> ":p*"

    %{listener: listener, ps: ps} =
      start_tree!(context, %{
        channels: [ch1, ch2],
        patterns: [pattern],
        shard_channels: [sch]
      })

    # handle_info/2 gets the confirmations.
    for {type, props} <- [
          {:subscribed, %{channel: ch1}},
          {:subscribed, %{channel: ch2}},
          {:psubscribed, %{pattern: pattern}},
          {:ssubscribed, %{channel: sch}}
        ] do
      assert_receive {:handle_info, ^listener, {:redix_pubsub, ^ps, ref, ^type, ^props}}, 5_000
      assert is_reference(ref)
    end

    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch1, "hello one"])
    assert_receive {:handle_message, ^listener, ^ch1, "hello one"}, 5_000

    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch2, "hello two"])
    assert_receive {:handle_message, ^listener, ^ch2, "hello two"}, 5_000

    pch = base <> ":pa"
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", pch, "by pattern"])
    assert_receive {:handle_pmessage, ^listener, ^pattern, ^pch, "by pattern"}, 5_000

    assert {:ok, 1} = RedixRs.command(conn, ["SPUBLISH", sch, "sharded"])
    assert_receive {:handle_message, ^listener, ^sch, "sharded"}, 5_000

    # Messages do not reach handle_info/2.
    for type <- [:message, :pmessage, :smessage] do
      refute_received {:handle_info, ^listener, {:redix_pubsub, _, _, ^type, _}}
    end

    # handle_call/3 and handle_info/2 work as in any GenServer.
    assert GenServer.call(listener, :count) == 4
    assert GenServer.call(listener, {:echo, :hi}) == {:echoed, :hi}
    send(listener, :custom)
    assert_receive {:handle_info, ^listener, :custom}, 1_000
  end

  test "restarted by its supervisor after a crash, it subscribes again", context do
    %{base: base, conn: conn} = context
    ch = base <> ":chan"
    pattern = base <> ":p*"

    %{listener: listener, ps: ps, sup: sup} =
      start_tree!(context, %{channels: [ch], patterns: [pattern]})

    assert_receive {:handle_info, ^listener, {:redix_pubsub, ^ps, _, :subscribed, _}}, 5_000
    assert_receive {:handle_info, ^listener, {:redix_pubsub, ^ps, _, :psubscribed, _}}, 5_000
    assert numsub(conn, ch) == 1

    monitor = Process.monitor(listener)
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, "crash"])
    assert_receive {:DOWN, ^monitor, :process, ^listener, {%RuntimeError{}, _}}, 5_000

    assert_receive {:listener_started, new_listener}, 5_000
    assert new_listener != listener
    assert listener(sup) == new_listener

    assert_receive {:handle_info, ^new_listener,
                    {:redix_pubsub, ^ps, _, :subscribed, %{channel: ^ch}}},
                   5_000

    assert_receive {:handle_info, ^new_listener,
                    {:redix_pubsub, ^ps, _, :psubscribed, %{pattern: ^pattern}}},
                   5_000

    # The pub/sub connection was not restarted, and Redis sees one subscription.
    assert Process.whereis(context.pubsub) == ps
    assert numsub(conn, ch) == 1

    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, "again"])
    assert_receive {:handle_message, ^new_listener, ^ch, "again"}, 5_000
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", base <> ":px", "p-again"])
    assert_receive {:handle_pmessage, ^new_listener, ^pattern, _, "p-again"}, 5_000
    refute_received {:handle_message, _, _, "again"}
    assert GenServer.call(new_listener, :count) == 2

    # The crashed subscriber left nothing behind: once the new one is gone, Redis unsubscribes.
    :ok = Supervisor.terminate_child(sup, Listener)

    assert Helpers.eventually(fn ->
             numsub(conn, ch) == 0 and
               RedixRs.command!(conn, ["PUBLISH", base <> ":px", "x"]) == 0
           end)
  end

  test "a module with only handle_message/3", %{conn: conn, base: base} do
    {:ok, ps} = PubSub.start_link(port: Servers.port(), sync_connect: true)
    ch = base <> ":minimal"

    {:ok, pid} = RedixRs.PubSub.Subscriber.start_link(Minimal, self(), pubsub: ps, channels: [ch])

    assert Helpers.eventually(fn -> numsub(conn, ch) == 1 end)
    # Other messages are ignored without handle_info/2.
    send(pid, :ignored)
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", ch, "min"])
    assert_receive {:minimal, ^ch, "min"}, 5_000
    assert Process.alive?(pid)

    assert %{id: Minimal, start: {Minimal, :start_link, [:arg]}} = Minimal.child_spec(:arg)
  end

  test "start_link/3 needs the :pubsub option" do
    assert_raise ArgumentError, ~r/:pubsub/, fn ->
      RedixRs.PubSub.Subscriber.start_link(Minimal, self(), channels: ["x"])
    end
  end
end
