defmodule RedixRs.Test.RedisServer do
  @moduledoc false
  # Starts and stops real `redis-server` processes for tests.
  #
  # Every server listens on a free port of 127.0.0.1 (never 6379), keeps nothing on disk
  # (`--save "" --appendonly no`) and runs in a fresh temporary directory that also holds
  # its log (`redis.log`) and, with `unix_socket: true`, its Unix socket (`redis.sock`).
  # With `tls: [...]` it also serves TLS on a second free port (`:tls_port`); the plain port stays
  # open for readiness checks and `redis_cli/3`.
  #
  # ## Lifetime and the watchdog
  #
  # redis-server is not spawned by the VM directly but by a small `sh` watchdog, opened as an
  # Erlang port (see `@watchdog` below):
  #
  #   * the watchdog starts redis-server in the background (through
  #     `setpriv --pdeathsig KILL` when available, so redis also dies if the watchdog itself
  #     is killed), prints its OS pid on stdout and waits for it;
  #   * a watcher subshell blocks reading the port's stdin: a line (`stop/1`) makes it
  #     SIGKILL redis-server; end of file (the port closed: its owner process or the whole VM
  #     died, even with `kill -9`) makes it SIGKILL redis-server and remove the temp dir;
  #   * when redis-server exits, for whatever reason, the watchdog exits with its status.
  #
  # The port is owned by a "holder" process that monitors the owner (the caller of `start/1`
  # unless `owner: pid` is given): when the owner exits, the holder exits, the port closes
  # and the watchdog kills the server. So a server started in a test or in `setup` dies with
  # the test, one started in `setup_all` with the test module; `stop/1` is still the tidy
  # way. The holder keeps the port messages out of the owner's mailbox.

  defstruct [
    :port,
    :tls_port,
    :unix_path,
    :os_pid,
    :dir,
    :password,
    :acl_user,
    :port_ref,
    :holder,
    :owner,
    :log_path,
    :start_opts
  ]

  @type t :: %__MODULE__{
          port: :inet.port_number(),
          tls_port: :inet.port_number() | nil,
          unix_path: String.t() | nil,
          os_pid: pos_integer(),
          dir: String.t(),
          password: String.t() | nil,
          acl_user: {String.t(), String.t()} | nil,
          port_ref: port(),
          holder: pid(),
          owner: pid(),
          log_path: String.t(),
          start_opts: keyword()
        }

  @start_timeout 5_000
  @stop_timeout 5_000
  @port_attempts 5
  @restart_bind_attempts 30

  # $1: temp dir, $2: log file, then the command to run (redis-server and its arguments).
  # redis-server's output and the shell's own messages go to the log.
  # The watcher exits with 0 after a "stop" line and with 3 on end of file; it ignores
  # SIGTERM once it has seen end of file, so the main shell can tell the two apart and only
  # removes the temp dir when the VM side went away.
  @watchdog """
  dir=$1; log=$2; shift 2
  exec 3<&0 </dev/null 2>>"$log"
  "$@" 3<&- >>"$log" 2>&1 &
  pid=$!
  (
    if read -r line <&3; then kill -KILL "$pid" 2>/dev/null; exit 0; fi
    trap '' TERM
    kill -KILL "$pid" 2>/dev/null
    exit 3
  ) >/dev/null 2>&1 &
  watcher=$!
  exec 3<&-
  echo "$pid"
  wait "$pid"; status=$?
  kill "$watcher" 2>/dev/null
  wait "$watcher"; wstatus=$?
  if [ "$wstatus" = 3 ]; then rm -rf "$dir"; fi
  exit "$status"
  """

  @doc false
  # The watchdog script, also used by RedixRs.Test.SentinelSetup for redis-sentinel.
  def watchdog, do: @watchdog

  @doc """
  Starts a `redis-server` on a free port of 127.0.0.1 and waits until it answers PING.

  Options:

    * `:password` - sets `requirepass` (the password of the `default` user)
    * `:acl_user` - `{name, password}`: adds an ACL user with all permissions
      (`user NAME on >PASSWORD ~* &* +@all`)
    * `:unix_socket` - when `true`, also listens on `redis.sock` in the temp dir
      (`--unixsocketperm 700`); its path is in the `:unix_path` field
    * `:args` - extra command-line arguments for redis-server, such as
      `["--maxclients", "10"]`
    * `:tls` - also serve TLS on a free port (its number is in the `:tls_port` field), with
      these options, all but `:auth_clients` required:
        * `:cert_file` - the server's certificate (PEM)
        * `:key_file` - its private key (PEM)
        * `:ca_cert_file` - the CAs that sign accepted client certificates (PEM)
        * `:auth_clients` - `:no` (default), `:yes` (a client certificate is required) or
          `:optional`
    * `:port` - listens on this port instead of a free one
    * `:owner` - the process whose exit kills the server (default: the caller)
    * `:timeout` - how long to wait for the server to answer PING (default: 5000 ms)

  Raises with the server's log if it does not answer in time.

      iex> server = RedixRs.Test.RedisServer.start(password: "pw")
      iex> server.password
      "pw"
      iex> RedixRs.Test.RedisServer.redis_cli(server, ["PING"])
      "+PONG\\r\\n"
      iex> RedixRs.Test.RedisServer.stop(server)
      :ok

  """
  @spec start(keyword()) :: t()
  def start(opts \\ []) when is_list(opts) do
    validate_opts!(opts)
    dir = make_temp_dir!()

    try do
      start_in_dir(opts, dir)
    rescue
      error ->
        File.rm_rf(dir)
        reraise error, __STACKTRACE__
    end
  end

  @doc """
  Stops the server: kills redis-server, waits until it is gone and removes its temp dir.

  Stopping a server that is already stopped (or whose process was killed) is fine.

      iex> server = RedixRs.Test.RedisServer.start()
      iex> RedixRs.Test.RedisServer.stop(server)
      :ok
      iex> File.exists?(server.dir)
      false

  """
  @spec stop(t()) :: :ok
  def stop(%__MODULE__{} = server) do
    stop_process(server)
    File.rm_rf!(server.dir)
    :ok
  end

  @doc """
  Stops the server (if it is still running) and starts a new one on the same port, with the
  same options, temp dir and Unix socket path. Returns the new server.

  The new server belongs to the owner of the old one. Its data starts empty.

      iex> server = RedixRs.Test.RedisServer.start()
      iex> new_server = RedixRs.Test.RedisServer.restart(server)
      iex> new_server.port == server.port and new_server.os_pid != server.os_pid
      true
      iex> RedixRs.Test.RedisServer.redis_cli(new_server, ["PING"])
      "+PONG\\r\\n"
      iex> RedixRs.Test.RedisServer.stop(new_server)
      :ok

  """
  @spec restart(t()) :: t()
  def restart(%__MODULE__{} = server) do
    stop_process(server)
    File.mkdir_p!(server.dir)
    if server.unix_path, do: File.rm(server.unix_path)

    opts =
      server.start_opts
      |> Keyword.put(:port, server.port)
      |> Keyword.put(:owner, server.owner)
      |> then(&if(server.tls_port, do: Keyword.put(&1, :tls_port, server.tls_port), else: &1))

    start_in_dir(opts, server.dir)
  end

  @doc """
  Sends `signal` (such as `"STOP"`, `"CONT"` or `"KILL"`, or an atom such as `:stop`) to the
  redis-server process with `kill`.

  Returns `:ok`, or `{:error, output}` if `kill` failed (for example because the process is
  already gone).

      iex> server = RedixRs.Test.RedisServer.start()
      iex> RedixRs.Test.RedisServer.os_kill(server, "STOP")
      :ok
      iex> RedixRs.Test.RedisServer.os_kill(server, :cont)
      :ok
      iex> RedixRs.Test.RedisServer.stop(server)
      :ok

  """
  @spec os_kill(t(), String.t() | atom()) :: :ok | {:error, String.t()}
  def os_kill(%__MODULE__{os_pid: os_pid}, signal) do
    signal = signal |> to_string() |> String.upcase() |> String.trim_leading("SIG")

    case System.cmd("kill", ["-#{signal}", Integer.to_string(os_pid)], stderr_to_stdout: true) do
      {_output, 0} -> :ok
      {output, _status} -> {:error, String.trim(output)}
    end
  end

  @doc """
  Runs one command against the server on a fresh TCP connection and returns the raw RESP
  reply, independently of the client under test.

  Authenticates first when the server has a password. Options:

    * `:auth` - `nil`/`false` (no AUTH), `password` or `{username, password}`; defaults to
      the server's password
    * `:timeout` - in milliseconds (default: 5000)

  Raises if the connection fails or AUTH is refused.

      iex> server = RedixRs.Test.RedisServer.start(acl_user: {"alice", "secret"})
      iex> RedixRs.Test.RedisServer.redis_cli(server, ["SET", "key", 42])
      "+OK\\r\\n"
      iex> RedixRs.Test.RedisServer.redis_cli(server, ["GET", "key"])
      "$2\\r\\n42\\r\\n"
      iex> RedixRs.Test.RedisServer.redis_cli(server, ["ACL", "WHOAMI"], auth: {"alice", "secret"})
      "$5\\r\\nalice\\r\\n"
      iex> RedixRs.Test.RedisServer.stop(server)
      :ok

  """
  @spec redis_cli(t(), [String.Chars.t()], keyword()) :: binary()
  def redis_cli(%__MODULE__{} = server, args, opts \\ []) when is_list(args) do
    timeout = Keyword.get(opts, :timeout, 5_000)
    deadline = System.monotonic_time(:millisecond) + timeout

    socket =
      case :gen_tcp.connect({127, 0, 0, 1}, server.port, [:binary, active: false], timeout) do
        {:ok, socket} ->
          socket

        {:error, reason} ->
          raise "cannot connect to redis on port #{server.port}: #{inspect(reason)}"
      end

    try do
      case auth_command(Keyword.get(opts, :auth, server.password)) do
        nil ->
          :ok

        auth ->
          case command(socket, auth, deadline) do
            "+OK\r\n" -> :ok
            reply -> raise "AUTH refused by redis on port #{server.port}: #{inspect(reply)}"
          end
      end

      command(socket, args, deadline)
    after
      :gen_tcp.close(socket)
    end
  end

  ## Starting

  defp validate_opts!(opts) do
    Enum.each(opts, fn
      {:password, value} when is_binary(value) or is_nil(value) -> :ok
      {:acl_user, {name, pass}} when is_binary(name) and is_binary(pass) -> :ok
      {:acl_user, nil} -> :ok
      {:unix_socket, value} when is_boolean(value) -> :ok
      {:args, args} when is_list(args) -> :ok
      {:port, port} when is_integer(port) and port in 1..65_535 and port != 6379 -> :ok
      {:tls_port, port} when is_integer(port) and port in 1..65_535 and port != 6379 -> :ok
      {:tls, tls} when is_list(tls) -> validate_tls_opts!(tls)
      {:owner, pid} when is_pid(pid) -> :ok
      {:timeout, timeout} when is_integer(timeout) and timeout > 0 -> :ok
      other -> raise ArgumentError, "invalid RedisServer option: #{inspect(other)}"
    end)
  end

  defp validate_tls_opts!(tls) do
    for key <- [:cert_file, :key_file, :ca_cert_file], not is_binary(tls[key]) do
      raise ArgumentError, "the :tls option of RedisServer needs #{inspect(key)} (a path)"
    end

    Enum.each(tls, fn
      {key, path} when key in [:cert_file, :key_file, :ca_cert_file] and is_binary(path) -> :ok
      {:auth_clients, value} when value in [:yes, :no, :optional] -> :ok
      other -> raise ArgumentError, "invalid RedisServer :tls option: #{inspect(other)}"
    end)
  end

  defp make_temp_dir! do
    suffix = "#{System.os_time(:nanosecond)}_#{System.unique_integer([:positive])}"
    dir = Path.join(System.tmp_dir!(), "redix_rs_redis_#{suffix}")
    File.mkdir_p!(dir)
    dir
  end

  defp start_in_dir(opts, dir) do
    case Keyword.fetch(opts, :port) do
      {:ok, port} -> start_on_port(opts, dir, port, @restart_bind_attempts)
      :error -> start_on_free_port(opts, dir, @port_attempts)
    end
  end

  defp start_on_free_port(opts, dir, attempts_left) do
    port = free_port()

    case launch(opts, dir, port) do
      {:ok, server} ->
        server

      {:error, :eaddrinuse, _log} when attempts_left > 1 ->
        start_on_free_port(opts, dir, attempts_left - 1)

      {:error, reason, log} ->
        raise_start_error(port, reason, log)
    end
  end

  # Used by restart/1: the old server's socket may take a moment to be released.
  defp start_on_port(opts, dir, port, attempts_left) do
    case launch(opts, dir, port) do
      {:ok, server} ->
        server

      {:error, :eaddrinuse, _log} when attempts_left > 1 ->
        Process.sleep(100)
        start_on_port(opts, dir, port, attempts_left - 1)

      {:error, reason, log} ->
        raise_start_error(port, reason, log)
    end
  end

  defp raise_start_error(port, reason, log) do
    raise "redis-server on port #{port} failed to start (#{inspect(reason)}). Its log:\n#{log}"
  end

  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)
    # Never the standard port; and at most 55535, so that a server started with
    # `--cluster-enabled yes` can open its cluster bus port (port + 10000).
    if port == 6379 or port > 55_535, do: free_port(), else: port
  end

  defp launch(opts, dir, port) do
    log_path = Path.join(dir, "redis.log")
    unix_path = if Keyword.get(opts, :unix_socket, false), do: Path.join(dir, "redis.sock")

    tls_port =
      if Keyword.has_key?(opts, :tls), do: Keyword.get_lazy(opts, :tls_port, &free_port/0)

    owner = Keyword.get(opts, :owner, self())
    timeout = Keyword.get(opts, :timeout, @start_timeout)
    File.write!(log_path, "")

    sh_args =
      ["-c", @watchdog, "redix_rs_redis_watchdog", dir, log_path] ++
        redis_command(opts, dir, port, unix_path, tls_port)

    caller = self()
    ref = make_ref()
    {holder, monitor} = spawn_monitor(fn -> holder_init(caller, ref, owner, sh_args) end)

    receive do
      {^ref, :started, port_ref, os_pid} ->
        server = %__MODULE__{
          port: port,
          tls_port: tls_port,
          unix_path: unix_path,
          os_pid: os_pid,
          dir: dir,
          password: Keyword.get(opts, :password),
          acl_user: Keyword.get(opts, :acl_user),
          port_ref: port_ref,
          holder: holder,
          owner: owner,
          log_path: log_path,
          start_opts: Keyword.drop(opts, [:port, :tls_port, :owner])
        }

        deadline = System.monotonic_time(:millisecond) + timeout
        await_ready(server, monitor, deadline)

      {:DOWN, ^monitor, :process, _pid, reason} ->
        {:error, {:watchdog_failed, reason}, read_log(log_path)}
    after
      timeout ->
        Process.demonitor(monitor, [:flush])
        Process.exit(holder, :kill)
        {:error, :watchdog_timeout, read_log(log_path)}
    end
  end

  defp redis_command(opts, dir, port, unix_path, tls_port) do
    redis = System.find_executable("redis-server") || "/usr/bin/redis-server"

    args =
      ["--port", Integer.to_string(port), "--bind", "127.0.0.1"] ++
        ["--save", "", "--appendonly", "no", "--dir", dir] ++
        ["--daemonize", "no", "--protected-mode", "no", "--logfile", ""] ++
        password_args(Keyword.get(opts, :password)) ++
        acl_args(Keyword.get(opts, :acl_user)) ++
        unix_args(unix_path) ++
        tls_args(Keyword.get(opts, :tls), tls_port) ++
        Enum.map(Keyword.get(opts, :args, []), &to_string/1)

    case System.find_executable("setpriv") do
      nil -> [redis | args]
      setpriv -> [setpriv, "--pdeathsig", "KILL", redis | args]
    end
  end

  defp password_args(nil), do: []
  defp password_args(password), do: ["--requirepass", password]

  # redis-server 7 accepts ACL rules on the command line like any config directive.
  defp acl_args(nil), do: []

  defp acl_args({name, password}),
    do: ["--user", name, "on", ">" <> password, "~*", "&*", "+@all"]

  defp unix_args(nil), do: []
  defp unix_args(path), do: ["--unixsocket", path, "--unixsocketperm", "700"]

  defp tls_args(nil, _tls_port), do: []

  defp tls_args(tls, tls_port) do
    ["--tls-port", Integer.to_string(tls_port)] ++
      ["--tls-cert-file", tls[:cert_file], "--tls-key-file", tls[:key_file]] ++
      ["--tls-ca-cert-file", tls[:ca_cert_file]] ++
      ["--tls-auth-clients", Atom.to_string(Keyword.get(tls, :auth_clients, :no))]
  end

  defp await_ready(server, monitor, deadline) do
    receive do
      {:DOWN, ^monitor, :process, _pid, _reason} ->
        log = read_log(server.log_path)
        reason = if log =~ "Address already in use", do: :eaddrinuse, else: :exited
        {:error, reason, log}
    after
      0 ->
        cond do
          ready?(server) ->
            Process.demonitor(monitor, [:flush])
            {:ok, server}

          System.monotonic_time(:millisecond) >= deadline ->
            Process.demonitor(monitor, [:flush])
            log = read_log(server.log_path)
            stop_process(server)
            {:error, :timeout, log}

          true ->
            Process.sleep(20)
            await_ready(server, monitor, deadline)
        end
    end
  end

  defp ready?(server) do
    pong?({127, 0, 0, 1}, server.port) and
      (server.unix_path == nil or pong?({:local, server.unix_path}, 0)) and
      (server.tls_port == nil or listening?(server.tls_port))
  end

  # Redis opens all its listeners before serving any, so this is only a guard.
  defp listening?(port) do
    case :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 500) do
      {:ok, socket} -> :gen_tcp.close(socket) == :ok
      {:error, _reason} -> false
    end
  end

  defp pong?(address, port) do
    case :gen_tcp.connect(address, port, [:binary, active: false], 500) do
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

  defp read_log(path) do
    case File.read(path) do
      {:ok, log} -> log
      {:error, reason} -> "(cannot read #{path}: #{inspect(reason)})"
    end
  end

  ## The holder process: owns the watchdog port

  @doc false
  # Also used by RedixRs.Test.SentinelSetup for its redis-sentinel processes.
  def holder_init(caller, ref, owner, sh_args) do
    owner_monitor = Process.monitor(owner)
    sh = System.find_executable("sh") || "/bin/sh"

    port =
      Port.open({:spawn_executable, sh}, [:binary, :exit_status, {:line, 256}, args: sh_args])

    receive do
      {^port, {:data, {:eol, line}}} ->
        send(caller, {ref, :started, port, String.to_integer(line)})
        holder_loop(port, owner_monitor, [])

      {^port, {:exit_status, status}} ->
        exit({:exit_status, status})

      {:DOWN, ^owner_monitor, :process, _pid, _reason} ->
        exit(:normal)
    end
  end

  defp holder_loop(port, owner_monitor, stoppers) do
    receive do
      {^port, {:data, _data}} ->
        holder_loop(port, owner_monitor, stoppers)

      {^port, {:exit_status, _status}} ->
        Enum.each(stoppers, fn {pid, ref} -> send(pid, {ref, :stopped}) end)
        exit(:normal)

      {:stop, pid, ref} ->
        # A line on the watchdog's stdin makes it kill redis-server; it then exits itself.
        Port.command(port, "stop\n")
        holder_loop(port, owner_monitor, [{pid, ref} | stoppers])

      {:DOWN, ^owner_monitor, :process, _pid, _reason} ->
        # The port closes with this process: the watchdog kills redis and removes the dir.
        exit(:normal)
    end
  end

  defp stop_process(%__MODULE__{holder: holder, os_pid: os_pid}) do
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

    await_os_exit(os_pid, System.monotonic_time(:millisecond) + @stop_timeout)
  end

  # Normally redis-server is gone (and reaped) by the time the watchdog exits; this only
  # matters when the holder was gone already, e.g. after its owner exited.
  defp await_os_exit(os_pid, deadline) do
    cond do
      not os_alive?(os_pid) ->
        :ok

      System.monotonic_time(:millisecond) >= deadline ->
        raise "redis-server (OS pid #{os_pid}) is still running"

      true ->
        Process.sleep(20)
        await_os_exit(os_pid, deadline)
    end
  end

  defp os_alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      # A zombie is as good as gone: its parent (the watchdog) is about to reap it.
      {:ok, stat} ->
        not String.contains?(stat, ") Z ")

      {:error, _reason} ->
        # No /proc entry: gone on Linux; elsewhere ask kill -0.
        not File.dir?("/proc/self") and
          match?({_, 0}, System.cmd("kill", ["-0", "#{os_pid}"], stderr_to_stdout: true))
    end
  end

  ## redis_cli

  defp auth_command(nil), do: nil
  defp auth_command(false), do: nil
  defp auth_command({username, password}), do: ["AUTH", username, password]
  defp auth_command(password) when is_binary(password), do: ["AUTH", password]

  defp command(socket, args, deadline) do
    :ok = :gen_tcp.send(socket, encode(args))
    read_reply(socket, "", deadline)
  end

  defp encode(args) do
    args = Enum.map(args, &to_string/1)
    ["*", Integer.to_string(length(args)), "\r\n" | Enum.map(args, &encode_bulk/1)]
  end

  defp encode_bulk(arg), do: ["$", Integer.to_string(byte_size(arg)), "\r\n", arg, "\r\n"]

  defp read_reply(socket, buffer, deadline) do
    case skip_value(buffer) do
      {:ok, ""} ->
        buffer

      {:ok, _rest} ->
        raise "unexpected data after a redis reply: #{inspect(buffer)}"

      :more ->
        timeout = max(deadline - System.monotonic_time(:millisecond), 0)

        case :gen_tcp.recv(socket, 0, timeout) do
          {:ok, data} ->
            read_reply(socket, buffer <> data, deadline)

          {:error, reason} ->
            raise "no complete redis reply (#{inspect(reason)}), got: #{inspect(buffer)}"
        end
    end
  end

  # Skips one complete RESP2/RESP3 value; returns what follows it, or :more.
  defp skip_value(<<type, rest::binary>>) when type in ~c"+-:_,#(" do
    skip_line(rest)
  end

  defp skip_value(<<type, rest::binary>>) when type in ~c"$!=" do
    with {:ok, length, rest} <- read_integer_line(rest) do
      cond do
        length < 0 ->
          {:ok, rest}

        byte_size(rest) >= length + 2 ->
          {:ok, binary_part(rest, length + 2, byte_size(rest) - length - 2)}

        true ->
          :more
      end
    end
  end

  defp skip_value(<<type, rest::binary>>) when type in ~c"*~>%|" do
    with {:ok, count, rest} <- read_integer_line(rest) do
      count = if type in ~c"%|", do: count * 2, else: count

      with {:ok, rest} <- skip_values(rest, max(count, 0)) do
        # An attribute is followed by the value it annotates.
        if type == ?|, do: skip_value(rest), else: {:ok, rest}
      end
    end
  end

  defp skip_value(""), do: :more
  defp skip_value(other), do: raise("invalid RESP data: #{inspect(other)}")

  defp skip_values(rest, 0), do: {:ok, rest}

  defp skip_values(rest, count) do
    with {:ok, rest} <- skip_value(rest), do: skip_values(rest, count - 1)
  end

  defp skip_line(data) do
    case :binary.split(data, "\r\n") do
      [_line, rest] -> {:ok, rest}
      [_incomplete] -> :more
    end
  end

  defp read_integer_line(data) do
    case :binary.split(data, "\r\n") do
      [line, rest] -> {:ok, String.to_integer(line), rest}
      [_incomplete] -> :more
    end
  end
end
