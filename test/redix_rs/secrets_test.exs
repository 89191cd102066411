defmodule RedixRs.SecretsTest do
  # Passwords never reach logs (issue 18): crash reports and `:sys.get_status/1` of the library's
  # processes, `inspect/1` of their state, `ArgumentError` messages about URIs and options, and the
  # commands in telemetry metadata show "**redacted**" instead. Against real servers: a redis-server
  # with a password of its own, and a Sentinel deployment whose data nodes and sentinels have
  # passwords. Not async: telemetry handlers are global, and logs are captured.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias RedixRs.Test.{RedisServer, SentinelSetup}

  @moduletag timeout: 120_000

  @marker "**redacted**"

  # Characters that a URI must percent-encode, so that both forms can be looked for.
  @password "Plain:Pw@7f3a/9c"
  @data_password "Data-Pw-5e2b81"
  @sentinel_password "Sentinel-Pw-1b8e4d"

  doctest RedixRs.Redact

  setup_all do
    server = RedisServer.start(password: @password)

    sentinels =
      SentinelSetup.start(password: @data_password, sentinel_password: @sentinel_password)

    on_exit(fn ->
      RedisServer.stop(server)
      SentinelSetup.stop(sentinels)
    end)

    %{port: server.port, sentinels: sentinels}
  end

  setup do
    Process.flag(:trap_exit, true)
    :ok
  end

  @doc false
  # A password given as {module, function, args}.
  def password, do: @password

  @doc false
  def charlist, do: String.to_charlist(@password)

  describe "a RedixRs connection" do
    test "with the password as an option", %{port: port} do
      conn = start!(port: port, password: @password)
      assert_redacted(conn, [@password], 1)
    end

    test "with the password in a URI, alone or with a username", %{port: port} do
      encoded = URI.encode(@password, &URI.char_unreserved?/1)
      assert encoded != @password

      for userinfo <- [":" <> encoded, "default:" <> encoded] do
        {:ok, conn} =
          RedixRs.start_link("redis://#{userinfo}@127.0.0.1:#{port}", sync_connect: true)

        assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
        assert_redacted(conn, [@password, encoded], 1)
      end
    end

    test "with the password as {module, function, args}: the MFA is shown", %{port: port} do
      conn = start!(port: port, password: {__MODULE__, :password, []})
      status = status_text(conn)
      assert status =~ "password: {RedixRs.SecretsTest, :password, []}"
      assert_redacted(conn, [@password], 0)
    end

    test "a crash while connecting, with the resolved password among the arguments", %{
      port: port
    } do
      # An MFA that returns a charlist: the native side refuses the options it is given (badarg,
      # whose stack trace holds them, resolved password included).
      log =
        capture_log(fn ->
          {:ok, conn} = RedixRs.start_link(port: port, password: {__MODULE__, :charlist, []})
          assert_receive {:EXIT, ^conn, {:badarg, _stacktrace} = reason}, 5_000
          # The exit reason that linked processes get, too.
          refute_secrets(reason, [@password])
        end)

      assert log =~ "RedixRs.Native.connect(%{"
      assert log =~ ~s(password: "#{@marker}")
      refute_secrets(log, [@password])
    end

    test "format_status/2, for OTP releases older than 25", %{port: port} do
      conn = start!(port: port, password: @password)
      state = :sys.get_state(conn)

      for module <- [RedixRs.Connection, RedixRs.PubSub.Connection] do
        assert [data: [{~c"State", redacted}]] = module.format_status(:normal, [[], state])
        assert redacted.opts[:password] == @marker
        assert module.format_status(:terminate, [[], state]) == redacted
      end
    end

    test "the state itself is unchanged: a reconnection authenticates", %{port: port} do
      conn = start!(port: port, password: @password)
      {:ok, id} = RedixRs.command(conn, ["CLIENT", "ID"])
      {:ok, _} = RedixRs.command(conn, ["CLIENT", "KILL", "ID", Integer.to_string(id)])
      assert wait_for(fn -> match?({:ok, "PONG"}, RedixRs.command(conn, ["PING"])) end)
      assert :sys.get_state(conn).opts[:password] == @password
      assert_redacted(conn, [@password], 1)
    end
  end

  describe "a RedixRs.PubSub connection" do
    test "with the password as an option, then in a URI", %{port: port} do
      {:ok, pubsub} =
        RedixRs.PubSub.start_link(port: port, password: @password, sync_connect: true)

      {:ok, ref} = RedixRs.PubSub.subscribe(pubsub, "secrets:news", self())

      assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: "secrets:news"}},
                     5_000

      assert_redacted(pubsub, [@password], 1)

      encoded = URI.encode(@password, &URI.char_unreserved?/1)
      uri = "redis://:#{encoded}@127.0.0.1:#{port}"
      {:ok, pubsub} = RedixRs.PubSub.start_link(uri, sync_connect: true)
      assert :ok = RedixRs.PubSub.ping(pubsub)
      assert_redacted(pubsub, [@password, encoded], 1)
    end
  end

  describe "through Sentinel" do
    test "sentinel password as an option, data password as an option", %{sentinels: setup} do
      conn =
        start!(
          sentinel: [
            sentinels: SentinelSetup.sentinel_uris(setup),
            group: "mymaster",
            password: @sentinel_password
          ],
          password: @data_password
        )

      assert_redacted(conn, [@data_password, @sentinel_password], 2)
    end

    test "sentinel passwords in URIs and keywords, data password in a URI", %{sentinels: setup} do
      [s1, s2, s3] = setup.sentinels

      sentinel = [
        sentinels: [
          "redis://:#{@sentinel_password}@127.0.0.1:#{s1.port}",
          "redis://default:#{@sentinel_password}@127.0.0.1:#{s2.port}",
          [host: "127.0.0.1", port: s3.port, password: @sentinel_password]
        ],
        group: "mymaster"
      ]

      # A URI with no host gives only the password; :sentinel says where the server is.
      {:ok, conn} =
        RedixRs.start_link("redis://:#{@data_password}@", sentinel: sentinel, sync_connect: true)

      assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
      assert_redacted(conn, [@data_password, @sentinel_password], 4)
    end

    test "a pub/sub connection", %{sentinels: setup} do
      {:ok, pubsub} =
        RedixRs.PubSub.start_link(
          sentinel: [
            sentinels: SentinelSetup.sentinel_keywords(setup),
            group: "mymaster",
            password: @sentinel_password
          ],
          password: @data_password,
          sync_connect: true
        )

      assert :ok = RedixRs.PubSub.ping(pubsub)
      assert_redacted(pubsub, [@data_password, @sentinel_password], 2)
    end
  end

  defmodule Listener do
    use RedixRs.PubSub.Subscriber

    def handle_message(_channel, _payload, state), do: {:noreply, state}

    # Makes its pub/sub connection crash, and crashes with it (the exit reason holds its state).
    def handle_call(:crash_pubsub, _from, state) do
      GenServer.call(state.pubsub, :unknown_message)
      {:reply, :ok, state}
    end
  end

  describe "a RedixRs.PubSub.Subscriber" do
    test "its state and the crash of its pub/sub connection", %{port: port} do
      {:ok, pubsub} =
        RedixRs.PubSub.start_link(port: port, password: @password, sync_connect: true)

      # A state that keeps secrets of its own: a URI and options.
      state = %{
        pubsub: pubsub,
        uri: "redis://:#{@password}@127.0.0.1:#{port}",
        opts: [password: @password]
      }

      {:ok, subscriber} =
        RedixRs.PubSub.Subscriber.start_link(Listener, state, pubsub: pubsub, channels: ["a"])

      assert :ok = RedixRs.PubSub.ping(pubsub)
      status = status_text(subscriber)
      assert status =~ ~s(uri: "redis://:#{@marker}@127.0.0.1:#{port}")
      assert status =~ ~s(opts: [password: "#{@marker}"])
      refute_secrets(status, [@password])
      refute_secrets(:sys.get_status(subscriber), [@password])

      log =
        capture_log(fn ->
          ref = Process.monitor(subscriber)
          catch_exit(GenServer.call(subscriber, :crash_pubsub))
          assert_receive {:DOWN, ^ref, :process, ^subscriber, _reason}, 5_000
          assert_receive {:EXIT, ^pubsub, _reason}, 5_000
        end)

      # Both crash reports: the pub/sub connection's, and the subscriber's (whose reason holds the
      # connection's state, through the stack trace of the call that crashed it).
      assert log =~ "RedixRs.PubSub.Connection.handle_call(:unknown_message"
      assert log =~ "** (stop) exited in: GenServer.call(#{inspect(pubsub)}, :unknown_message"
      assert count(log, ~s(password: "#{@marker}")) >= 4
      refute_secrets(log, [@password])
    end
  end

  describe "ArgumentError messages" do
    test "a URI whose userinfo has no colon (the password, most likely)", %{port: port} do
      uri = "redis://#{@data_password}@127.0.0.1:#{port}"

      for start <- [
            fn -> RedixRs.URI.to_start_options(uri) end,
            fn -> RedixRs.start_link(uri) end,
            fn -> RedixRs.PubSub.start_link(uri) end,
            fn -> RedixRs.start_link(sentinel: [sentinels: [uri], group: "mymaster"]) end
          ] do
        error = assert_raise ArgumentError, start
        assert error.message =~ "redis://:PASSWORD@HOST or redis://USERNAME:PASSWORD@HOST"
        assert error.message =~ "not shown"
        refute_secrets(error.message, [@data_password])
      end
    end

    test "URIs with a password where it cannot be" do
      # A unix:// URI takes no userinfo, nor a password parameter.
      for {uri, expected} <- [
            {"unix://:#{@data_password}@/tmp/redis.sock", ~r/do not accept a username/},
            {"unix:///tmp/redis.sock?password=#{@data_password}", ~r/unknown query parameter/},
            # An unescaped "/" ends the userinfo: the rest of the password is in the path.
            {"redis://:ab/#{@data_password}@localhost/0", ~r/percent-encoded as %2F/}
          ] do
        error = assert_raise ArgumentError, fn -> RedixRs.URI.to_start_options(uri) end
        assert error.message =~ expected
        refute_secrets(error.message, [@data_password])
      end
    end

    test "invalid options that contain a password" do
      charlist = String.to_charlist(@data_password)
      sentinels = ["redis://127.0.0.1:26390"]

      for {opts, expected} <- [
            {[password: charlist], "invalid value for :password option"},
            {[{:password, @data_password}, :not_a_pair], "expected a keyword list of options"},
            {%{password: @data_password}, "expected a keyword list of options"},
            {[sentinel: [sentinels: sentinels, group: "g", password: charlist]],
             "expected a sentinel password"},
            {[sentinel: %{sentinels: sentinels, password: @data_password}],
             "expected :sentinel to be a keyword list"},
            {[
               sentinel: [sentinels: [[host: "h", port: 0, password: @data_password]], group: "g"]
             ], "invalid sentinel address"},
            {[sentinel: [sentinels: "redis://:#{@data_password}@h:1", group: "g"]],
             "expected :sentinels in :sentinel"},
            {[sentinel: [sentinels: [{:password, @data_password}], group: "g"]],
             "expected each sentinel to be a URI or a keyword list"}
          ] do
        error = assert_raise ArgumentError, fn -> RedixRs.start_link(opts) end
        assert error.message =~ expected
        refute_secrets(error.message, [@data_password, inspect(charlist)])
      end
    end
  end

  describe "telemetry" do
    setup do
      id = "redix_rs-secrets-test-#{System.unique_integer([:positive])}"
      events = [[:redix_rs, :pipeline, :start], [:redix_rs, :pipeline, :stop]]
      :ok = :telemetry.attach_many(id, events, &__MODULE__.forward/4, self())
      on_exit(fn -> :telemetry.detach(id) end)
    end

    @doc false
    def forward(event, _measurements, metadata, test_pid) do
      send(test_pid, {:telemetry, event, metadata})
    end

    test "a user-sent AUTH, and HELLO ... AUTH, have their passwords redacted", %{port: port} do
      {:ok, conn} = RedixRs.start_link(port: port, sync_connect: true)
      other = "Other-Pw-93c1"

      # The server checks the passwords: these are the real commands, run for real.
      assert {:ok, "OK"} = RedixRs.command(conn, ["AUTH", @password])
      assert_commands(conn, [["AUTH", @marker]])

      assert {:ok, "OK"} = RedixRs.command(conn, ["auth", "default", @password])
      assert_commands(conn, [["auth", "default", @marker]])

      assert {:error, %RedixRs.Error{message: "WRONGPASS" <> _}} =
               RedixRs.command(conn, [:Auth, other])

      assert_commands(conn, [[:Auth, @marker]])

      hello = ["HELLO", "2", "AUTH", "default", @password, "SETNAME", "secrets-test"]
      assert {:ok, [_ | _]} = RedixRs.command(conn, hello)

      assert_commands(conn, [
        ["HELLO", "2", "AUTH", "default", @marker, "SETNAME", "secrets-test"]
      ])

      # In pipelines, transactions and noreply pipelines, among other commands left as they are.
      assert {:ok, ["OK", "PONG"]} = RedixRs.pipeline(conn, [["AUTH", @password], ["PING"]])
      assert_commands(conn, [["AUTH", @marker], ["PING"]])

      assert {:ok, ["OK", "PONG"]} =
               RedixRs.transaction_pipeline(conn, [["AUTH", @password], ["PING"]])

      assert_commands(conn, [["MULTI"], ["AUTH", @marker], ["PING"], ["EXEC"]])

      assert :ok = RedixRs.noreply_command(conn, ["hello", "2", "auth", "default", @password])

      assert_commands(conn, [
        ["CLIENT", "REPLY", "OFF"],
        ["hello", "2", "auth", "default", @marker],
        ["CLIENT", "REPLY", "ON"]
      ])

      # Nothing else in the metadata changes: other commands are the very list sent.
      commands = [["SET", "secrets:key", "v"], ["GET", "secrets:key"]]
      assert {:ok, ["OK", "v"]} = RedixRs.pipeline(conn, commands)
      assert_commands(conn, commands)
    end

    test "invalid commands still raise, with no event", %{port: port} do
      {:ok, conn} = RedixRs.start_link(port: port, sync_connect: true)

      for commands <- [[["AUTH" | "improper"]], [["AUTH"] | :improper], [[]], :not_a_list] do
        assert_raise ArgumentError, fn -> RedixRs.pipeline(conn, commands) end
      end

      refute_received {:telemetry, _, %{connection: ^conn}}
    end
  end

  describe "RedixRs.Redact.commands/1" do
    test "looks at the first element of each command only, in any case and type" do
      assert RedixRs.Redact.commands([["AUTH", "pw"], ["SET", "AUTH", "pw"]]) ==
               [["AUTH", @marker], ["SET", "AUTH", "pw"]]

      assert RedixRs.Redact.commands([[~c"aUtH", "u", "pw"], [:hello, 3, :auth, "u", "pw"]]) ==
               [[~c"aUtH", "u", @marker], [:hello, 3, :auth, "u", @marker]]

      # Odd arities: every argument of AUTH; HELLO's AUTH with too few arguments.
      assert RedixRs.Redact.commands([["AUTH", "a", "b", "c"], ["HELLO", "3", "AUTH", "pw"]]) ==
               [["AUTH", @marker, @marker, @marker], ["HELLO", "3", "AUTH", @marker]]

      # Same list back when nothing is secret (no copy on the hot path).
      commands = Enum.map(1..1_000, &["SET", "k#{&1}", "v"])
      assert :erts_debug.same(RedixRs.Redact.commands(commands), commands)
    end
  end

  describe "RedixRs.Redact.term/1" do
    test "URIs in text and in %URI{}, sentinel tuples, MFAs" do
      assert RedixRs.Redact.uri(~s(at "redis://u:p@ss@h:1/0" and rediss://pw@h)) ==
               ~s(at "redis://u:#{@marker}@h:1/0" and rediss://#{@marker}@h)

      uri = RedixRs.Redact.term(URI.parse("redis://u:p%40ss@h:1"))
      assert {uri.userinfo, uri.authority, uri.host} == {"u:#{@marker}", "u:#{@marker}@h:1", "h"}

      assert RedixRs.Redact.term(%{
               sentinels: [{"h", 1, "pw"}, {"h", 2, nil}],
               password: {M, :f, []}
             }) ==
               %{sentinels: [{"h", 1, @marker}, {"h", 2, nil}], password: {M, :f, []}}

      # Improper lists and other terms go through.
      assert RedixRs.Redact.term([{:password, "pw"} | {:password, "pw"}]) ==
               [{:password, @marker} | {:password, @marker}]
    end
  end

  ## Helpers

  defp start!(opts) do
    {:ok, conn} = RedixRs.start_link([sync_connect: true] ++ opts)
    assert {:ok, "PONG"} = RedixRs.command(conn, ["PING"])
    conn
  end

  # The password is nowhere in `:sys.get_status/1`, `inspect/1` of the state, or the log of the
  # process's crash; the marker shows at least `markers` times in the status (0: not checked).
  defp assert_redacted(pid, secrets, markers) do
    status = :sys.get_status(pid)
    refute_secrets(status, secrets)
    text = status_text(pid)
    refute_secrets(text, secrets)
    assert count(text, ~s("#{@marker}")) >= markers

    state_text = inspect(:sys.get_state(pid), limit: :infinity, printable_limit: :infinity)
    refute_secrets(state_text, secrets)
    assert count(state_text, ~s("#{@marker}")) >= markers

    log = crash_log(pid)
    assert log =~ "terminating"
    assert log =~ "(FunctionClauseError) no function clause matching"
    assert log =~ "State: %"
    # The state is printed twice: as the crash's argument and as "State:".
    assert count(log, ~s("#{@marker}")) >= 2 * markers
    refute_secrets(log, secrets)
  end

  defp status_text(pid),
    do: inspect(:sys.get_status(pid), limit: :infinity, printable_limit: :infinity)

  # Crashes `pid` with a call it does not handle; returns the log.
  defp crash_log(pid) do
    capture_log(fn ->
      ref = Process.monitor(pid)
      {{:function_clause, _}, _} = catch_exit(GenServer.call(pid, :unknown_message))
      assert_receive {:DOWN, ^ref, :process, ^pid, _reason}, 5_000
    end)
  end

  # Neither in a text nor anywhere in a term (binaries and charlists keep their bytes in the
  # external term format).
  defp refute_secrets(text, secrets) when is_binary(text) do
    for secret <- secrets, do: refute(text =~ secret, "#{inspect(secret)} found in:\n#{text}")
  end

  defp refute_secrets(term, secrets) do
    binary = :erlang.term_to_binary(term)
    for secret <- secrets, do: assert(:binary.match(binary, secret) == :nomatch)
  end

  defp count(text, part), do: length(:binary.matches(text, part))

  defp assert_commands(conn, commands) do
    assert_receive {:telemetry, [:redix_rs, :pipeline, :start], %{connection: ^conn} = start},
                   5_000

    assert_receive {:telemetry, [:redix_rs, :pipeline, :stop], %{connection: ^conn} = stop}, 5_000
    assert start.commands == commands
    assert stop.commands == commands
  end

  defp wait_for(fun, tries \\ 250) do
    cond do
      fun.() -> true
      tries == 0 -> false
      true -> Process.sleep(20) && wait_for(fun, tries - 1)
    end
  end
end
