defmodule RedixRs.PubSubInvalidationTest do
  # Client-tracking invalidations reach `__redis__:invalidate` subscribers as Redix delivers them (a
  # `:message` whose payload is the list of keys, or nil), under RESP2 (a message with a list payload)
  # and RESP3 (an `invalidate` push); and they are never taken for the reply of a `ping` caller.
  # Each test has its own redis-server: FLUSHALL and tracking must not touch other tests' keys.
  use ExUnit.Case, async: true

  @moduletag :capture_log

  alias RedixRs.PubSub
  alias RedixRs.Test.RedisServer

  @channel "__redis__:invalidate"

  setup do
    server = RedisServer.start()
    on_exit(fn -> RedisServer.stop(server) end)
    {:ok, conn} = RedixRs.start_link(port: server.port, sync_connect: true)
    %{server: server, conn: conn}
  end

  for protocol <- [:resp2, :resp3] do
    test "#{protocol}: invalidations are :message on #{@channel}, keys or nil", ctx do
      %{ps: ps, ref: ref, tracker: tracker} = tracked(ctx, unquote(protocol))

      assert {:ok, "OK"} = RedixRs.command(tracker, ["SET", "inv:a", "1"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, props}, 5_000
      assert props == %{channel: @channel, payload: ["inv:a"]}

      assert {:ok, "OK"} = RedixRs.command(tracker, ["MSET", "inv:b", "1", "inv:c", "2"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{payload: keys}}, 5_000
      # One message per key or one with both, as Redis groups them.
      keys =
        if length(keys) == 1 do
          assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{payload: more}}, 5_000
          keys ++ more
        else
          keys
        end

      assert Enum.sort(keys) == ["inv:b", "inv:c"]

      assert {:ok, "OK"} = RedixRs.command(tracker, ["FLUSHALL"])
      assert_receive {:redix_pubsub, ^ps, ^ref, :message, props}, 5_000
      assert props == %{channel: @channel, payload: nil}
    end

    test "#{protocol}: ping callers keep their replies while invalidations arrive", ctx do
      %{ps: ps, ref: ref, tracker: tracker} = tracked(ctx, unquote(protocol))

      writer =
        Task.async(fn ->
          for i <- 1..300, do: {:ok, "OK"} = RedixRs.command(tracker, ["SET", "p:#{i}", "v"])
        end)

      pings = for _ <- 1..300, do: PubSub.ping(ps)
      Task.await(writer, 10_000)
      assert Enum.all?(pings, &(&1 == :ok)), inspect(Enum.reject(pings, &(&1 == :ok)))

      for i <- 1..300 do
        key = "p:#{i}"
        assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{payload: [^key]}}, 5_000
      end

      assert Process.alive?(ps)
    end
  end

  # A PubSub subscribed to the invalidation channel, and a connection whose tracking (BCAST) is
  # redirected to it.
  defp tracked(%{server: server, conn: conn}, protocol) do
    name = "inv-#{System.unique_integer([:positive])}"

    {:ok, ps} =
      PubSub.start_link(
        port: server.port,
        sync_connect: true,
        protocol: protocol,
        client_name: name
      )

    {:ok, ref} = PubSub.subscribe(ps, @channel, self())
    assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: @channel}}, 5_000

    id = client_id(conn, name)
    {:ok, tracker} = RedixRs.start_link(port: server.port, sync_connect: true)

    assert {:ok, "OK"} =
             RedixRs.command(tracker, ["CLIENT", "TRACKING", "on", "REDIRECT", id, "BCAST"])

    %{ps: ps, ref: ref, tracker: tracker}
  end

  defp client_id(conn, name) do
    {:ok, list} = RedixRs.command(conn, ["CLIENT", "LIST"])

    [id] =
      for line <- String.split(list, "\n", trim: true),
          String.contains?(line, " name=#{name} "),
          do: line |> String.split(" ") |> hd() |> String.trim_leading("id=")

    id
  end
end
