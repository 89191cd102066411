defmodule RedixRs.PubSubSubscriberRestartTest do
  # A RedixRs.PubSub.Subscriber follows a restart of its RedixRs.PubSub process (found again by
  # name, subscribed again), under a plain :one_for_one supervisor, against a real redis-server;
  # given a pid, it stops instead.
  use ExUnit.Case, async: true

  # Killed processes and stopped subscribers log it.
  @moduletag :capture_log

  alias RedixRs.PubSub
  alias RedixRs.PubSub.Subscriber
  alias RedixRs.Test.{Helpers, Servers}

  defmodule Listener do
    use RedixRs.PubSub.Subscriber

    def start_link(%{pubsub: pubsub} = config) do
      Subscriber.start_link(__MODULE__, config,
        pubsub: pubsub,
        channels: [config.channel],
        patterns: [config.pattern],
        shard_channels: [config.shard]
      )
    end

    @impl Subscriber
    def init(config) do
      send(config.test, {:listener_started, self()})
      {:ok, config}
    end

    @impl Subscriber
    def handle_message(channel, payload, state) do
      send(state.test, {:handle_message, self(), channel, payload})
      {:noreply, state}
    end

    @impl Subscriber
    def handle_pmessage(pattern, channel, payload, state) do
      send(state.test, {:handle_pmessage, self(), pattern, channel, payload})
      {:noreply, state}
    end

    def handle_call(:ping, _from, state), do: {:reply, :pong, state}

    def handle_info(message, state) do
      send(state.test, {:handle_info, self(), message})
      {:noreply, state}
    end
  end

  setup do
    {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    base = "restart:#{System.unique_integer([:positive])}"

    config = %{
      test: self(),
      channel: base <> ":chan",
      pattern: base <> ":p*",
      shard: base <> ":shard"
    }

    %{conn: conn, base: base, config: config}
  end

  for {kind, name} <- [
        atom: quote(do: :"restart_pubsub_#{System.unique_integer([:positive])}"),
        global: quote(do: {:global, {:restart_pubsub, System.unique_integer([:positive])}})
      ] do
    test "named (#{kind}): the pub/sub process is killed and restarted; messages reach the callbacks again",
         context do
      name = unquote(name)
      %{conn: conn, base: base, config: config} = context
      {sup, listener} = start_tree!(name, config)
      first = GenServer.whereis(name)
      assert_subscribed(listener, first, config)
      assert_delivered(conn, listener, base, config, "before")

      Process.exit(first, :kill)

      # The supervisor starts a new pub/sub process; the same subscriber subscribes to it.
      assert Helpers.eventually(fn -> GenServer.whereis(name) not in [nil, first] end)
      second = GenServer.whereis(name)
      assert_subscribed(listener, second, config)
      assert_delivered(conn, listener, base, config, "after")

      # Only the pub/sub process was restarted.
      assert listener_of(sup) == listener
      refute_received {:listener_started, _}
      assert numsub(conn, config.channel) == 1
    end
  end

  test "while the name is not registered it keeps serving its mailbox, then subscribes again",
       context do
    %{conn: conn, base: base, config: config} = context
    name = :"restart_pubsub_#{System.unique_integer([:positive])}"
    {sup, listener} = start_tree!(name, config)
    first = Process.whereis(name)
    assert_subscribed(listener, first, config)

    :ok = Supervisor.terminate_child(sup, :pubsub)
    assert Process.whereis(name) == nil
    assert Helpers.eventually(fn -> numsub(conn, config.channel) == 0 end)

    # It waits on timers: its calls and messages are served meanwhile, for longer than the
    # longest wait between two looks (1 s).
    for _ <- 1..6 do
      assert GenServer.call(listener, :ping) == :pong
      send(listener, :custom)
      assert_receive {:handle_info, ^listener, :custom}, 1_000
      Process.sleep(250)
    end

    {:ok, second} = Supervisor.restart_child(sup, :pubsub)
    assert_subscribed(listener, second, config)
    assert_delivered(conn, listener, base, config, "back")
    assert listener_of(sup) == listener
  end

  test "given a pid, it stops with {:pubsub_down, reason} when that process goes down", context do
    %{config: config} = context
    Process.flag(:trap_exit, true)
    {:ok, pubsub} = PubSub.start_link(port: Servers.port(), sync_connect: true)
    {:ok, listener} = Listener.start_link(Map.put(config, :pubsub, pubsub))
    assert_subscribed(listener, pubsub, config)

    Process.exit(pubsub, :kill)
    assert_receive {:EXIT, ^pubsub, :killed}, 5_000
    assert_receive {:EXIT, ^listener, {:pubsub_down, :killed}}, 5_000
  end

  test "at start, a pub/sub name that is not registered; a :pubsub that is no server", context do
    %{config: config} = context
    Process.flag(:trap_exit, true)
    name = :"restart_missing_#{System.unique_integer([:positive])}"

    assert {:error, {:pubsub_down, :noproc}} = Listener.start_link(Map.put(config, :pubsub, name))

    for bad <- ["pubsub", nil, 42, {:global}, {"name", :node}] do
      assert_raise ArgumentError, ~r/:pubsub option must be a pid or a name/, fn ->
        Subscriber.start_link(Listener, config, pubsub: bad, channels: ["x"])
      end
    end
  end

  defp start_tree!(name, config) do
    children = [
      Supervisor.child_spec({PubSub, port: Servers.port(), name: name, sync_connect: true},
        id: :pubsub
      ),
      {Listener, Map.put(config, :pubsub, name)}
    ]

    sup =
      start_supervised!(%{
        id: :tree,
        type: :supervisor,
        start: {Supervisor, :start_link, [children, [strategy: :one_for_one]]}
      })

    assert_receive {:listener_started, listener}, 5_000
    {sup, listener}
  end

  # Its three subscriptions are confirmed by `pubsub`.
  defp assert_subscribed(listener, pubsub, config) do
    %{channel: channel, pattern: pattern, shard: shard} = config

    assert_receive {:handle_info, ^listener,
                    {:redix_pubsub, ^pubsub, _, :subscribed, %{channel: ^channel}}},
                   5_000

    assert_receive {:handle_info, ^listener,
                    {:redix_pubsub, ^pubsub, _, :psubscribed, %{pattern: ^pattern}}},
                   5_000

    assert_receive {:handle_info, ^listener,
                    {:redix_pubsub, ^pubsub, _, :ssubscribed, %{channel: ^shard}}},
                   5_000
  end

  # A message on each of its subscriptions reaches its callbacks.
  defp assert_delivered(conn, listener, base, config, payload) do
    %{channel: channel, pattern: pattern, shard: shard} = config
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", channel, payload])
    assert_receive {:handle_message, ^listener, ^channel, ^payload}, 5_000

    by_pattern = base <> ":pone"
    assert {:ok, 1} = RedixRs.command(conn, ["PUBLISH", by_pattern, payload])
    assert_receive {:handle_pmessage, ^listener, ^pattern, ^by_pattern, ^payload}, 5_000

    assert {:ok, 1} = RedixRs.command(conn, ["SPUBLISH", shard, payload])
    assert_receive {:handle_message, ^listener, ^shard, ^payload}, 5_000
  end

  defp listener_of(sup) do
    {Listener, pid, _, _} = List.keyfind(Supervisor.which_children(sup), Listener, 0)
    pid
  end

  defp numsub(conn, channel) do
    {:ok, [^channel, count]} = RedixRs.command(conn, ["PUBSUB", "NUMSUB", channel])
    count
  end
end
