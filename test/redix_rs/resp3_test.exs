defmodule RedixRs.Resp3Test do
  # `protocol: :resp3`: HELLO 3 in the handshake and RESP3 replies as Elixir terms.
  use ExUnit.Case, async: true

  @moduletag :capture_log

  alias RedixRs.Test.{RedisServer, Servers}

  setup_all do
    # DEBUG PROTOCOL produces every RESP3 type on demand.
    server = RedisServer.start(args: ["--enable-debug-command", "yes"], owner: self())
    on_exit(fn -> RedisServer.stop(server) end)
    %{server: server}
  end

  setup %{server: server} do
    {:ok, conn} = RedixRs.start_link(port: server.port, protocol: :resp3, sync_connect: true)
    %{conn: conn}
  end

  test "HGETALL is a map, ZSCORE a float, SMEMBERS a list", %{conn: c} do
    RedixRs.pipeline!(c, [["DEL", "h", "z", "s"], ["HSET", "h", "a", "1", "b", "2"]])
    assert {:ok, %{"a" => "1", "b" => "2"}} = RedixRs.command(c, ["HGETALL", "h"])
    RedixRs.command!(c, ["ZADD", "z", "1.5", "m"])
    assert {:ok, 1.5} = RedixRs.command(c, ["ZSCORE", "z", "m"])
    RedixRs.command!(c, ["SADD", "s", "x", "y"])
    assert {:ok, members} = RedixRs.command(c, ["SMEMBERS", "s"])
    assert Enum.sort(members) == ["x", "y"]
  end

  test "HELLO's reply is a map that says RESP3", %{conn: c} do
    assert {:ok, %{"proto" => 3, "server" => "redis"}} = RedixRs.command(c, ["HELLO"])
  end

  test "booleans, big numbers, doubles, nulls, verbatim strings and attributes", %{conn: c} do
    assert {:ok, true} = RedixRs.command(c, ["DEBUG", "PROTOCOL", "true"])
    assert {:ok, false} = RedixRs.command(c, ["DEBUG", "PROTOCOL", "false"])
    assert {:ok, big} = RedixRs.command(c, ["DEBUG", "PROTOCOL", "bignum"])
    assert is_integer(big) and big > 18_446_744_073_709_551_615
    assert {:ok, 3.141} = RedixRs.command(c, ["DEBUG", "PROTOCOL", "double"])
    assert {:ok, nil} = RedixRs.command(c, ["DEBUG", "PROTOCOL", "null"])

    assert {:ok, "This is a verbatim\nstring"} =
             RedixRs.command(c, ["DEBUG", "PROTOCOL", "verbatim"])

    # The attribute is skipped: only the value it annotates is returned.
    assert {:ok, "Some real reply following the attribute"} =
             RedixRs.command(c, ["DEBUG", "PROTOCOL", "attrib"])

    assert {:ok, %{0 => false, 1 => true, 2 => false}} =
             RedixRs.command(c, ["DEBUG", "PROTOCOL", "map"])
  end

  test "a push frame is consumed, never taken for a reply", %{conn: c} do
    # DEBUG PROTOCOL push sends a push frame followed by its actual reply.
    assert {:ok, reply} = RedixRs.command(c, ["DEBUG", "PROTOCOL", "push"])
    refute match?([_ | _], reply) and hd(reply) == "server-cpu-usage"
    assert {:ok, "PONG"} = RedixRs.command(c, ["PING"])
  end

  test "doubles that a float cannot hold are atoms", %{conn: c} do
    RedixRs.command!(c, ["DEL", "zi"])
    RedixRs.command!(c, ["ZADD", "zi", "inf", "up", "-inf", "down"])
    assert {:ok, :infinity} = RedixRs.command(c, ["ZSCORE", "zi", "up"])
    assert {:ok, :negative_infinity} = RedixRs.command(c, ["ZSCORE", "zi", "down"])
  end

  test "AUTH and SETNAME folded into HELLO; database selected after" do
    server = Servers.get(:password)

    {:ok, c} =
      RedixRs.start_link(
        port: server.port,
        password: "s3cret",
        client_name: "resp3-client",
        database: 2,
        protocol: :resp3,
        sync_connect: true
      )

    assert {:ok, "resp3-client"} = RedixRs.command(c, ["CLIENT", "GETNAME"])
    assert {:ok, info} = RedixRs.command(c, ["CLIENT", "INFO"])
    assert info =~ " db=2 " and info =~ "resp=3"

    acl = Servers.get(:acl)

    {:ok, c} =
      RedixRs.start_link(
        port: acl.port,
        username: "alice",
        password: "wonderland",
        protocol: :resp3,
        sync_connect: true
      )

    assert {:ok, "alice"} = RedixRs.command(c, ["ACL", "WHOAMI"])
  end

  test "a wrong password through HELLO is fatal, as AUTH is" do
    Process.flag(:trap_exit, true)

    assert {:error, %RedixRs.ConnectionError{reason: %RedixRs.Error{message: "WRONGPASS" <> _}}} =
             RedixRs.start_link(
               port: Servers.port(:password),
               password: "nope",
               protocol: :resp3,
               sync_connect: true
             )
  end

  test "RESP2 stays the default" do
    {:ok, c} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    RedixRs.command!(c, ["HSET", "resp2:h", "a", "1"])
    assert {:ok, ["a", "1"]} = RedixRs.command(c, ["HGETALL", "resp2:h"])
    assert_raise ArgumentError, ~r/:protocol/, fn -> RedixRs.start_link(protocol: :resp4) end
  end

  test "pub/sub over RESP3: messages arrive as push frames, with Redix's message shapes" do
    {:ok, ps} =
      RedixRs.PubSub.start_link(port: Servers.port(), protocol: :resp3, sync_connect: true)

    {:ok, ref} = RedixRs.PubSub.subscribe(ps, "resp3:news", self())
    assert_receive {:redix_pubsub, ^ps, ^ref, :subscribed, %{channel: "resp3:news"}}
    assert :ok = RedixRs.PubSub.ping(ps)
    RedixRs.command!(:redix, ["PUBLISH", "resp3:news", "hi"])
    assert_receive {:redix_pubsub, ^ps, ^ref, :message, %{channel: "resp3:news", payload: "hi"}}
  end
end
