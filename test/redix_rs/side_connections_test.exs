defmodule RedixRs.SideConnectionsTest do
  # Blocking commands go over side connections, so that they never stall the callers sharing the main
  # connection. Every check is made on the server: CLIENT LIST says which client runs what, in which
  # database, under which name. Each test names its connections uniquely, so other tests' clients
  # on the same server are never counted.
  use ExUnit.Case, async: true

  import RedixRs.Test.Helpers, only: [eventually: 1]

  alias RedixRs.{ConnectionError, Test.Servers}

  setup do
    id = System.unique_integer([:positive])
    name = "side#{id}"

    {:ok, admin} =
      RedixRs.start_link(port: Servers.port(), sync_connect: true, max_side_connections: 0)

    %{name: name, key: "side:#{id}:", admin: admin}
  end

  defp start(name, opts \\ []) do
    opts = Keyword.merge([port: Servers.port(), sync_connect: true, client_name: name], opts)
    start_supervised!({RedixRs, opts}, id: make_ref())
  end

  # CLIENT LIST of the clients named `name`, each a map of its fields.
  defp clients(admin, name) do
    {:ok, list} = RedixRs.command(admin, ["CLIENT", "LIST"])

    list
    |> String.split("\n", trim: true)
    |> Enum.map(fn line ->
      line |> String.split(" ") |> Map.new(&List.to_tuple(String.split(&1, "=", parts: 2)))
    end)
    |> Enum.filter(&(&1["name"] == name))
  end

  defp blocked(admin, name, cmd \\ "blpop"),
    do: Enum.filter(clients(admin, name), &(&1["cmd"] == cmd and &1["flags"] =~ "b"))

  defp blpop_task(conn, key, opts \\ []) do
    Task.async(fn -> RedixRs.command(conn, ["BLPOP", key, 0], opts) end)
  end

  test "GETs of 200 processes all complete within 1 s while 50 processes sit in BLPOP ... 0",
       %{name: name, key: key, admin: admin} do
    conn = start(name, max_side_connections: 50)
    RedixRs.command!(conn, ["SET", key <> "v", "value"])
    blockers = for _ <- 1..50, do: blpop_task(conn, key <> "q")
    assert eventually(fn -> length(blocked(admin, name)) == 50 end)

    getters =
      for _ <- 1..200 do
        Task.async(fn ->
          {micros, reply} = :timer.tc(fn -> RedixRs.command(conn, ["GET", key <> "v"]) end)
          {micros, reply}
        end)
      end

    results = Task.await_many(getters, 10_000)
    assert Enum.all?(results, fn {_, reply} -> reply == {:ok, "value"} end)
    slowest = results |> Enum.map(&elem(&1, 0)) |> Enum.max()
    assert slowest < 1_000_000, "the slowest GET took #{slowest} µs"

    # All 50 still blocked; each gets one of the 50 elements.
    assert length(blocked(admin, name)) == 50
    RedixRs.command!(admin, ["RPUSH", key <> "q" | Enum.map(1..50, &"e#{&1}")])
    popped = blockers |> Task.await_many(10_000) |> Enum.map(fn {:ok, [_, e]} -> e end)
    assert Enum.sort(popped) == Enum.sort(Enum.map(1..50, &"e#{&1}"))
  end

  test "50 BLPOP q 0 callers with timeout: 100 leave no side connection blocked behind them",
       %{name: name, key: key, admin: admin} do
    conn = start(name, max_side_connections: 8)
    q = key <> "q"

    results = for(_ <- 1..50, do: blpop_task(conn, q, timeout: 100)) |> Task.await_many(10_000)

    assert Enum.all?(results, &(&1 == {:error, %ConnectionError{reason: :timeout}}))

    # Every side connection they used is closed: none left in BLPOP. (Those opened for callers that
    # gave up before they connected were never used: they stay, idle, at most 8.)
    assert eventually(fn -> blocked(admin, name) == [] end)
    assert length(clients(admin, name)) <= 9

    # A later push stays in the list: no dead connection takes it.
    RedixRs.command!(admin, ["RPUSH", q, "kept"])
    assert RedixRs.command(admin, ["LRANGE", q, 0, -1]) == {:ok, ["kept"]}

    # And blocking calls still work.
    assert RedixRs.command(conn, ["BLPOP", q, 0]) == {:ok, [q, "kept"]}
  end

  test "a caller that dies in BLPOP ... 0 leaves no side connection behind",
       %{name: name, key: key, admin: admin} do
    conn = start(name)
    q = key <> "q"
    caller = spawn(fn -> RedixRs.command(conn, ["BLPOP", q, 0]) end)
    assert eventually(fn -> length(blocked(admin, name)) == 1 end)
    Process.exit(caller, :kill)
    assert eventually(fn -> blocked(admin, name) == [] end)
    RedixRs.command!(admin, ["RPUSH", q, "kept"])
    assert RedixRs.command(admin, ["LRANGE", q, 0, -1]) == {:ok, ["kept"]}
  end

  test "CLIENT KILL of a side connection answers its caller :disconnected; the shared one is untouched",
       %{name: name, key: key, admin: admin} do
    conn = start(name)
    {:ok, main_id} = RedixRs.command(conn, ["CLIENT", "ID"])
    task = blpop_task(conn, key <> "q")
    assert eventually(fn -> length(blocked(admin, name)) == 1 end)
    [side] = blocked(admin, name)
    assert String.to_integer(side["id"]) != main_id

    assert RedixRs.command(admin, ["CLIENT", "KILL", "ID", side["id"]]) == {:ok, 1}
    assert Task.await(task) == {:error, %ConnectionError{reason: :disconnected}}
    assert RedixRs.command(conn, ["CLIENT", "ID"]) == {:ok, main_id}

    # The next blocking call gets a fresh side connection.
    RedixRs.command!(admin, ["RPUSH", key <> "q", "x"])
    assert RedixRs.command(conn, ["BLPOP", key <> "q", 0]) == {:ok, [key <> "q", "x"]}
  end

  test "max_side_connections: 0 keeps Redix's behaviour: a BLPOP stalls the GETs behind it",
       %{name: name, key: key, admin: admin} do
    conn = start(name, max_side_connections: 0)
    task = blpop_task(conn, key <> "q")
    assert eventually(fn -> length(blocked(admin, name)) == 1 end)
    assert [%{"id" => _}] = clients(admin, name)

    assert RedixRs.command(conn, ["GET", key <> "v"], timeout: 500) ==
             {:error, %ConnectionError{reason: :timeout}}

    RedixRs.command!(admin, ["RPUSH", key <> "q", "x"])
    assert Task.await(task) == {:ok, [key <> "q", "x"]}
    assert RedixRs.command(conn, ["GET", key <> "v"]) == {:ok, nil}
  end

  def password(test_pid, password) do
    send(test_pid, :password_asked)
    password
  end

  test "side connections use the connection's password (an MFA, called for each), database and name",
       %{name: name, key: key} do
    port = Servers.port(:password)

    {:ok, admin} =
      RedixRs.start_link(
        port: port,
        password: "s3cret",
        sync_connect: true,
        max_side_connections: 0
      )

    conn =
      start(name,
        port: port,
        password: {__MODULE__, :password, [self(), "s3cret"]},
        database: 3
      )

    assert_receive :password_asked
    task = blpop_task(conn, key <> "q")
    assert_receive :password_asked
    assert eventually(fn -> length(blocked(admin, name)) == 1 end)
    [side] = blocked(admin, name)
    assert side["db"] == "3"

    # Pushed into database 3 through the main connection: the side connection's database.
    RedixRs.command!(conn, ["RPUSH", key <> "q", "x"])
    assert Task.await(task) == {:ok, [key <> "q", "x"]}
  end

  # The first password asked for is right, the later ones wrong.
  def password_once(agent) do
    if Agent.get_and_update(agent, &{&1, &1 + 1}) == 0, do: "s3cret", else: "wrong"
  end

  test "a side connection that cannot be opened answers its caller with why",
       %{name: name, key: key} do
    {:ok, agent} = Agent.start_link(fn -> 0 end)
    port = Servers.port(:password)
    conn = start(name, port: port, password: {__MODULE__, :password_once, [agent]})

    assert {:error, %ConnectionError{reason: %RedixRs.Error{message: "WRONGPASS" <> _}}} =
             RedixRs.command(conn, ["BLPOP", key <> "q", 0])

    # The shared connection is not concerned.
    assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
  end

  test "callers in BLPOP, or waiting for a side connection, when the connection stops exit as Redix callers do",
       %{name: name, key: key, admin: admin} do
    {:ok, conn} =
      RedixRs.start_link(
        port: Servers.port(),
        sync_connect: true,
        client_name: name,
        max_side_connections: 1
      )

    Process.unlink(conn)
    test_pid = self()

    call = fn ->
      spawn(fn ->
        try do
          RedixRs.command(conn, ["BLPOP", key <> "q", 0], timeout: :infinity)
        catch
          :exit, reason -> send(test_pid, {:exited, self(), reason})
        end
      end)
    end

    blocked_caller = call.()
    assert eventually(fn -> length(blocked(admin, name)) == 1 end)
    waiting_caller = call.()
    assert eventually(fn -> Process.info(waiting_caller, :status) == {:status, :waiting} end)

    :ok = RedixRs.stop(conn)
    assert_receive {:exited, ^blocked_caller, {:redix_exited_during_call, :normal}}
    assert_receive {:exited, ^waiting_caller, {:redix_exited_during_call, :normal}}
    assert eventually(fn -> clients(admin, name) == [] end)
  end

  test "a pipeline or transaction holding a blocking command goes to a side connection",
       %{name: name, key: key, admin: admin} do
    conn = start(name)
    {:ok, main_id} = RedixRs.command(conn, ["CLIENT", "ID"])

    task =
      Task.async(fn ->
        RedixRs.pipeline(conn, [
          ["SET", key <> "k", "v"],
          ["BLPOP", key <> "q", "0"],
          ["CLIENT", "ID"]
        ])
      end)

    assert eventually(fn -> length(blocked(admin, name)) == 1 end)
    assert RedixRs.command(conn, ["GET", key <> "k"], timeout: 1_000) == {:ok, "v"}
    RedixRs.command!(admin, ["RPUSH", key <> "q", "x"])
    assert {:ok, ["OK", [_, "x"], side_id]} = Task.await(task)
    assert side_id != main_id

    # In MULTI, Redis runs BLPOP without blocking; the transaction still goes to a side connection.
    assert {:ok, [nil, side_id]} =
             RedixRs.transaction_pipeline(conn, [["BLPOP", key <> "q", 0], ["CLIENT", "ID"]])

    assert side_id != main_id
  end

  test "blocking commands are recognised as atoms, in long pipelines and in large ones",
       %{name: name, key: key, admin: admin} do
    conn = start(name, max_side_connections: 3)
    q = key <> "q"
    # An atom name; the tail of a pipeline of 40 commands (checked whole before it is sent); the
    # tail of one too long for a normal scheduler (5,000 commands: looked at on a dirty one).
    atom = Task.async(fn -> RedixRs.command(conn, [:blpop, q, 0]) end)
    sets = for i <- 1..39, do: ["SET", key <> "#{i}", i]
    long = Task.async(fn -> RedixRs.pipeline(conn, sets ++ [["BLPOP", q, 0]]) end)
    many = for i <- 1..5_000, do: ["SET", key <> "many", i]
    large = Task.async(fn -> RedixRs.pipeline(conn, many ++ [["BLPOP", q, 0]]) end)
    assert eventually(fn -> length(blocked(admin, name)) == 3 end)
    assert RedixRs.command(conn, ["GET", key <> "39"], timeout: 1_000) == {:ok, "39"}

    RedixRs.command!(admin, ["RPUSH", q, "a", "b", "c"])
    assert {:ok, [^q, _]} = Task.await(atom)
    assert {:ok, replies} = Task.await(long)
    assert length(replies) == 40
    assert {:ok, replies} = Task.await(large)
    assert length(replies) == 5_001 and match?([^q, _], List.last(replies))
  end

  test "XREAD and XREADGROUP go to a side connection only with BLOCK",
       %{name: name, key: key, admin: admin} do
    conn = start(name)
    {:ok, main_id} = RedixRs.command(conn, ["CLIENT", "ID"])
    s = key <> "s"
    RedixRs.command!(conn, ["XADD", s, "1-1", "f", "v"])
    RedixRs.command!(conn, ["XGROUP", "CREATE", s, "g", "$"])

    # Without BLOCK: on the main connection (a pipeline with CLIENT ID says where it ran).
    assert {:ok, [[[^s, [["1-1", ["f", "v"]]]]], ^main_id]} =
             RedixRs.pipeline(conn, [["XREAD", "STREAMS", s, "0"], ["CLIENT", "ID"]])

    task = Task.async(fn -> RedixRs.command(conn, ["xread", "block", "0", "STREAMS", s, "$"]) end)
    assert eventually(fn -> length(blocked(admin, name, "xread")) == 1 end)

    group =
      Task.async(fn ->
        RedixRs.command(conn, ~w(XREADGROUP GROUP g c1 BLOCK 0 STREAMS) ++ [s, ">"])
      end)

    assert eventually(fn -> length(blocked(admin, name, "xreadgroup")) == 1 end)
    assert RedixRs.command(conn, ["PING"], timeout: 1_000) == {:ok, "PONG"}
    RedixRs.command!(admin, ["XADD", s, "2-1", "f", "w"])
    assert {:ok, [[^s, [["2-1", ["f", "w"]]]]]} = Task.await(task)
    assert {:ok, [[^s, [["2-1", ["f", "w"]]]]]} = Task.await(group)
  end

  test "when every side connection is busy, a blocking call waits for one within its timeout",
       %{name: name, key: key, admin: admin} do
    conn = start(name, max_side_connections: 1)
    first = blpop_task(conn, key <> "a")
    assert eventually(fn -> length(blocked(admin, name)) == 1 end)

    assert RedixRs.command(conn, ["BLPOP", key <> "b", 0], timeout: 300) ==
             {:error, %ConnectionError{reason: :timeout}}

    second = blpop_task(conn, key <> "b", timeout: 10_000)
    RedixRs.command!(admin, ["RPUSH", key <> "a", "x"])
    assert Task.await(first) == {:ok, [key <> "a", "x"]}
    # The second got the freed connection and blocks on it now: one side connection in all.
    assert eventually(fn -> match?([%{"cmd" => "blpop"}], blocked(admin, name)) end)
    assert length(clients(admin, name)) == 2
    RedixRs.command!(admin, ["RPUSH", key <> "b", "y"])
    assert Task.await(second) == {:ok, [key <> "b", "y"]}
  end

  test "side connections are reused, and closed once idle", %{name: name, key: key, admin: admin} do
    # Idle for 1.5 s: long enough that a stalled machine does not close it between the two calls,
    # short enough for `eventually` (5 s) to see it closed.
    conn = start(name, side_connection_idle_timeout: 1_500)
    RedixRs.command!(conn, ["RPUSH", key <> "q", "1", "2"])
    assert {:ok, [_, "1"]} = RedixRs.command(conn, ["BLPOP", key <> "q", 0])
    [main, side] = Enum.sort_by(clients(admin, name), &String.to_integer(&1["id"]))
    assert {:ok, [_, "2"]} = RedixRs.command(conn, ["BLPOP", key <> "q", 0])
    # The same side connection, reused.
    assert Enum.sort_by(clients(admin, name), &String.to_integer(&1["id"]))
           |> Enum.map(& &1["id"]) ==
             [main["id"], side["id"]]

    assert eventually(fn -> Enum.map(clients(admin, name), & &1["id"]) == [main["id"]] end)
  end

  test "the blocking commands sent to side connections are what the server flags `blocking`",
       %{admin: admin} do
    {:ok, commands} = RedixRs.command(admin, ["COMMAND"])

    flagged =
      for [name, _arity, flags | _] <- commands, "blocking" in flags, do: String.upcase(name)

    {to_side, shared} = RedixRs.Native.blocking_commands()
    assert Enum.sort(shared) == ["WAIT", "WAITAOF"]
    # Redis 7.2 flags WAIT (and its new WAITAOF) `blocking` too; 7.0 flags neither.
    assert Enum.sort(flagged -- shared) == Enum.sort(to_side)
  end

  def forward(event, _measurements, metadata, {test_pid, name}) do
    if metadata[:connection_name] == name, do: send(test_pid, {:telemetry, event, metadata})
  end

  test "calls on side connections emit pipeline events; side connections emit no connection events",
       %{name: name, key: key, admin: admin} do
    registered = String.to_atom(name)
    events = for e <- [:connection, :disconnection, :failed_connection], do: [:redix_rs, e]
    events = events ++ [[:redix_rs, :pipeline, :start], [:redix_rs, :pipeline, :stop]]
    :ok = :telemetry.attach_many(name, events, &__MODULE__.forward/4, {self(), registered})
    on_exit(fn -> :telemetry.detach(name) end)

    conn = start(name, name: registered)
    assert_receive {:telemetry, [:redix_rs, :connection], %{connection: ^conn}}
    task = blpop_task(registered, key <> "q")
    assert eventually(fn -> length(blocked(admin, name)) == 1 end)
    [side] = blocked(admin, name)
    RedixRs.command!(admin, ["CLIENT", "KILL", "ID", side["id"]])
    assert Task.await(task) == {:error, %ConnectionError{reason: :disconnected}}

    assert_receive {:telemetry, [:redix_rs, :pipeline, :start],
                    %{connection: ^conn, commands: [["BLPOP", _, 0]]}}

    assert_receive {:telemetry, [:redix_rs, :pipeline, :stop],
                    %{connection: ^conn, kind: :error, reason: %{reason: :disconnected}}}

    refute_receive {:telemetry, [:redix_rs, _], _}, 300
  end

  test "WAIT stays on the shared connection", %{name: name} do
    conn = start(name)
    {:ok, main_id} = RedixRs.command(conn, ["CLIENT", "ID"])
    assert {:ok, [0, ^main_id]} = RedixRs.pipeline(conn, [["WAIT", 0, 0], ["CLIENT", "ID"]])
  end
end

defmodule RedixRs.SideConnectionsRemoteTest do
  # A blocking command sent to a connection on another node runs there on a side connection too
  # (the connection process runs it for the remote caller, in a process of its own). Not async: it
  # makes this VM a distributed node.
  use ExUnit.Case, async: false

  alias RedixRs.Test.Servers

  test "a BLPOP through a connection on another node does not stall that connection" do
    {_peer, node} = RedixRs.Test.PeerNode.start!()
    name = "sideremote#{System.unique_integer([:positive])}"
    opts = [port: Servers.port(), sync_connect: true, client_name: name]
    spec = Map.put(RedixRs.child_spec(opts), :id, make_ref())
    {:ok, conn} = :erpc.call(node, Supervisor, :start_child, [RedixRs.Supervisor, spec])
    q = name <> ":q"

    task = Task.async(fn -> RedixRs.command(conn, ["BLPOP", q, 0], timeout: 10_000) end)

    assert RedixRs.Test.Helpers.eventually(fn ->
             {:ok, list} = RedixRs.command(conn, ["CLIENT", "LIST"], timeout: 1_000)

             list
             |> String.split("\n")
             |> Enum.any?(&(&1 =~ "name=#{name} " and &1 =~ "cmd=blpop"))
           end)

    assert RedixRs.command(conn, ["PING"], timeout: 1_000) == {:ok, "PONG"}
    RedixRs.command!(conn, ["RPUSH", q, "x"])
    assert Task.await(task) == {:ok, [q, "x"]}
  end

  test "a blocking call from another node emits its events on the caller's node only" do
    {_peer, node} = RedixRs.Test.PeerNode.start!()
    spec = Map.put(RedixRs.child_spec(port: Servers.port(), sync_connect: true), :id, make_ref())
    {:ok, conn} = :erpc.call(node, Supervisor, :start_child, [RedixRs.Supervisor, spec])
    q = "sideremote:events:#{System.unique_integer([:positive])}"
    events = [[:redix_rs, :pipeline, :start], [:redix_rs, :pipeline, :stop]]
    forward = &RedixRs.Test.PeerNode.forward_event/4
    :ok = :erpc.call(node, :telemetry, :attach_many, [make_ref(), events, forward, self()])

    RedixRs.command!(conn, ["RPUSH", q, "x"])
    assert RedixRs.command(conn, ["BLPOP", q, 0], timeout: 10_000) == {:ok, [q, "x"]}
    # On the connection's node, the process that ran the call would have sent its events here
    # before its reply (one sender, one receiver: in order).
    refute_received {:peer_telemetry, _, _}
  end
end
