defmodule RedixRs.SentinelTest do
  # `RedixRs.start_link(sentinel: [...])` against a real Sentinel deployment (a primary, a
  # replica and three redis-sentinel processes, see RedixRs.Test.SentinelSetup), on free ports.
  # One deployment is shared by the tests that do not change it; the failover tests and the
  # password tests start their own. Not async: telemetry handlers are global and failovers take
  # seconds.
  use ExUnit.Case, async: false

  import RedixRs.Test.Helpers, only: [closed_port: 0]

  # Sentinels are dead on purpose, connections are killed by failovers.
  @moduletag :capture_log
  @moduletag timeout: 120_000

  alias RedixRs.ConnectionError
  alias RedixRs.Test.{RedisServer, SentinelSetup}

  import RedixRs.Test.SentinelSetup, only: [role_of: 1, port_of: 1]

  setup_all do
    setup = SentinelSetup.start()
    on_exit(fn -> SentinelSetup.stop(setup) end)
    %{setup: setup}
  end

  describe "connecting through sentinels" do
    test "to the primary, with the sentinels as URIs", %{setup: setup} do
      conn = start_conn!(sentinels: SentinelSetup.sentinel_uris(setup), group: "mymaster")

      assert role_of(conn) == "master"
      assert port_of(conn) == setup.primary.port
      assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    end

    test "to the primary, with the sentinels as keywords and role: :primary", %{setup: setup} do
      conn =
        start_conn!(
          sentinels: SentinelSetup.sentinel_keywords(setup),
          group: "mymaster",
          role: :primary,
          timeout: 2_000
        )

      assert role_of(conn) == "master"
      assert port_of(conn) == setup.primary.port
      key = "sentinel:write:#{System.unique_integer([:positive])}"
      assert {:ok, "OK"} = RedixRs.command(conn, ["SET", key, "1"])
    end

    test "role: :replica connects to the replica", %{setup: setup} do
      conn =
        start_conn!(
          sentinels: SentinelSetup.sentinel_uris(setup),
          group: "mymaster",
          role: :replica
        )

      assert role_of(conn) == "slave"
      assert port_of(conn) == setup.replica.port

      assert {:error, %RedixRs.Error{message: "READONLY" <> _}} =
               RedixRs.command(conn, ["SET", "sentinel:on_replica", "1"])
    end

    test "the top-level options (here :database) apply to the data node", %{setup: setup} do
      conn =
        start_conn!([sentinels: SentinelSetup.sentinel_uris(setup), group: "mymaster"],
          database: 3
        )

      key = "sentinel:db:#{System.unique_integer([:positive])}"
      assert {:ok, "OK"} = RedixRs.command(conn, ["SET", key, "in db 3"])
      assert {:ok, "in db 3"} = RedixRs.command(conn, ["GET", key])
      # Not in database 0 of the primary.
      assert SentinelSetup.query(setup.primary, ["EXISTS", key]) == 0
      assert port_of(conn) == setup.primary.port
    end

    test "a dead first sentinel is skipped", %{setup: setup} do
      dead = closed_port()
      sentinels = ["redis://127.0.0.1:#{dead}" | SentinelSetup.sentinel_uris(setup)]
      conn = start_conn!(sentinels: sentinels, group: "mymaster", timeout: 2_000)

      assert role_of(conn) == "master"
      assert port_of(conn) == setup.primary.port

      # Also when the dead ones are keywords, and only the last sentinel is alive.
      [_, _, last] = SentinelSetup.sentinel_keywords(setup)

      sentinels = [
        [host: "127.0.0.1", port: closed_port()],
        [host: "127.0.0.1", port: dead],
        last
      ]

      conn = start_conn!(sentinels: sentinels, group: "mymaster", timeout: 2_000)
      assert port_of(conn) == setup.primary.port
    end

    test "all sentinels down: :no_viable_sentinel_connection" do
      Process.flag(:trap_exit, true)
      sentinels = [[host: "127.0.0.1", port: closed_port()], "redis://127.0.0.1:#{closed_port()}"]

      assert {:error, %ConnectionError{reason: :no_viable_sentinel_connection}} =
               RedixRs.start_link(
                 sentinel: [sentinels: sentinels, group: "mymaster", timeout: 500],
                 sync_connect: true
               )
    end

    test "an unknown group", %{setup: setup} do
      Process.flag(:trap_exit, true)

      assert {:error, %ConnectionError{reason: reason}} =
               RedixRs.start_link(
                 sentinel: [sentinels: SentinelSetup.sentinel_uris(setup), group: "nosuchgroup"],
                 sync_connect: true
               )

      # Redix 1.5.3 reports :no_viable_sentinel_connection (each sentinel's nil answer is a
      # per-sentinel :sentinel_no_primary_found that moves on to the next one).
      assert reason in [:sentinel_no_primary_found, :no_viable_sentinel_connection]
      IO.puts("\n[sentinel] unknown group -> reason #{inspect(reason)}")
    end

    test "the sentinel's :timeout bounds a sentinel that does not answer", %{setup: setup} do
      # A listener that accepts connections but never answers: it stands for a hung sentinel.
      {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1}, active: false, backlog: 16)
      {:ok, hung} = :inet.port(listener)
      sentinels = ["redis://127.0.0.1:#{hung}" | SentinelSetup.sentinel_uris(setup)]

      {micros, conn} =
        :timer.tc(fn -> start_conn!(sentinels: sentinels, group: "mymaster", timeout: 300) end)

      assert port_of(conn) == setup.primary.port
      assert div(micros, 1000) < 3_000
      :gen_tcp.close(listener)
    end
  end

  describe "options" do
    test ":host or :port together with :sentinel", %{setup: setup} do
      sentinel = [sentinels: SentinelSetup.sentinel_uris(setup), group: "mymaster"]
      message = ~r/:host or :port can't be passed as option if :sentinel is used/

      assert_raise ArgumentError, message, fn ->
        RedixRs.start_link(sentinel: sentinel, host: "127.0.0.1")
      end

      assert_raise ArgumentError, message, fn ->
        RedixRs.start_link(sentinel: sentinel, port: setup.primary.port)
      end
    end

    test "each sentinel needs a host and a port" do
      assert_raise ArgumentError, ~r/a host should be specified for each sentinel/, fn ->
        RedixRs.start_link(sentinel: [sentinels: [[port: 26_380]], group: "mymaster"])
      end

      assert_raise ArgumentError, ~r/a port should be specified for each sentinel/, fn ->
        RedixRs.start_link(sentinel: [sentinels: [[host: "127.0.0.1"]], group: "mymaster"])
      end
    end

    test ":group is required, :sentinels must be a non-empty list, :role primary or replica" do
      sentinels = ["redis://127.0.0.1:26380"]

      assert_raise ArgumentError, fn -> RedixRs.start_link(sentinel: [sentinels: sentinels]) end

      assert_raise ArgumentError, fn ->
        RedixRs.start_link(sentinel: [sentinels: [], group: "mymaster"])
      end

      assert_raise ArgumentError, fn -> RedixRs.start_link(sentinel: [group: "mymaster"]) end

      assert_raise ArgumentError, fn ->
        RedixRs.start_link(sentinel: [sentinels: sentinels, group: "mymaster", role: :master])
      end
    end
  end

  describe "telemetry" do
    setup do
      id = "redix_rs-sentinel-test-#{System.unique_integer([:positive])}"
      test_pid = self()

      :ok =
        :telemetry.attach(
          id,
          [:redix_rs, :failed_connection],
          fn event, measurements, metadata, _config ->
            send(test_pid, {:telemetry, event, measurements, metadata})
          end,
          nil
        )

      on_exit(fn -> :telemetry.detach(id) end)
      :ok
    end

    test "[:redix_rs, :failed_connection] with :sentinel_address for a dead sentinel",
         %{setup: setup} do
      dead = closed_port()
      address = "127.0.0.1:#{dead}"
      sentinels = ["redis://#{address}" | SentinelSetup.sentinel_uris(setup)]
      conn = start_conn!(sentinels: sentinels, group: "mymaster")
      assert port_of(conn) == setup.primary.port

      assert_receive {:telemetry, [:redix_rs, :failed_connection], measurements,
                      %{sentinel_address: ^address} = metadata},
                     2_000

      assert measurements == %{}
      assert metadata.connection == conn
      assert metadata.connection_name == nil
      assert %ConnectionError{} = metadata.reason

      assert Enum.sort(Map.keys(metadata)) == [
               :connection,
               :connection_name,
               :reason,
               :sentinel_address
             ]

      # Only the dead sentinel failed.
      refute_received {:telemetry, [:redix_rs, :failed_connection], _, %{connection: ^conn}}
    end

    test "the sentinel that answered is asked first at the next connection", %{setup: setup} do
      dead = closed_port()
      address = "127.0.0.1:#{dead}"
      sentinels = ["redis://#{address}" | SentinelSetup.sentinel_uris(setup)]
      conn = start_conn!([sentinels: sentinels, group: "mymaster"], backoff_initial: 50)

      assert_receive {:telemetry, [:redix_rs, :failed_connection], _,
                      %{sentinel_address: ^address}},
                     2_000

      {:ok, id} = RedixRs.command(conn, ["CLIENT", "ID"])
      RedisServer.redis_cli(setup.primary, ["CLIENT", "KILL", "ID", Integer.to_string(id)])

      # Reconnected (a new client id) without asking the dead sentinel first this time.
      assert Enum.any?(1..250, fn _ ->
               Process.sleep(20)
               match?({:ok, new_id} when new_id != id, RedixRs.command(conn, ["CLIENT", "ID"]))
             end)

      refute_received {:telemetry, [:redix_rs, :failed_connection], _,
                       %{sentinel_address: ^address}}
    end

    test "a failed round reports every sentinel, then address \"sentinel\"" do
      dead = [closed_port(), closed_port()]
      sentinels = Enum.map(dead, &[host: "127.0.0.1", port: &1])

      {:ok, conn} =
        RedixRs.start_link(
          sentinel: [sentinels: sentinels, group: "mymaster", timeout: 500],
          backoff_initial: 60_000
        )

      for port <- dead do
        address = "127.0.0.1:#{port}"

        assert_receive {:telemetry, [:redix_rs, :failed_connection], %{},
                        %{connection: ^conn, sentinel_address: ^address}},
                       5_000
      end

      assert_receive {:telemetry, [:redix_rs, :failed_connection], %{},
                      %{connection: ^conn, address: "sentinel"} = metadata},
                     5_000

      assert metadata.reason == %ConnectionError{reason: :no_viable_sentinel_connection}
      RedixRs.stop(conn)
    end
  end

  describe "passwords" do
    setup do
      setup = SentinelSetup.start(password: "pw", sentinel_password: "spw")
      on_exit(fn -> SentinelSetup.stop(setup) end)
      %{auth_setup: setup}
    end

    test "sentinel: [password: ...] for the sentinels, :password for the data node",
         %{auth_setup: setup} do
      conn =
        start_conn!(
          [sentinels: SentinelSetup.sentinel_uris(setup), group: "mymaster", password: "spw"],
          password: "pw"
        )

      assert role_of(conn) == "master"
      assert port_of(conn) == setup.primary.port

      conn =
        start_conn!(
          [
            sentinels: SentinelSetup.sentinel_uris(setup),
            group: "mymaster",
            role: :replica,
            password: "spw"
          ],
          password: "pw"
        )

      assert role_of(conn) == "slave"
      assert port_of(conn) == setup.replica.port
    end

    test "a password per sentinel, in a keyword or in the URI", %{auth_setup: setup} do
      [s1, s2, _] = setup.sentinels

      # The first sentinel has a wrong password of its own (it wins over the global one); the
      # second one gets its password from its URI.
      sentinels = [
        [host: "127.0.0.1", port: s1.port, password: "wrong"],
        "redis://:spw@127.0.0.1:#{s2.port}"
      ]

      conn = start_conn!([sentinels: sentinels, group: "mymaster"], password: "pw")
      assert port_of(conn) == setup.primary.port

      conn =
        start_conn!(
          [
            sentinels: [[host: "127.0.0.1", port: s1.port, password: "spw"]],
            group: "mymaster",
            password: "wrong"
          ],
          password: "pw"
        )

      assert port_of(conn) == setup.primary.port
    end

    test "no or a wrong sentinel password: no viable sentinel", %{auth_setup: setup} do
      Process.flag(:trap_exit, true)
      uris = SentinelSetup.sentinel_uris(setup)

      for sentinel <- [[sentinels: uris], [sentinels: uris, password: "wrong"]] do
        assert {:error, %ConnectionError{reason: :no_viable_sentinel_connection}} =
                 RedixRs.start_link(
                   sentinel: [group: "mymaster"] ++ sentinel,
                   password: "pw",
                   sync_connect: true
                 )
      end
    end
  end

  describe "failover" do
    setup do
      setup = SentinelSetup.start()
      on_exit(fn -> SentinelSetup.stop(setup) end)
      %{fo_setup: setup}
    end

    # Each step of the stream is a pipeline of INCR and CONFIG GET port, so that every INCR
    # result comes with the port of the server that produced it (the two replies come from the
    # same connection).
    test "SENTINEL FAILOVER during a stream of INCRs", %{fo_setup: setup} do
      %{primary: %{port: old_port}, replica: %{port: new_port}} = setup

      conn =
        start_conn!([sentinels: SentinelSetup.sentinel_uris(setup), group: "mymaster"],
          backoff_initial: 100
        )

      monitor = Process.monitor(conn)
      assert port_of(conn) == old_port

      stream = start_stream(conn, new_port)
      Process.sleep(500)
      failover_started = now()
      assert SentinelSetup.failover(setup) == new_port
      failover_done = now()
      entries = Task.await(stream, 100_000)

      # Same process all along, and now on the new primary.
      refute_received {:DOWN, ^monitor, :process, _, _}
      assert Process.alive?(conn)
      assert port_of(conn) == new_port
      assert role_of(conn) == "master"

      stats = check_stream!(entries, old_port, new_port, failover_started)

      # SENTINEL FAILOVER promotes the replica at once but leaves the former primary alone: the
      # sentinels demote it (REPLICAOF + CLIENT KILL) only once it has reported the master role
      # for 8 s, so for about 10 s it still accepts writes from clients that stay connected to
      # it (Redix's algorithm only asks the sentinels when it (re)connects; redix_rs leaves it
      # at the announcement, see sentinel_failover_test.exs). Those writes are
      # lost when it resyncs from the new primary, which counts on from the promotion: the same
      # INCR values come back a second time, from another server. That is Redis's behaviour,
      # reported here; within each server the values never repeat (checked above).
      values_before = for {t, {:ok, n, ^old_port}} <- entries, t < failover_started, do: n
      [first_new | _] = for {_t, {:ok, n, ^new_port}} <- entries, do: n
      assert first_new > List.last(values_before)

      IO.puts("""

      [sentinel] SENTINEL FAILOVER during INCRs (backoff_initial: 100): \
      failover/1 took #{failover_done - failover_started} ms; \
      commands failed for #{stats.gap} ms (#{stats.errors} errors: #{inspect(stats.reasons)}); \
      first INCR on the new primary #{stats.first_new - failover_started} ms after \
      SENTINEL FAILOVER; #{stats.old_after} INCRs acknowledged by the former primary after \
      the failover started, #{stats.duplicates} values returned twice (lost writes)\
      """)

      assert stats.gap < 15_000
    end

    test "the primary dies during a stream of INCRs", %{fo_setup: setup} do
      %{primary: %{port: old_port}, replica: %{port: new_port}} = setup

      conn =
        start_conn!([sentinels: SentinelSetup.sentinel_uris(setup), group: "mymaster"],
          backoff_initial: 100,
          backoff_max: 500
        )

      monitor = Process.monitor(conn)
      assert port_of(conn) == old_port

      stream = start_stream(conn, new_port)
      Process.sleep(500)
      killed = now()
      RedisServer.stop(setup.primary)
      entries = Task.await(stream, 100_000)

      refute_received {:DOWN, ^monitor, :process, _, _}
      assert port_of(conn) == new_port
      assert role_of(conn) == "master"

      stats = check_stream!(entries, old_port, new_port, killed)

      # The former primary is gone, so nothing was written to it after the failover: every
      # value appears once, and in increasing order across both servers.
      values = for {_t, {:ok, n, _port}} <- entries, do: n
      assert values == Enum.uniq(values)
      assert values == Enum.sort(values)

      IO.puts("""

      [sentinel] primary killed during INCRs (backoff_initial: 100, backoff_max: 500): \
      commands failed for #{stats.gap} ms (#{stats.errors} errors: #{inspect(stats.reasons)}); \
      first INCR on the new primary #{stats.first_new - killed} ms after the kill\
      """)

      assert stats.gap < 15_000
    end
  end

  ## Helpers

  defp start_conn!(sentinel, opts \\ []) do
    start_supervised!(
      {RedixRs, [sentinel: sentinel, sync_connect: true] ++ opts},
      id: make_ref()
    )
  end

  defp now, do: System.monotonic_time(:millisecond)

  # INCR (with the server's port) in a loop, each call with timeout: 1_000, until the new
  # primary has answered for 1 s without an error in between (or 90 s have passed). Returns
  # [{monotonic ms, {:ok, n, port} | {:redis_error, message, port} | {:error, reason}}].
  defp start_stream(conn, new_port) do
    key = "sentinel:counter:#{System.unique_integer([:positive])}"
    Task.async(fn -> stream_loop(conn, key, new_port, now() + 90_000, nil, []) end)
  end

  defp stream_loop(conn, key, new_port, deadline, since, acc) do
    t = now()

    entry =
      case RedixRs.pipeline(conn, [["INCR", key], ["CONFIG", "GET", "port"]], timeout: 1_000) do
        {:ok, [n, ["port", port]]} when is_integer(n) ->
          {t, {:ok, n, String.to_integer(port)}}

        {:ok, [%RedixRs.Error{message: message}, ["port", port]]} ->
          {t, {:redis_error, message, String.to_integer(port)}}

        {:error, %ConnectionError{reason: reason}} ->
          {t, {:error, reason}}

        other ->
          {t, {:unexpected, other}}
      end

    acc = [entry | acc]
    since = if match?({_, {:ok, _, ^new_port}}, entry), do: since || t, else: nil

    cond do
      since != nil and t - since >= 1_000 ->
        Enum.reverse(acc)

      t > deadline ->
        flunk("the new primary did not answer for 1 s in 90 s: #{inspect(Enum.take(acc, 20))}")

      true ->
        Process.sleep(5)
        stream_loop(conn, key, new_port, deadline, since, acc)
    end
  end

  # Checks what holds for any failover and returns timings:
  #   * every reply has the expected shape (no reply given to the wrong call);
  #   * on each server, the INCR values are strictly increasing;
  #   * once a call succeeded on the new primary, no call goes to the former primary again;
  #   * the stream ends on the new primary.
  # gap: from the first failed call after `started` to the first success after it (0 if no
  # call failed).
  defp check_stream!(entries, old_port, new_port, started) do
    assert [] == for({_t, {:unexpected, _}} = e <- entries, do: e)

    for port <- [old_port, new_port] do
      values = for {_t, {:ok, n, ^port}} <- entries, do: n
      assert values == Enum.uniq(values), "INCR values repeated on port #{port}"
      assert values == Enum.sort(values), "INCR values not increasing on port #{port}"
    end

    {_before, [{first_new, _} | after_new]} =
      Enum.split_while(entries, &(not match?({_, {:ok, _, ^new_port}}, &1)))

    assert [] == for({_t, {_, _, ^old_port}} = e <- after_new, do: e)
    assert {_, {:ok, _, ^new_port}} = List.last(entries)

    after_start = Enum.drop_while(entries, fn {t, _} -> t < started end)
    failures = for {_t, result} = e <- after_start, not match?({:ok, _, _}, result), do: e

    gap =
      case failures do
        [] ->
          0

        [{first_error, _} | _] ->
          {recovered, _} =
            Enum.find(after_start, fn {t, result} ->
              t > first_error and match?({:ok, _, _}, result)
            end)

          recovered - first_error
      end

    old_after = for {t, {:ok, n, ^old_port}} <- entries, t >= started, do: n
    new_values = for {_t, {:ok, n, ^new_port}} <- entries, do: n

    %{
      gap: gap,
      errors: length(failures),
      reasons:
        failures
        |> Enum.map(fn
          {_t, {:error, reason}} -> reason
          {_t, {:redis_error, message, _port}} -> message |> String.split() |> hd()
        end)
        |> Enum.frequencies(),
      first_new: first_new,
      old_after: length(old_after),
      duplicates: length(old_after -- old_after -- new_values)
    }
  end

  describe "sentinel option validation" do
    test "socket options, TLS options and passwords are checked when starting" do
      base = [sentinels: ["redis://127.0.0.1:26390"], group: "mymaster"]

      assert_raise ArgumentError, ~r/socket_opts/, fn ->
        RedixRs.start_link(sentinel: base ++ [socket_opts: :binary])
      end

      assert_raise ArgumentError, ~r/verify_fun/, fn ->
        RedixRs.start_link(
          sentinel: base ++ [ssl: true, socket_opts: [verify_fun: {&is_atom/1, nil}]]
        )
      end

      assert_raise ArgumentError, ~r/need ssl: true/, fn ->
        RedixRs.start_link(sentinel: base ++ [socket_opts: [cacertfile: "/tmp/x.pem"]])
      end

      assert_raise ArgumentError, ~r/sentinel password/, fn ->
        RedixRs.start_link(sentinel: base ++ [password: 123])
      end
    end
  end

  describe "TLS to the sentinels" do
    @tag :tmp_dir
    test "sentinel: [ssl: true, socket_opts: [cacertfile: ...]] asks the sentinels over TLS", %{
      tmp_dir: dir
    } do
      certs = RedixRs.Test.TLSCerts.generate!(dir)
      setup = SentinelSetup.start(tls: %{cert: certs.cert, key: certs.key, ca: certs.ca})

      try do
        sentinels = Enum.map(setup.sentinels, &[host: "127.0.0.1", port: &1.tls_port])

        {:ok, conn} =
          RedixRs.start_link(
            sentinel: [
              sentinels: sentinels,
              group: setup.group,
              ssl: true,
              socket_opts: [cacertfile: certs.ca]
            ],
            sync_connect: true
          )

        assert {:ok, ["port", port]} = RedixRs.command(conn, ["CONFIG", "GET", "port"])
        assert String.to_integer(port) == setup.primary.port

        # Without the CA the sentinels cannot be trusted: no viable sentinel.
        Process.flag(:trap_exit, true)

        assert {:error, %RedixRs.ConnectionError{reason: :no_viable_sentinel_connection}} =
                 RedixRs.start_link(
                   sentinel: [sentinels: sentinels, group: setup.group, ssl: true],
                   sync_connect: true
                 )
      after
        SentinelSetup.stop(setup)
      end
    end
  end
end
