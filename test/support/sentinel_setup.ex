defmodule RedixRs.Test.SentinelSetup do
  @moduledoc false
  # A Redis Sentinel deployment for tests, on free ports of 127.0.0.1 (never 6379 or 26379):
  # one primary and one replica (`RedixRs.Test.RedisServer`s, the replica started with
  # `--replicaof`) and three `redis-sentinel` processes monitoring the primary as "mymaster"
  # (quorum 2, down-after 1000 ms, failover-timeout 5000 ms).
  #
  #     setup = SentinelSetup.start(password: "pw", sentinel_password: "spw")
  #     SentinelSetup.sentinel_uris(setup)   #=> ["redis://127.0.0.1:41001", ...]
  #     new_port = SentinelSetup.failover(setup)
  #     SentinelSetup.stop(setup)
  #
  # ## Sentinel processes
  #
  # RedisServer.start/1 cannot run a sentinel (it always runs `redis-server --port ...`, and
  # a sentinel needs its writable config file as the first argument), so sentinels are started
  # here with the same design as RedisServer (see its moduledoc): a `sh` watchdog, opened as an
  # Erlang port by a holder process that monitors the owner, runs redis-sentinel (through
  # `setpriv --pdeathsig KILL` when available) and SIGKILLs it on a "stop" line or when the
  # port closes (owner exit, VM death even by `kill -9`), removing the temp dir in the latter
  # case. Each sentinel is described by a `%RedixRs.Test.RedisServer{}` (with `:password` set
  # to the sentinel password), so `RedisServer.redis_cli/3` and `RedisServer.os_kill/2` work on
  # it; stop one with `stop_sentinel/1` (`RedisServer.restart/1` would start a plain
  # redis-server and must not be used on it).

  alias RedixRs.Test.RedisServer

  @group "mymaster"
  @start_timeout 15_000
  @failover_timeout 30_000
  @sentinel_start_timeout 5_000
  @stop_timeout 5_000
  @port_attempts 5

  @type t :: %{
          primary: RedisServer.t(),
          replica: RedisServer.t(),
          sentinels: [RedisServer.t()],
          group: String.t(),
          password: String.t() | nil,
          sentinel_password: String.t() | nil
        }

  @doc """
  Starts the primary, the replica (and waits until its link to the primary is up) and three
  sentinels, and waits until every sentinel reports the primary, knows the replica and has
  discovered the two other sentinels.

  Options:

    * `:password` - `requirepass` and `masterauth` of the data nodes (and the sentinels'
      `sentinel auth-pass`)
    * `:sentinel_password` - `requirepass` of the sentinels
    * `:tls` - `%{cert:, key:, ca:}` (PEM paths): the sentinels also serve TLS, on the port in each
      sentinel's `:tls_port` field
    * `:owner` - the process whose exit kills everything (default: the caller)
    * `:timeout` - how long to wait for the whole setup (default: 15000 ms)

  Raises (after stopping whatever was started) if the setup is not ready in time.
  """
  @spec start(keyword()) :: t()
  def start(opts \\ []) when is_list(opts) do
    Enum.each(opts, fn
      {key, value} when key in [:password, :sentinel_password] and is_binary(value) -> :ok
      {key, nil} when key in [:password, :sentinel_password] -> :ok
      {:owner, pid} when is_pid(pid) -> :ok
      {:timeout, t} when is_integer(t) and t > 0 -> :ok
      {:tls, %{cert: _, key: _, ca: _}} -> :ok
      other -> raise ArgumentError, "invalid SentinelSetup option: #{inspect(other)}"
    end)

    password = Keyword.get(opts, :password)
    sentinel_password = Keyword.get(opts, :sentinel_password)
    owner = Keyword.get(opts, :owner, self())
    tls = Keyword.get(opts, :tls)
    deadline = now() + Keyword.get(opts, :timeout, @start_timeout)
    # Without a delay, a full sync starts at once instead of after 5 s (the default).
    node_args =
      ["--repl-diskless-sync-delay", "0"] ++
        if(password, do: ["--masterauth", password], else: [])

    # Everything started so far, to stop it if a later step fails.
    started = :ets.new(:sentinel_setup_started, [:public])

    try do
      primary = RedisServer.start(password: password, owner: owner, args: node_args)
      :ets.insert(started, {primary.port, primary})

      replica =
        RedisServer.start(
          password: password,
          owner: owner,
          args: ["--replicaof", "127.0.0.1", Integer.to_string(primary.port)] ++ node_args
        )

      :ets.insert(started, {replica.port, replica})

      await!(deadline, "the replica's link to the primary", fn ->
        info(replica) =~ "master_link_status:up"
      end)

      sentinels =
        for _ <- 1..3 do
          sentinel = start_sentinel(primary.port, password, sentinel_password, owner, tls)
          :ets.insert(started, {sentinel.port, sentinel})
          sentinel
        end

      setup = %{
        primary: primary,
        replica: replica,
        sentinels: sentinels,
        group: @group,
        password: password,
        sentinel_password: sentinel_password
      }

      await!(deadline, "the sentinels to agree on the primary and find each other", fn ->
        Enum.all?(sentinels, &sentinel_ready?(&1, primary.port, replica.port))
      end)

      setup
    rescue
      error ->
        Enum.each(:ets.tab2list(started), fn {_port, server} -> stop_any(server) end)
        reraise error, __STACKTRACE__
    after
      :ets.delete(started)
    end
  end

  @doc "Stops the sentinels, the replica and the primary (already stopped ones are fine)."
  @spec stop(t()) :: :ok
  def stop(%{sentinels: sentinels, primary: primary, replica: replica}) do
    Enum.each(sentinels, &stop_sentinel/1)
    RedisServer.stop(replica)
    RedisServer.stop(primary)
    :ok
  end

  @doc "Stops one sentinel of the setup (kills it and removes its temp dir)."
  @spec stop_sentinel(RedisServer.t()) :: :ok
  def stop_sentinel(%RedisServer{holder: holder, os_pid: os_pid, dir: dir}) do
    monitor = Process.monitor(holder)
    send(holder, {:stop, self(), monitor})

    receive do
      {:DOWN, ^monitor, :process, _pid, _reason} -> :ok
    after
      @stop_timeout ->
        Process.demonitor(monitor, [:flush])
        Process.exit(holder, :kill)
        System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
    end

    receive do
      {^monitor, :stopped} -> :ok
    after
      0 -> :ok
    end

    await_os_exit(os_pid, now() + @stop_timeout)
    File.rm_rf!(dir)
    :ok
  end

  @doc ~S'The sentinels as URIs: `["redis://127.0.0.1:PORT", ...]` (without passwords).'
  @spec sentinel_uris(t()) :: [String.t()]
  def sentinel_uris(%{sentinels: sentinels}),
    do: Enum.map(sentinels, &"redis://127.0.0.1:#{&1.port}")

  @doc "The sentinels as keywords: `[[host: \"127.0.0.1\", port: PORT], ...]`."
  @spec sentinel_keywords(t()) :: [keyword()]
  def sentinel_keywords(%{sentinels: sentinels}),
    do: Enum.map(sentinels, &[host: "127.0.0.1", port: &1.port])

  @doc """
  The port of the primary as the given sentinel (default: the first) reports it, or nil.
  """
  @spec primary_port(t(), RedisServer.t() | nil) :: :inet.port_number() | nil
  def primary_port(setup, sentinel \\ nil) do
    sentinel = sentinel || hd(setup.sentinels)

    case query(sentinel, ["SENTINEL", "get-master-addr-by-name", setup.group]) do
      [_host, port] -> String.to_integer(port)
      _other -> nil
    end
  end

  @doc "The data node (primary or replica struct) that listens on `port`."
  @spec server_on_port(t(), :inet.port_number()) :: RedisServer.t() | nil
  def server_on_port(%{primary: primary, replica: replica}, port) do
    Enum.find([primary, replica], &(&1.port == port))
  end

  @doc ~S'The first element of `ROLE` on a data node: "master" or "slave".'
  @spec role(RedisServer.t()) :: String.t()
  def role(server) do
    [role | _] = query(server, ["ROLE"])
    role
  end

  @doc ~S'The first element of `ROLE` on the server a `RedixRs` connection `conn` is on.'
  @spec role_of(GenServer.server()) :: String.t()
  def role_of(conn) do
    {:ok, [role | _]} = RedixRs.command(conn, ["ROLE"])
    role
  end

  @doc "The port of the server a `RedixRs` connection `conn` is on (its `CONFIG GET port`)."
  @spec port_of(GenServer.server()) :: :inet.port_number()
  def port_of(conn) do
    {:ok, ["port", port]} = RedixRs.command(conn, ["CONFIG", "GET", "port"])
    String.to_integer(port)
  end

  @doc """
  Forces a failover with `SENTINEL FAILOVER mymaster` (sent to the first sentinel, retried
  while it answers an error such as NOGOODSLAVE or INPROG) and waits until every sentinel
  reports the other data node as the primary. Returns the new primary's port.

  Options: `:timeout` (default 30000 ms); `:await_demotion` (default `false`): also wait until
  the former primary reports the replica role (sentinels only reconfigure it some 10 s after
  the switch; until then it still accepts writes); `:via` (default: the first sentinel): the
  sentinel that is sent `SENTINEL FAILOVER`; `:sentinels` (default: all): the sentinels that must
  report the new primary (leave out the stopped ones).
  """
  @spec failover(t(), keyword()) :: :inet.port_number()
  def failover(setup, opts \\ []) do
    deadline = now() + Keyword.get(opts, :timeout, @failover_timeout)
    first = Keyword.get_lazy(opts, :via, fn -> hd(setup.sentinels) end)
    live = Keyword.get(opts, :sentinels, setup.sentinels)
    old_port = primary_port(setup, first) || raise "sentinel #{first.port} reports no primary"

    new_port =
      Enum.find([setup.primary.port, setup.replica.port], &(&1 != old_port)) ||
        raise "the sentinels report an unknown primary: #{old_port}"

    await!(deadline, "SENTINEL FAILOVER to be accepted", fn ->
      case query(first, ["SENTINEL", "FAILOVER", setup.group]) do
        "OK" -> true
        _error -> false
      end
    end)

    await!(deadline, "every sentinel to report the new primary (port #{new_port})", fn ->
      Enum.all?(live, &(safe_primary_port(setup, &1) == new_port))
    end)

    if Keyword.get(opts, :await_demotion, false) do
      old = server_on_port(setup, old_port)

      await!(deadline, "the former primary to become a replica", fn ->
        safe_role(old) == "slave"
      end)
    end

    new_port
  end

  @doc """
  Subscribes to `+switch-master` on `sentinel` over a raw socket (independent of the client
  under test) and sends the caller `{:switch_master, sentinel_port, monotonic_us, fields}` for
  each announcement (`fields`: `[group, old_ip, old_port, new_ip, new_port]`). Returns once the
  subscription is confirmed, with the watcher's pid (linked to the caller; `stop_watch/1`).
  """
  @spec watch_switch_master(RedisServer.t()) :: pid()
  def watch_switch_master(%RedisServer{} = sentinel) do
    caller = self()
    ref = make_ref()

    pid =
      spawn_link(fn ->
        {:ok, socket} =
          :gen_tcp.connect({127, 0, 0, 1}, sentinel.port, [:binary, active: true], 5_000)

        if sentinel.password, do: :gen_tcp.send(socket, resp(["AUTH", sentinel.password]))
        :ok = :gen_tcp.send(socket, resp(["SUBSCRIBE", "+switch-master"]))
        switch_loop(socket, sentinel.port, caller, {ref, sentinel.password != nil}, "")
      end)

    receive do
      {^ref, :subscribed} -> pid
    after
      10_000 -> raise "SentinelSetup: no subscription to +switch-master on #{sentinel.port}"
    end
  end

  defp switch_loop(socket, port, caller, state, buffer) do
    receive do
      {:tcp, ^socket, data} ->
        {values, rest} = decode_all(buffer <> data, [])

        state =
          Enum.reduce(values, state, fn
            "OK", state ->
              state

            ["subscribe", "+switch-master", 1], {ref, _auth} ->
              send(caller, {ref, :subscribed})
              nil

            ["message", "+switch-master", payload], state ->
              at = System.monotonic_time(:microsecond)
              send(caller, {:switch_master, port, at, String.split(payload, " ")})
              state
          end)

        switch_loop(socket, port, caller, state, rest)

      {:tcp_closed, ^socket} ->
        :ok
    end
  end

  @doc """
  Polls `ROLE` on `server` every 2 ms over a raw socket and sends the caller
  `{:promoted, port, monotonic_us}` as soon as it says "master" (then stops). The first answer is
  awaited before this returns the poller's pid (linked; `stop_watch/1`).
  """
  @spec watch_promotion(RedisServer.t()) :: pid()
  def watch_promotion(%RedisServer{} = server) do
    caller = self()
    ref = make_ref()

    pid = spawn_link(fn -> role_loop(nil, server, caller, ref) end)

    receive do
      {^ref, :polling} -> pid
    after
      10_000 -> raise "SentinelSetup: no ROLE answer from #{server.port}"
    end
  end

  # Sentinel promotes a replica with `CLIENT KILL TYPE normal` after `REPLICAOF NO ONE`, in one
  # transaction: a connection closed under the poller is opened again.
  defp role_loop(nil, server, caller, ref) do
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, server.port, [:binary, active: false], 5_000)

    if server.password do
      :ok = :gen_tcp.send(socket, resp(["AUTH", server.password]))
      {:ok, "+OK\r\n"} = :gen_tcp.recv(socket, 0, 5_000)
    end

    role_loop(socket, server, caller, ref)
  end

  defp role_loop(socket, server, caller, ref) do
    at = System.monotonic_time(:microsecond)

    with :ok <- :gen_tcp.send(socket, resp(["ROLE"])),
         {:ok, [[role | _]]} <- recv_values(socket, "") do
      if ref, do: send(caller, {ref, :polling})

      if role == "master" do
        send(caller, {:promoted, server.port, at})
      else
        Process.sleep(2)
        role_loop(socket, server, caller, nil)
      end
    else
      {:error, _closed} ->
        :gen_tcp.close(socket)
        role_loop(nil, server, caller, ref)
    end
  end

  defp recv_values(socket, buffer) do
    with {:ok, data} <- :gen_tcp.recv(socket, 0, 5_000) do
      case decode_all(buffer <> data, []) do
        {[], rest} -> recv_values(socket, rest)
        {values, ""} -> {:ok, values}
      end
    end
  end

  @doc "Stops a watcher started by `watch_switch_master/1` or `watch_promotion/1`."
  @spec stop_watch(pid()) :: :ok
  def stop_watch(pid) do
    Process.unlink(pid)
    Process.exit(pid, :kill)
    :ok
  end

  @doc """
  The number of clients of `sentinel` subscribed to something (`CLIENT LIST` entries with
  `sub` or `psub` above 0): the watchers of redix_rs connections, and those of
  `watch_switch_master/1`.
  """
  @spec subscribers(RedisServer.t()) :: non_neg_integer()
  def subscribers(sentinel) do
    sentinel
    |> query(["CLIENT", "LIST"])
    |> String.split("\n", trim: true)
    |> Enum.count(&(&1 =~ ~r/ (sub|psub)=[1-9]/))
  end

  defp resp(args) do
    ["*#{length(args)}\r\n" | Enum.map(args, &"$#{byte_size(&1)}\r\n#{&1}\r\n")]
  end

  # Every complete value at the front of `buffer`, and the rest.
  defp decode_all(buffer, acc) do
    {value, rest} = decode(buffer)
    decode_all(rest, [value | acc])
  rescue
    _incomplete in [MatchError, FunctionClauseError] -> {Enum.reverse(acc), buffer}
  end

  @doc """
  Runs a command with `RedisServer.redis_cli/3` and decodes the RESP2 reply: simple and bulk
  strings as binaries, integers, nil, arrays as lists, errors as `{:error, message}`.
  """
  @spec query(RedisServer.t(), [String.Chars.t()], keyword()) :: term()
  def query(server, args, opts \\ []) do
    {value, ""} = decode(RedisServer.redis_cli(server, args, opts))
    value
  end

  ## Starting a sentinel

  defp start_sentinel(primary_port, password, sentinel_password, owner, tls) do
    dir = make_temp_dir!()

    try do
      sentinel =
        start_sentinel_on_free_port(
          {primary_port, password, sentinel_password, tls},
          owner,
          dir,
          @port_attempts
        )

      if tls, do: %{sentinel | tls_port: tls_port(dir)}, else: sentinel
    rescue
      error ->
        File.rm_rf(dir)
        reraise error, __STACKTRACE__
    end
  end

  defp start_sentinel_on_free_port(
         {primary_port, password, sentinel_password, tls} = how,
         owner,
         dir,
         left
       ) do
    port = free_port()
    config = Path.join(dir, "sentinel.conf")
    tls_lines = if tls, do: tls_config(tls, dir), else: []

    File.write!(
      config,
      config(port, dir, primary_port, password, sentinel_password) <> Enum.join(tls_lines)
    )

    case launch_sentinel(port, dir, config, sentinel_password, owner) do
      {:ok, sentinel} ->
        sentinel

      {:error, :eaddrinuse, _log} when left > 1 ->
        start_sentinel_on_free_port(how, owner, dir, left - 1)

      {:error, reason, log} ->
        raise "redis-sentinel on port #{port} failed to start (#{inspect(reason)}). Its log:\n#{log}"
    end
  end

  # The TLS port is remembered in the sentinel's directory, for `start_sentinel/5` to report.
  defp tls_config(tls, dir) do
    tls_port = free_port()
    File.write!(Path.join(dir, "tls_port"), Integer.to_string(tls_port))

    [
      "tls-port #{tls_port}\n",
      "tls-cert-file #{tls.cert}\n",
      "tls-key-file #{tls.key}\n",
      "tls-ca-cert-file #{tls.ca}\n",
      "tls-auth-clients no\n"
    ]
  end

  defp tls_port(dir), do: dir |> Path.join("tls_port") |> File.read!() |> String.to_integer()

  defp config(port, dir, primary_port, password, sentinel_password) do
    lines =
      [
        "port #{port}",
        "bind 127.0.0.1",
        "daemonize no",
        "protected-mode no",
        ~s(logfile ""),
        "dir #{dir}",
        "sentinel resolve-hostnames no",
        "sentinel monitor #{@group} 127.0.0.1 #{primary_port} 2",
        "sentinel down-after-milliseconds #{@group} 1000",
        "sentinel failover-timeout #{@group} 5000",
        "sentinel parallel-syncs #{@group} 1"
      ] ++
        if(password, do: ["sentinel auth-pass #{@group} #{password}"], else: []) ++
        if sentinel_password, do: ["requirepass #{sentinel_password}"], else: []

    Enum.map_join(lines, "", &(&1 <> "\n"))
  end

  defp launch_sentinel(port, dir, config, sentinel_password, owner) do
    log_path = Path.join(dir, "sentinel.log")
    File.write!(log_path, "")
    sentinel = System.find_executable("redis-sentinel") || "/usr/bin/redis-sentinel"

    command =
      case System.find_executable("setpriv") do
        nil -> [sentinel, config]
        setpriv -> [setpriv, "--pdeathsig", "KILL", sentinel, config]
      end

    sh_args =
      ["-c", RedisServer.watchdog(), "redix_rs_sentinel_watchdog", dir, log_path] ++ command

    caller = self()
    ref = make_ref()

    {holder, monitor} =
      spawn_monitor(fn -> RedisServer.holder_init(caller, ref, owner, sh_args) end)

    receive do
      {^ref, :started, port_ref, os_pid} ->
        server = %RedisServer{
          port: port,
          os_pid: os_pid,
          dir: dir,
          password: sentinel_password,
          port_ref: port_ref,
          holder: holder,
          owner: owner,
          log_path: log_path,
          start_opts: [sentinel: true]
        }

        await_sentinel_ready(server, monitor, now() + @sentinel_start_timeout)

      {:DOWN, ^monitor, :process, _pid, reason} ->
        {:error, {:watchdog_failed, reason}, read_log(log_path)}
    after
      @sentinel_start_timeout ->
        Process.demonitor(monitor, [:flush])
        Process.exit(holder, :kill)
        {:error, :watchdog_timeout, read_log(log_path)}
    end
  end

  defp await_sentinel_ready(server, monitor, deadline) do
    receive do
      {:DOWN, ^monitor, :process, _pid, _reason} ->
        log = read_log(server.log_path)
        reason = if log =~ "Address already in use", do: :eaddrinuse, else: :exited
        {:error, reason, log}
    after
      0 ->
        cond do
          pong?(server.port) ->
            Process.demonitor(monitor, [:flush])
            {:ok, server}

          now() >= deadline ->
            Process.demonitor(monitor, [:flush])
            log = read_log(server.log_path)
            stop_sentinel(server)
            {:error, :timeout, log}

          true ->
            Process.sleep(20)
            await_sentinel_ready(server, monitor, deadline)
        end
    end
  end

  defp pong?(port) do
    case :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 500) do
      {:ok, socket} ->
        try do
          with :ok <- :gen_tcp.send(socket, "*1\r\n$4\r\nPING\r\n"),
               {:ok, reply} <- :gen_tcp.recv(socket, 0, 1_000) do
            String.starts_with?(reply, ["+PONG", "-NOAUTH"])
          else
            _error -> false
          end
        after
          :gen_tcp.close(socket)
        end

      {:error, _reason} ->
        false
    end
  end

  ## Readiness

  defp sentinel_ready?(sentinel, primary_port, replica_port) do
    safe(fn ->
      [_host, port] = query(sentinel, ["SENTINEL", "get-master-addr-by-name", @group])
      others = query(sentinel, ["SENTINEL", "sentinels", @group])
      replicas = query(sentinel, ["SENTINEL", "replicas", @group])

      String.to_integer(port) == primary_port and length(others) == 2 and
        Enum.any?(replicas, fn fields ->
          info = pairs(fields)
          flags = String.split(info["flags"] || "", ",")

          info["port"] == Integer.to_string(replica_port) and
            "s_down" not in flags and "disconnected" not in flags
        end)
    end)
  end

  defp safe_primary_port(setup, sentinel), do: safe(fn -> primary_port(setup, sentinel) end)
  defp safe_role(server), do: safe(fn -> role(server) end)

  defp info(server), do: safe(fn -> query(server, ["INFO", "replication"]) end) || ""

  defp safe(fun) do
    fun.()
  rescue
    _error -> nil
  catch
    :exit, _reason -> nil
  end

  defp pairs(fields) when is_list(fields) do
    fields |> Enum.chunk_every(2) |> Map.new(fn [k, v] -> {k, v} end)
  end

  defp await!(deadline, what, fun) do
    cond do
      fun.() ->
        :ok

      now() >= deadline ->
        raise "SentinelSetup: timed out waiting for #{what}"

      true ->
        Process.sleep(100)
        await!(deadline, what, fun)
    end
  end

  ## Helpers

  defp stop_any(%RedisServer{start_opts: [sentinel: true]} = sentinel),
    do: safe(fn -> stop_sentinel(sentinel) end)

  defp stop_any(server), do: safe(fn -> RedisServer.stop(server) end)

  defp make_temp_dir! do
    suffix = "#{System.os_time(:nanosecond)}_#{System.unique_integer([:positive])}"
    dir = Path.join(System.tmp_dir!(), "redix_rs_sentinel_#{suffix}")
    File.mkdir_p!(dir)
    dir
  end

  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)
    if port in [6379, 26379], do: free_port(), else: port
  end

  defp read_log(path) do
    case File.read(path) do
      {:ok, log} -> log
      {:error, reason} -> "(cannot read #{path}: #{inspect(reason)})"
    end
  end

  defp await_os_exit(os_pid, deadline) do
    cond do
      not os_alive?(os_pid) ->
        :ok

      now() >= deadline ->
        raise "redis-sentinel (OS pid #{os_pid}) is still running"

      true ->
        Process.sleep(20)
        await_os_exit(os_pid, deadline)
    end
  end

  defp os_alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not String.contains?(stat, ") Z ")
      {:error, _reason} -> false
    end
  end

  defp now, do: System.monotonic_time(:millisecond)

  ## A small RESP2 decoder for redis_cli replies

  defp decode(<<?+, rest::binary>>), do: line(rest)

  defp decode(<<?-, rest::binary>>) do
    {message, rest} = line(rest)
    {{:error, message}, rest}
  end

  defp decode(<<?:, rest::binary>>) do
    {n, rest} = line(rest)
    {String.to_integer(n), rest}
  end

  defp decode(<<?$, rest::binary>>) do
    {length, rest} = line(rest)

    case String.to_integer(length) do
      -1 ->
        {nil, rest}

      length ->
        <<value::binary-size(length), "\r\n", rest::binary>> = rest
        {value, rest}
    end
  end

  defp decode(<<?*, rest::binary>>) do
    {count, rest} = line(rest)

    case String.to_integer(count) do
      -1 ->
        {nil, rest}

      count ->
        {values, rest} =
          Enum.reduce(List.duplicate(nil, count), {[], rest}, fn _, {acc, rest} ->
            {value, rest} = decode(rest)
            {[value | acc], rest}
          end)

        {Enum.reverse(values), rest}
    end
  end

  defp line(data) do
    [line, rest] = :binary.split(data, "\r\n")
    {line, rest}
  end
end
