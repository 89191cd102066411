defmodule RedixRs.Cluster.RoutingTest do
  # Routing on one real 6-node cluster (3 primaries, 3 replicas), shared by the module: keys land on
  # their slot's owner with no redirect, hash tags keep keys together, long pipelines come back in
  # order, transactions stay on one slot, and options are checked. Also the docs' examples.
  use ExUnit.Case, async: false

  alias RedixRs.Test.Cluster

  @moduletag timeout: 120_000

  setup_all do
    cluster = Cluster.start()
    uris = Cluster.uris(cluster)
    RedixRs.Doctest.Cluster.put(uris)
    {:ok, _} = RedixRs.Cluster.start_link(name: :cluster, nodes: uris, sync_connect: true)
    on_exit(fn -> Cluster.stop(cluster) end)
    %{cluster: cluster, uris: uris}
  end

  doctest RedixRs.Cluster

  defp redirections(fun) do
    parent = self()
    id = "redirections-#{inspect(make_ref())}"

    :telemetry.attach(
      id,
      [:redix_rs, :cluster, :redirection],
      fn _, _, meta, _ -> send(parent, {:redirection, meta}) end,
      nil
    )

    try do
      fun.()
    after
      :telemetry.detach(id)
    end

    collect_redirections([])
  end

  defp collect_redirections(acc) do
    receive do
      {:redirection, meta} -> collect_redirections([meta | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  test "SET and GET reach every shard, each key on its slot's owner, with no redirect", %{
    cluster: cluster
  } do
    keys = for i <- 1..60, do: "route:#{i}"

    redirects =
      redirections(fn ->
        for key <- keys do
          assert {:ok, "OK"} = RedixRs.Cluster.command(:cluster, ["SET", key, "v-" <> key])
          assert {:ok, "v-" <> ^key} = RedixRs.Cluster.command(:cluster, ["GET", key])
        end
      end)

    assert redirects == []

    owners =
      for key <- keys do
        owner = Cluster.owner(cluster, Cluster.slot(cluster, key))
        # The value is on the owner itself (read there directly, not through the client).
        assert Cluster.cli(owner, ["GET", key]) == "$#{byte_size("v-" <> key)}\r\nv-#{key}\r\n"
        owner.port
      end

    assert owners |> Enum.uniq() |> length() == 3
  end

  test "hash tags keep keys in one slot; keys of different slots give CROSSSLOT", %{
    cluster: cluster
  } do
    assert Cluster.slot(cluster, "{user:7}:a") == Cluster.slot(cluster, "{user:7}:b")

    assert {:ok, ["OK", "OK", ["1", "2"]]} =
             RedixRs.Cluster.pipeline(:cluster, [
               ["SET", "{user:7}:a", "1"],
               ["SET", "{user:7}:b", "2"],
               ["MGET", "{user:7}:a", "{user:7}:b"]
             ])

    assert {:error, %RedixRs.Error{message: "CROSSSLOT" <> _}} =
             RedixRs.Cluster.command(:cluster, ["MGET", "route:1", "route:2"])
  end

  test "commands whose key is found by their key specs route without a redirect" do
    redirects =
      redirections(fn ->
        for i <- 1..20 do
          key = "specs:#{i}"
          assert {:ok, "OK"} = RedixRs.Cluster.command(:cluster, ["SET", key, i])
          # numkeys-style specs: the key is after the script and the count.
          script = "return redis.call('GET', KEYS[1])"
          assert {:ok, value} = RedixRs.Cluster.command(:cluster, ["EVAL", script, "1", key])
          assert value == to_string(i)

          # A subcommand's key (OBJECT ENCODING key).
          assert {:ok, "OK"} = RedixRs.Cluster.command(:cluster, ["SET", "s" <> key, "abc"])

          assert {:ok, "embstr"} =
                   RedixRs.Cluster.command(:cluster, ["OBJECT", "ENCODING", "s" <> key])

          assert {:ok, "string"} = RedixRs.Cluster.command(:cluster, ["TYPE", key])
          assert {:ok, id} = RedixRs.Cluster.command(:cluster, ["XADD", "s:#{i}", "*", "f", "v"])

          assert {:ok, [[^id, ["f", "v"]]]} =
                   RedixRs.Cluster.command(:cluster, ["XRANGE", "s:#{i}", id, id])
        end

        # Keyless commands go to some primary.
        assert {:ok, "PONG"} = RedixRs.Cluster.command(:cluster, ["PING"])
        assert {:ok, n} = RedixRs.Cluster.command(:cluster, ["DBSIZE"])
        assert is_integer(n)
      end)

    assert redirects == []
  end

  test "a command whose key only the server can locate is routed with COMMAND GETKEYS" do
    # MIGRATE's key specs cannot say where the keys after KEYS are when the key argument is
    # empty; the server can. A missing key makes MIGRATE answer NOKEY without contacting the
    # target, but only on the key's own node (any other answers MOVED).
    redirects =
      redirections(fn ->
        for i <- 1..12 do
          command = ["MIGRATE", "127.0.0.1", "1", "", "0", "1000", "KEYS", "getkeys:#{i}"]
          assert {:ok, "NOKEY"} = RedixRs.Cluster.command(:cluster, command)
        end

        # Among other commands of a pipeline, in order.
        assert {:ok, ["OK", "NOKEY", "v"]} =
                 RedixRs.Cluster.pipeline(:cluster, [
                   ["SET", "getkeys:v", "v"],
                   ["MIGRATE", "127.0.0.1", "1", "", "0", "1000", "KEYS", "getkeys:none"],
                   ["GET", "getkeys:v"]
                 ])
      end)

    assert redirects == []
  end

  test "a 1,000-command pipeline over every shard comes back in order" do
    sets = for i <- 1..1_000, do: ["SET", "pipe:#{i}", i]
    assert {:ok, replies} = RedixRs.Cluster.pipeline(:cluster, sets)
    assert replies == List.duplicate("OK", 1_000)

    gets = for i <- 1..1_000, do: ["GET", "pipe:#{i}"]
    assert {:ok, values} = RedixRs.Cluster.pipeline(:cluster, gets)
    assert values == Enum.map(1..1_000, &to_string/1)

    # Mixed with errors, which stay inline in place.
    mixed =
      for i <- 1..300,
          do: if(rem(i, 3) == 0, do: ["INCR", "pipe:#{i}x", "extra"], else: ["GET", "pipe:#{i}"])

    assert {:ok, replies} = RedixRs.Cluster.pipeline(:cluster, mixed)

    for {reply, i} <- Enum.with_index(replies, 1) do
      if rem(i, 3) == 0,
        do: assert(%RedixRs.Error{message: "ERR wrong number of arguments" <> _} = reply),
        else: assert(reply == to_string(i))
    end
  end

  test "a pipeline large enough for the dirty scheduler" do
    value = String.duplicate("x", 1024)
    sets = for i <- 1..2_000, do: ["SET", "big:#{i}", value]
    assert {:ok, replies} = RedixRs.Cluster.pipeline(:cluster, sets, timeout: 30_000)
    assert length(replies) == 2_000 and Enum.all?(replies, &(&1 == "OK"))
  end

  test "many processes share the cluster's connections" do
    tasks =
      for p <- 1..20 do
        Task.async(fn ->
          for i <- 1..50 do
            key = "proc:#{p}:#{i}"
            {:ok, "OK"} = RedixRs.Cluster.command(:cluster, ["SET", key, i])
            {:ok, value} = RedixRs.Cluster.command(:cluster, ["GET", key])
            value
          end
        end)
      end

    for task <- tasks, do: assert(Task.await(task, 30_000) == Enum.map(1..50, &to_string/1))
  end

  test "a same-slot transaction commits; a cross-slot one is refused with nothing written" do
    assert {:ok, ["OK", 2, "2"]} =
             RedixRs.Cluster.transaction_pipeline(:cluster, [
               ["SET", "{tx}n", "1"],
               ["INCR", "{tx}n"],
               ["GET", "{tx}n"]
             ])

    assert {:error,
            %RedixRs.Error{message: "CROSSSLOT Keys in request don't hash to the same slot"}} =
             RedixRs.Cluster.transaction_pipeline(:cluster, [
               ["SET", "tx:a", "written?"],
               ["SET", "tx:b", "written?"]
             ])

    assert {:ok, [nil, nil]} =
             RedixRs.Cluster.pipeline(:cluster, [["GET", "tx:a"], ["GET", "tx:b"]])

    assert {:error,
            %RedixRs.Error{
              message:
                "ERR transaction_pipeline requires at least one command with a key to route on"
            }} = RedixRs.Cluster.transaction_pipeline(:cluster, [["PING"], ["TIME"]])

    # A transaction's errors while queueing abort it, as on one server.
    assert {:error, %RedixRs.Error{message: "EXECABORT" <> _}} =
             RedixRs.Cluster.transaction_pipeline(:cluster, [
               ["SET", "{tx}n", "1"],
               ["INCR", "{tx}n", "x"]
             ])

    assert_raise ArgumentError, ~r/only supports route: :primary/, fn ->
      RedixRs.Cluster.transaction_pipeline(:cluster, [["GET", "{tx}n"]], route: :replica)
    end

    assert ["OK", 1] ==
             RedixRs.Cluster.transaction_pipeline!(:cluster, [
               ["DEL", "{tx}m"],
               ["SET", "{tx}m", "1"],
               ["EXISTS", "{tx}m"]
             ])
             |> tl()
  end

  test "RedixRs.command/3 and pipeline/3 take a cluster name; noreply_* raise" do
    assert {:ok, "OK"} = RedixRs.command(:cluster, ["SET", "api:1", "one"])

    assert {:ok, ["one", nil]} =
             RedixRs.pipeline(:cluster, [["GET", "api:1"], ["GET", "api:none"]])

    assert {:ok, ["OK", "one"]} =
             RedixRs.transaction_pipeline(:cluster, [["SET", "{api}x", "one"], ["GET", "{api}x"]])

    assert_raise ArgumentError, ~r/noreply/, fn ->
      RedixRs.noreply_command(:cluster, ["SET", "api:2", "x"])
    end
  end

  test "calls emit the pipeline events, with the cluster's name" do
    parent = self()
    id = "cluster-pipeline-#{System.unique_integer([:positive])}"
    events = [[:redix_rs, :pipeline, :start], [:redix_rs, :pipeline, :stop]]
    :telemetry.attach_many(id, events, fn e, m, meta, _ -> send(parent, {e, m, meta}) end, nil)

    try do
      assert {:ok, "PONG"} =
               RedixRs.Cluster.command(:cluster, ["PING"], telemetry_metadata: %{n: 1})

      assert_receive {[:redix_rs, :pipeline, :start], %{system_time: _}, start}
      assert %{connection_name: :cluster, commands: [["PING"]], extra_metadata: %{n: 1}} = start
      assert is_pid(start.connection)
      assert_receive {[:redix_rs, :pipeline, :stop], %{duration: d}, stop} when d > 0
      refute Map.has_key?(stop, :kind)

      assert {:ok, _} = RedixRs.Cluster.transaction_pipeline(:cluster, [["GET", "{ev}a"]])

      assert_receive {[:redix_rs, :pipeline, :start], _,
                      %{commands: [["MULTI"], ["GET", "{ev}a"], ["EXEC"]]}}

      assert {:error, _} = RedixRs.Cluster.command(:cluster, ["GET", "x"], route: :replica)

      assert_receive {[:redix_rs, :pipeline, :stop], _,
                      %{
                        kind: :error,
                        reason: %RedixRs.ConnectionError{reason: :no_replica_connection}
                      }}

      # Through RedixRs.command/3 too.
      assert {:ok, "PONG"} = RedixRs.command(:cluster, ["PING"])
      assert_receive {[:redix_rs, :pipeline, :start], _, %{connection_name: :cluster}}
    after
      :telemetry.detach(id)
    end
  end

  test "scan/2 streams the keys of every primary" do
    keys = for i <- 1..150, do: "scan:k:#{i}"
    RedixRs.Cluster.pipeline!(:cluster, Enum.map(keys, &["SET", &1, "1"]))
    found = RedixRs.Cluster.scan(:cluster, match: "scan:k:*", count: 20) |> Enum.uniq()
    assert Enum.sort(found) == Enum.sort(keys)
    assert RedixRs.Cluster.scan(:cluster, match: "scan:none:*") |> Enum.to_list() == []

    assert ["scan:k:1"] ==
             RedixRs.Cluster.scan(:cluster, match: "scan:k:1", type: "string") |> Enum.to_list()
  end

  test "bad input raises in the caller; nothing reaches Redis" do
    assert_raise ArgumentError, fn -> RedixRs.Cluster.command(:cluster, []) end
    assert_raise ArgumentError, fn -> RedixRs.Cluster.pipeline(:cluster, []) end
    assert_raise ArgumentError, fn -> RedixRs.Cluster.command(:cluster, ["SUBSCRIBE", "ch"]) end

    assert_raise ArgumentError, ~r/invalid :route option/, fn ->
      RedixRs.Cluster.command(:cluster, ["GET", "a"], route: :nearest)
    end

    assert_raise ArgumentError, ~r/timeout/, fn ->
      RedixRs.Cluster.command(:cluster, ["GET", "a"], timeout: -1)
    end

    # Elements that are not binaries are converted, as on a connection.
    assert {:ok, "OK"} = RedixRs.Cluster.command(:cluster, ["SET", :atom_key, 1.5])
    assert {:ok, "1.5"} = RedixRs.Cluster.command(:cluster, ["GET", "atom_key"])
  end

  test "a call to a cluster that is not running exits as a Redix call does" do
    assert {:redix_exited_during_call, :noproc} =
             catch_exit(RedixRs.Cluster.command(:no_such_cluster, ["PING"]))
  end

  test "start options are checked", %{uris: uris} do
    ok = [name: :opts_check, nodes: uris]

    for {opts, message} <- [
          {[nodes: uris], ~r/:name/},
          {[name: :x], ~r/:nodes/},
          {[name: :x, nodes: []], ~r/:nodes/},
          {[name: "x", nodes: uris], ~r/:name/},
          {ok ++ [sentinel: [sentinels: ["redis://localhost:1"], group: "g"]], ~r/Sentinel/},
          {ok ++ [exit_on_disconnection: true], ~r/exit_on_disconnection/},
          {ok ++ [database: 1], ~r/database 0/},
          {ok ++ [host: "localhost"], ~r/:nodes/},
          {ok ++ [port: 7000], ~r/:nodes/},
          {ok ++ [bogus: 1], ~r/unknown options/},
          {ok ++ [topology_refresh_interval: -5], ~r/topology_refresh_interval/},
          {ok ++ [read_from_replicas: :yes], ~r/read_from_replicas/},
          {[name: :x, nodes: ["redis://user:pw@localhost:7000"]], ~r/credentials/},
          {[name: :x, nodes: ["redis://localhost:7000/2"]], ~r/database 0/},
          {[name: :x, nodes: ["rediss://localhost:7000"], ssl: false], ~r/rediss/},
          {[name: :x, nodes: [[host: "localhost", port: :nope]]], ~r/seed node/},
          {[name: :x, nodes: [:nope]], ~r/seed node/},
          {[name: :x, nodes: ["http://localhost:7000"]], ~r/scheme/},
          # The checks RedixRs.PubSub's cluster mode made too (RedixRs.Options.Cluster serves both).
          {[name: :x, nodes: [[host: "localhost", port: 0]]], ~r/seed node/},
          {[name: :x, nodes: ["unix:///tmp/redis.sock"]], ~r/TCP address/},
          {[name: :x, nodes: [[host: "h", port: 7000, password: "s3cret"]]], ~r/seed node/},
          {[name: :x, nodes: "redis://:s3cret@localhost:7000"], ~r/:nodes/},
          {ok ++ [exit_on_disconnection: false], ~r/exit_on_disconnection/},
          {ok ++ [fetch_client_id_on_connect: true], ~r/unknown options/}
        ] do
      error = assert_raise ArgumentError, message, fn -> RedixRs.Cluster.start_link(opts) end
      refute error.message =~ "s3cret"
    end

    # A rediss:// seed turns TLS on for every node; node options are validated as a connection's.
    {cluster_opts, node_opts} =
      RedixRs.Options.validate_cluster!(
        name: :x,
        nodes: ["rediss://a.example:7000", [host: "b.example", port: 7001]],
        password: "pw",
        socket_opts: [verify: :verify_none]
      )

    assert cluster_opts[:nodes] == [{"a.example", 7000}, {"b.example", 7001}]
    assert node_opts[:ssl] == true and node_opts[:password] == "pw"

    assert_raise ArgumentError, ~r/TLS options/, fn ->
      RedixRs.Options.validate_cluster!(
        name: :x,
        nodes: uris,
        socket_opts: [verify: :verify_none]
      )
    end

    # database 0 (or "0") is fine, and keyword seeds too.
    [first | _] = uris
    port = first |> URI.parse() |> Map.fetch!(:port)

    assert {:ok, _} =
             RedixRs.Cluster.start_link(
               name: :opts_ok,
               nodes: [[host: "127.0.0.1", port: port]],
               database: "0",
               sync_connect: true
             )

    assert {:ok, "PONG"} = RedixRs.Cluster.command(:opts_ok, ["PING"])
    assert :ok = RedixRs.Cluster.stop(:opts_ok)
  end

  test "child_spec/1 makes a supervisor child whose id is the name", %{uris: uris} do
    spec = RedixRs.Cluster.child_spec(name: :supervised, nodes: uris)
    assert %{id: :supervised, type: :supervisor} = spec
    {:ok, sup} = Supervisor.start_link([spec], strategy: :one_for_one)
    assert {:ok, "PONG"} = RedixRs.Cluster.command(:supervised, ["PING"], timeout: 10_000)
    Supervisor.stop(sup)
  end

  test "without sync_connect, calls made before the first discovery wait for it", %{uris: uris} do
    {:ok, _} = RedixRs.Cluster.start_link(name: :async_start, nodes: uris)

    assert {:ok, "OK"} =
             RedixRs.Cluster.command(:async_start, ["SET", "async:1", "x"], timeout: 10_000)

    RedixRs.Cluster.stop(:async_start)
  end

  test "with no seed reachable, sync_connect fails and later calls get :closed" do
    port = RedixRs.Test.Helpers.closed_port()
    Process.flag(:trap_exit, true)

    assert {:error, _} =
             RedixRs.Cluster.start_link(
               name: :nowhere,
               nodes: ["redis://127.0.0.1:#{port}"],
               sync_connect: true,
               timeout: 500
             )

    {:ok, _} =
      RedixRs.Cluster.start_link(
        name: :nowhere_async,
        nodes: ["redis://127.0.0.1:#{port}"],
        timeout: 500
      )

    assert {:error, %RedixRs.ConnectionError{reason: :closed}} =
             RedixRs.Cluster.command(:nowhere_async, ["PING"], timeout: 10_000)

    RedixRs.Cluster.stop(:nowhere_async)
  end

  describe "routes" do
    setup %{uris: uris} do
      name = :"replicas_#{System.unique_integer([:positive])}"

      {:ok, _} =
        RedixRs.Cluster.start_link(
          name: name,
          nodes: uris,
          read_from_replicas: true,
          sync_connect: true
        )

      # Replica connections are opened after the topology is known: wait for them.
      Cluster.wait!("every replica connected", fn ->
        {_primaries, conns} = RedixRs.Cluster.info(name)
        Enum.count(conns, fn {_, readonly, up} -> readonly and up end) == 3
      end)

      %{rc: name}
    end

    test "route: :replica reads from a replica of the slot, after WAIT 1 1000", %{rc: rc} do
      for i <- 1..10 do
        key = "replica:#{i}"

        # WAIT has no key: it goes with the SET before it, to the key's primary.
        assert {:ok, ["OK", 1]} =
                 RedixRs.Cluster.pipeline(rc, [["SET", key, i], ["WAIT", "1", "1000"]])

        assert {:ok, [value, role]} =
                 RedixRs.Cluster.pipeline(rc, [["GET", key], ["ROLE"]], route: :replica)

        assert value == to_string(i)
        assert hd(role) == "slave"
        assert {:ok, ^value} = RedixRs.Cluster.command(rc, ["GET", key], route: :replica)
      end

      # A write to a replica is refused by it (READONLY replicas redirect writes to the primary:
      # the MOVED is followed).
      assert {:ok, "OK"} = RedixRs.Cluster.command(rc, ["SET", "replica:w", "1"], route: :replica)

      assert {:ok, [_, ["master" | _]]} =
               RedixRs.Cluster.pipeline(rc, [["GET", "replica:1"], ["ROLE"]])
    end

    test "route: :prefer_replica reads from a replica when one is connected, else the primary",
         %{rc: rc} do
      assert {:ok, ["OK", 1]} =
               RedixRs.Cluster.pipeline(rc, [["SET", "prefer:1", "1"], ["WAIT", "1", "1000"]])

      assert {:ok, ["1", role]} =
               RedixRs.Cluster.pipeline(rc, [["GET", "prefer:1"], ["ROLE"]],
                 route: :prefer_replica
               )

      assert hd(role) == "slave"

      # The shared client connects no replica: the primary serves.
      assert {:ok, [_, ["master" | _]]} =
               RedixRs.Cluster.pipeline(:cluster, [["GET", "replica:1"], ["ROLE"]],
                 route: :prefer_replica
               )
    end

    test "route: :replica with no replica connection gives :no_replica_connection" do
      assert {:error, %RedixRs.ConnectionError{reason: :no_replica_connection}} =
               RedixRs.Cluster.command(:cluster, ["GET", "replica:1"], route: :replica)

      # Nowhere to send any command of a pipeline: the same error for the whole call.
      assert {:error, %RedixRs.ConnectionError{reason: :no_replica_connection} = error} =
               RedixRs.Cluster.pipeline(:cluster, for(i <- 1..20, do: ["GET", "replica:#{i}"]),
                 route: :replica
               )

      assert Exception.message(error) =~ "read_from_replicas: true"
    end
  end
end
