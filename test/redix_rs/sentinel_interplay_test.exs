defmodule RedixRs.SentinelInterplayTest do
  # How a connection made through Sentinel follows a failover together with what it carries beside
  # its shared connection: its client-side cache and its side connections. Two independent real
  # servers stand for the old and the new primary; a fake sentinel (RedixRs.Test.FakeSentinel)
  # names one, then announces the other. Not async: telemetry handlers are global.
  use ExUnit.Case, async: false

  # Connections are dropped on purpose.
  @moduletag :capture_log

  alias RedixRs.ConnectionError
  alias RedixRs.Test.{FakeSentinel, RedisServer}

  import RedixRs.Test.Helpers, only: [attach_telemetry: 1, eventually: 1]

  @group "mymaster"

  setup do
    old = RedisServer.start()
    new = RedisServer.start()

    on_exit(fn ->
      RedisServer.stop(old)
      RedisServer.stop(new)
    end)

    fake = FakeSentinel.start(old.port, [])
    old_admin = start_supervised!({RedixRs, port: old.port, sync_connect: true}, id: :old_admin)
    new_admin = start_supervised!({RedixRs, port: new.port, sync_connect: true}, id: :new_admin)
    %{old: old, new: new, fake: fake, old_admin: old_admin, new_admin: new_admin}
  end

  describe "a cached connection" do
    test "a failover empties its cache: the new primary's value is read", %{
      new: new,
      fake: fake,
      old_admin: old_admin,
      new_admin: new_admin
    } do
      conn = start_conn!(fake, protocol: :resp3, client_cache: [])
      attach_telemetry(conn)
      wait_for_subscribers(fake, 1)

      RedixRs.command!(old_admin, ["SET", "k", "old"])
      RedixRs.command!(new_admin, ["SET", "k", "new"])
      assert {:ok, "old"} = RedixRs.command(conn, ["GET", "k"], cache: true)
      assert {:ok, "old"} = RedixRs.command(conn, ["GET", "k"], cache: true)
      assert RedixRs.cache_stats(conn).hits == 1

      FakeSentinel.announce(fake, new.port, [])

      assert_receive {:telemetry, :disconnection, _,
                      %{reason: %ConnectionError{reason: :sentinel_failover}}},
                     5_000

      address = "127.0.0.1:#{new.port}"
      assert_receive {:telemetry, :connection, _, %{address: ^address}}, 5_000
      assert {:ok, "new"} = RedixRs.command(conn, ["GET", "k"], cache: true)
    end

    # The watcher checks ROLE on a fresh connection after a -READONLY reply. That connection is
    # a plain one: it must not turn tracking on for the cache of the connection it checks (its
    # handshake would flush that cache). A script's error reply stands for a -READONLY from a
    # server that is still the primary.
    test "the ROLE check after a -READONLY reply leaves the cache alone", %{
      fake: fake,
      old_admin: old_admin
    } do
      conn = start_conn!(fake, protocol: :resp3, client_cache: [])
      wait_for_subscribers(fake, 1)

      RedixRs.command!(old_admin, ["SET", "k", "v"])
      assert {:ok, "v"} = RedixRs.command(conn, ["GET", "k"], cache: true)
      assert %{entries: 1, invalidations: 0} = RedixRs.Cache.stats(conn)
      roles = role_calls(old_admin)

      script = "return redis.error_reply('READONLY not really')"

      assert {:error, %RedixRs.Error{message: "READONLY not really"}} =
               RedixRs.command(conn, ["EVAL", script, "0"])

      # The check's ROLE has reached the server: its handshake is over.
      assert eventually(fn -> role_calls(old_admin) > roles end)
      assert %{entries: 1, invalidations: 0} = RedixRs.Cache.stats(conn)
      assert {:ok, "v"} = RedixRs.command(conn, ["GET", "k"], cache: true)
      assert RedixRs.cache_stats(conn).hits == 1
      assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    end
  end

  describe "side connections" do
    test "an idle side connection does not stay on the former primary", %{
      new: new,
      fake: fake,
      old_admin: old_admin,
      new_admin: new_admin
    } do
      name = "interplay#{System.unique_integer([:positive])}"
      conn = start_conn!(fake, side_connection_idle_timeout: :infinity, client_name: name)
      attach_telemetry(conn)

      # A BLPOP answered on the old primary leaves an idle side connection there.
      blpop = Task.async(fn -> RedixRs.command(conn, ["BLPOP", "q", "0"], timeout: 10_000) end)
      assert eventually(fn -> blocked_clients(old_admin) == 1 end)
      RedixRs.command!(old_admin, ["RPUSH", "q", "old"])
      assert {:ok, ["q", "old"]} = Task.await(blpop)
      # Its own watcher, and the shared connection's.
      wait_for_subscribers(fake, 2)

      FakeSentinel.announce(fake, new.port, [])
      address = "127.0.0.1:#{new.port}"
      assert_receive {:telemetry, :connection, _, %{address: ^address}}, 5_000

      # The side connection's own watcher closes it (each follows the announcement on its own, so
      # a blocking call made in between may still land there, and get :disconnected).
      assert eventually(fn -> named_clients(old_admin, name) == 0 end)

      # The next BLPOP waits on the new primary.
      blpop = Task.async(fn -> RedixRs.command(conn, ["BLPOP", "q", "0"], timeout: 10_000) end)
      assert eventually(fn -> blocked_clients(new_admin) == 1 end)
      assert blocked_clients(old_admin) == 0
      RedixRs.command!(new_admin, ["RPUSH", "q", "new"])
      assert {:ok, ["q", "new"]} = Task.await(blpop)
    end

    test "a caller blocked on the former primary is answered :disconnected", %{
      new: new,
      fake: fake,
      old_admin: old_admin
    } do
      conn = start_conn!(fake)

      blpop = Task.async(fn -> RedixRs.command(conn, ["BLPOP", "q", "0"], timeout: 10_000) end)
      assert eventually(fn -> blocked_clients(old_admin) == 1 end)
      wait_for_subscribers(fake, 2)

      FakeSentinel.announce(fake, new.port, [])

      assert {:error, %ConnectionError{reason: :disconnected}} = Task.await(blpop)
      assert eventually(fn -> blocked_clients(old_admin) == 0 end)
    end
  end

  ## Helpers

  defp start_conn!(fake, opts \\ []) do
    sentinel = [sentinels: ["redis://127.0.0.1:#{fake.port}"], group: @group]

    start_supervised!(
      {RedixRs, [sentinel: sentinel, sync_connect: true, backoff_initial: 100] ++ opts},
      id: make_ref()
    )
  end

  defp wait_for_subscribers(fake, n) do
    assert eventually(fn -> FakeSentinel.subscribers(fake) == n end),
           "expected #{n} subscribers on the fake sentinel"
  end

  defp blocked_clients(admin) do
    {:ok, info} = RedixRs.command(admin, ["INFO", "clients"])
    [_, n] = Regex.run(~r/blocked_clients:(\d+)/, info)
    String.to_integer(n)
  end

  defp named_clients(admin, name) do
    {:ok, list} = RedixRs.command(admin, ["CLIENT", "LIST"])
    list |> String.split("\n", trim: true) |> Enum.count(&String.contains?(&1, " name=#{name} "))
  end

  defp role_calls(admin) do
    {:ok, info} = RedixRs.command(admin, ["INFO", "commandstats"])

    case Regex.run(~r/cmdstat_role:calls=(\d+)/, info) do
      [_, n] -> String.to_integer(n)
      nil -> 0
    end
  end
end
