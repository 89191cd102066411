defmodule RedixRs do
  @moduledoc """
  A Redis client whose socket I/O and RESP parsing run in Rust, with Redix's API.

  `RedixRs` is a drop-in for `Redix`: the same functions, options, return values and error structs,
  under the `RedixRs` prefix. One connection is meant to be shared by many processes: commands sent
  at the same time by different callers go out in one write and each caller gets its own replies, so
  there is no need for a pool to get throughput.

  ## Starting a connection

      children = [
        {RedixRs, name: :redix, host: "localhost", port: 6379}
      ]

  or, from a URI: `{RedixRs, {"redis://:secret@localhost:6379/3", name: :redix}}`.

  ## Sending commands

  A command is a list whose elements are binaries or anything that implements `String.Chars`
  (atoms, integers, floats):

      iex> RedixRs.command(:redix, ["SET", "mykey", "foo"])
      {:ok, "OK"}
      iex> RedixRs.command(:redix, ["GET", "mykey"])
      {:ok, "foo"}

  (Examples in these docs use a connection started as `{RedixRs, name: :redix}`, and
  `RedixRs.Doctest.port()` stands for the port of your Redis server.)

  ## Shared-connection state

  As with Redix, everything sent on a connection shares it: a blocking command (`BLPOP`, `XREAD
  BLOCK`, `WAIT`) delays every later caller of that connection until it returns, and a `MULTI`,
  `WATCH` or `SELECT` sent by one caller affects all of them. Use a separate connection for those.

  ## Start options

  #{RedixRs.Options.docs()}

  ## Socket options

  Every `:gen_tcp` connect option and every `:ssl` client option of OTP 25 (and the `:ssl` server
  options that find their way into client configurations) may be given in `:socket_opts`; `:ssl`
  options need `ssl: true`. Each is mapped onto the socket (in Rust) or onto rustls, accepted with no
  effect, or refused with an `ArgumentError` that says why and what to do instead:

  #{RedixRs.Options.Socket.docs()}
  """

  alias RedixRs.{ConnectionError, Native}

  @typedoc """
  A connection: a pid or a name (an atom, `{:global, term}`, `{:via, module, term}`, or
  `{atom, node}` for a connection registered on another node).
  """
  @type connection() :: GenServer.server()

  @typedoc "A Redis command: a list of binaries or terms that implement `String.Chars`."
  @type command() :: [String.Chars.t()]

  @typedoc """
  A reply. Under RESP2 (the default), the shapes Redix returns: binaries, integers, `nil`, lists and
  `RedixRs.Error` structs. Under `protocol: :resp3` also maps, floats (`:infinity`,
  `:negative_infinity` or `:nan` where a float cannot be), booleans and big integers; a map with a
  duplicate key (which Redis does not send) comes as a list of `{key, value}` pairs.
  """
  @type redis_value() ::
          binary()
          | integer()
          | float()
          | :infinity
          | :negative_infinity
          | :nan
          | boolean()
          | nil
          | RedixRs.Error.t()
          | [redis_value() | {redis_value(), redis_value()}]
          | %{optional(redis_value()) => redis_value()}

  @doc ~S"""
  Starts a connection with default options (Redis on `localhost:6379`).

  ## Examples

      iex> {:ok, pid} = RedixRs.start_link(port: RedixRs.Doctest.port())
      iex> is_pid(pid)
      true
  """
  @spec start_link() :: GenServer.on_start()
  def start_link, do: start_link([])

  @doc ~S"""
  Starts a connection from a keyword list of options or a `redis://`, `valkey://` or `unix://` URI.

  Unknown or invalid options raise `ArgumentError`. See "Start options" in the module docs.

  ## Examples

      iex> {:ok, conn} = RedixRs.start_link("redis://localhost:#{RedixRs.Doctest.port()}/3")
      iex> RedixRs.command(conn, ["PING"])
      {:ok, "PONG"}
  """
  @spec start_link(binary() | keyword()) :: GenServer.on_start()
  def start_link(uri) when is_binary(uri), do: start_link(uri, [])

  def start_link(opts) do
    opts = RedixRs.Options.validate!(opts)
    # Raised here, in the caller, rather than as a crash of the connection process.
    Native.ensure_loaded!()
    RedixRs.Connection.start_link(opts)
  end

  @doc ~S"""
  Starts a connection from a URI and options; the options win over what the URI says.

  ## Examples

      iex> {:ok, conn} = RedixRs.start_link("redis://localhost:1", port: RedixRs.Doctest.port(), sync_connect: true)
      iex> RedixRs.command(conn, ["PING"])
      {:ok, "PONG"}
  """
  @spec start_link(binary(), keyword()) :: GenServer.on_start()
  def start_link(uri, opts) when is_binary(uri) and is_list(opts) do
    uri |> RedixRs.URI.to_start_options() |> Keyword.merge(opts) |> start_link()
  end

  @doc """
  A child specification, from options, a URI, or `{uri, options}`.

  ## Examples

      iex> RedixRs.child_spec(name: :cache)
      %{id: RedixRs, type: :worker, start: {RedixRs, :start_link, [[name: :cache]]}}
  """
  @spec child_spec(keyword() | binary() | {binary(), keyword()}) :: Supervisor.child_spec()
  def child_spec({uri, opts}) when is_binary(uri), do: spec([uri, opts])
  def child_spec(uri_or_opts), do: spec([uri_or_opts])

  defp spec(args), do: %{id: __MODULE__, type: :worker, start: {__MODULE__, :start_link, args}}

  @doc ~S"""
  Closes the connection and stops its process.

  ## Examples

      iex> {:ok, conn} = RedixRs.start_link(port: RedixRs.Doctest.port())
      iex> RedixRs.stop(conn)
      :ok
  """
  @spec stop(connection(), timeout()) :: :ok
  def stop(conn, timeout \\ :infinity), do: GenServer.stop(conn, :normal, timeout)

  @doc """
  Sends one command and returns its reply.

  A Redis error reply becomes `{:error, %RedixRs.Error{}}`; a connection problem
  `{:error, %RedixRs.ConnectionError{}}`. Options: `:timeout` (milliseconds, default `5000`),
  `:telemetry_metadata`, and `cache: true`.

  `cache: true` marks a read that may be answered from the connection's client-side cache (a
  connection started with `:client_cache`, see "Client-side caching" in the README): a hit is
  answered in the calling process without a round trip (and without telemetry events: nothing is
  sent); a miss is sent as usual and its reply cached for later calls. It raises `ArgumentError` on
  a connection without `:client_cache` and for a command that cannot be cached (only reads whose
  reply depends on their keys' contents alone can: `GET`, `HGETALL`, `MGET`, `SMEMBERS`, `ZRANGE`,
  ... but not `TTL`, `SRANDMEMBER` or `SET`), and, in broadcast mode, for keys outside its prefixes.

  ## Examples

      iex> RedixRs.command(:redix, ["SET", "counter", 41])
      {:ok, "OK"}
      iex> RedixRs.command(:redix, ["INCR", "counter"])
      {:ok, 42}
      iex> RedixRs.command(:redix, ["GET", "no such key"])
      {:ok, nil}
      iex> {:error, %RedixRs.Error{message: "ERR unknown command" <> _}} = RedixRs.command(:redix, ["NOPE"])

  A cached read:

      iex> {:ok, conn} = RedixRs.start_link(port: RedixRs.Doctest.port(), protocol: :resp3, client_cache: [], sync_connect: true)
      iex> RedixRs.command(conn, ["SET", "greeting", "hello"])
      {:ok, "OK"}
      iex> RedixRs.command(conn, ["GET", "greeting"], cache: true)
      {:ok, "hello"}
      iex> RedixRs.command(conn, ["GET", "greeting"], cache: true)
      {:ok, "hello"}
  """
  @spec command(connection(), command(), keyword()) ::
          {:ok, redis_value()} | {:error, RedixRs.Error.t() | ConnectionError.t()}
  def command(conn, command, opts \\ [])

  # The hot path of a cached read.
  def command(conn, command, cache: true), do: RedixRs.Cache.command(conn, command, [])

  def command(conn, command, opts) do
    if is_list(opts) and :lists.keymember(:cache, 1, opts) do
      case Keyword.pop(opts, :cache) do
        {true, opts} -> RedixRs.Cache.command(conn, command, opts)
        {false, opts} -> uncached_command(conn, command, opts)
        {other, _} -> raise ArgumentError, "expected cache: true or false, got: #{inspect(other)}"
      end
    else
      uncached_command(conn, command, opts)
    end
  end

  defp uncached_command(conn, command, opts) do
    case pipeline(conn, [command], opts) do
      {:ok, [%RedixRs.Error{} = error]} -> {:error, error}
      {:ok, [value]} -> {:ok, value}
      {:error, _} = error -> error
    end
  end

  @doc """
  The counters of the client-side cache of `conn` (a connection started with `:client_cache`),
  since it started: `:hits` (reads answered from the cache), `:misses` (cacheable reads sent to
  Redis), `:evictions` (entries dropped to stay within `max_entries`/`max_bytes`) and
  `:invalidations` (entries dropped because Redis said a key changed, or the connection dropped).

  Raises `ArgumentError` on a connection without `:client_cache`.

  ## Examples

      iex> {:ok, conn} = RedixRs.start_link(port: RedixRs.Doctest.port(), protocol: :resp3, client_cache: [max_entries: 100], sync_connect: true)
      iex> RedixRs.command(conn, ["GET", "stats:key"], cache: true)
      {:ok, nil}
      iex> RedixRs.command(conn, ["GET", "stats:key"], cache: true)
      {:ok, nil}
      iex> RedixRs.cache_stats(conn)
      %{hits: 1, misses: 1, evictions: 0, invalidations: 0}
  """
  @spec cache_stats(connection()) :: %{
          hits: non_neg_integer(),
          misses: non_neg_integer(),
          evictions: non_neg_integer(),
          invalidations: non_neg_integer()
        }
  def cache_stats(conn) do
    conn |> RedixRs.Cache.stats() |> Map.take([:hits, :misses, :evictions, :invalidations])
  end

  @doc """
  Like `command/3`, but returns the value and raises `RedixRs.Error` or `RedixRs.ConnectionError`.

  ## Examples

      iex> RedixRs.command!(:redix, ["PING"])
      "PONG"
  """
  @spec command!(connection(), command(), keyword()) :: redis_value()
  def command!(conn, command, opts \\ []),
    do: RedixRs.Command.ok!(command(conn, command, opts))

  @doc """
  Sends several commands at once and returns their replies, in order.

  Redis error replies stay in the list as `%RedixRs.Error{}`; only connection problems give
  `{:error, %RedixRs.ConnectionError{}}`. The commands are written together, so no other caller's
  command lands between them. Options: `:timeout` (milliseconds, default `5000`) and
  `:telemetry_metadata` (a map, the `:extra_metadata` of the call's telemetry events).

  As with Redix, a caller whose connection process exits during the call exits with
  `{:redix_exited_during_call, reason}`, and so does a caller whose connection is not running:
  `{:redix_exited_during_call, :noproc}` (`:noconnection` when the connection's node cannot be
  reached).

  ## Examples

      iex> RedixRs.pipeline(:redix, [["DEL", "n"], ["INCR", "n"], ["INCR", "n"]])
      {:ok, [0, 1, 2]}
      iex> {:ok, ["OK", %RedixRs.Error{}]} = RedixRs.pipeline(:redix, [["SET", "s", "x"], ["INCR", "s"]])
  """
  @spec pipeline(connection(), [command()], keyword()) ::
          {:ok, [redis_value()]} | {:error, ConnectionError.t()}
  def pipeline(conn, commands, opts \\ []), do: RedixRs.Call.run(conn, commands, :pipeline, opts)

  @doc """
  Like `pipeline/3`, but returns the replies and raises `RedixRs.ConnectionError`.

  ## Examples

      iex> RedixRs.pipeline!(:redix, [["PING"], ["ECHO", "hi"]])
      ["PONG", "hi"]
  """
  @spec pipeline!(connection(), [command()], keyword()) :: [redis_value()]
  def pipeline!(conn, commands, opts \\ []),
    do: RedixRs.Command.ok!(pipeline(conn, commands, opts))

  @doc """
  Sends commands without waiting for their replies: Redis is told not to answer them
  (`CLIENT REPLY OFF` ... `CLIENT REPLY ON`, all in one write), so only a final `OK` comes back.

  Returns `:ok` once Redis has run them. Servers that disable the `CLIENT` command (some managed
  offerings) give `{:error, %RedixRs.Error{}}`, and the connection stays usable. Options as for
  `pipeline/3`.

  ## Examples

      iex> RedixRs.noreply_pipeline(:redix, [["SET", "a", "1"], ["INCR", "a"]])
      :ok
      iex> RedixRs.command(:redix, ["GET", "a"])
      {:ok, "2"}
  """
  @spec noreply_pipeline(connection(), [command()], keyword()) ::
          :ok | {:error, RedixRs.Error.t() | ConnectionError.t()}
  def noreply_pipeline(conn, commands, opts \\ []) do
    case RedixRs.Call.run(conn, commands, :noreply, opts) do
      {:ok, [%RedixRs.Error{} = error | _]} -> {:error, error}
      {:ok, [_ok]} -> :ok
      {:error, _} = error -> error
    end
  end

  @doc """
  Like `noreply_pipeline/3`, but raises on errors.

  ## Examples

      iex> RedixRs.noreply_pipeline!(:redix, [["SET", "b", "1"]])
      :ok
  """
  @spec noreply_pipeline!(connection(), [command()], keyword()) :: :ok
  def noreply_pipeline!(conn, commands, opts \\ []) do
    with {:error, error} <- noreply_pipeline(conn, commands, opts), do: raise(error)
  end

  @doc """
  Sends one command without waiting for its reply; see `noreply_pipeline/3`.

  ## Examples

      iex> RedixRs.noreply_command(:redix, ["SET", "c", "1"])
      :ok
  """
  @spec noreply_command(connection(), command(), keyword()) ::
          :ok | {:error, RedixRs.Error.t() | ConnectionError.t()}
  def noreply_command(conn, command, opts \\ []), do: noreply_pipeline(conn, [command], opts)

  @doc """
  Like `noreply_command/3`, but raises on errors.

  ## Examples

      iex> RedixRs.noreply_command!(:redix, ["SET", "d", "1"])
      :ok
  """
  @spec noreply_command!(connection(), command(), keyword()) :: :ok
  def noreply_command!(conn, command, opts \\ []), do: noreply_pipeline!(conn, [command], opts)

  @doc """
  Runs commands in a `MULTI`/`EXEC` transaction and returns the replies of `EXEC`.

  The whole transaction is one write, so no other caller's command lands between `MULTI` and
  `EXEC`. An error while queueing (such as a wrong number of arguments) makes Redis abort it:
  `{:error, %RedixRs.Error{message: "EXECABORT ..."}}`. Errors while running stay in the list, as
  in `pipeline/3`. Options as for `pipeline/3`.

  ## Examples

      iex> RedixRs.transaction_pipeline(:redix, [["SET", "t", "1"], ["INCR", "t"], ["GET", "t"]])
      {:ok, ["OK", 2, "2"]}
      iex> {:error, %RedixRs.Error{message: "EXECABORT" <> _}} =
      ...>   RedixRs.transaction_pipeline(:redix, [["SET", "t"]])
  """
  @spec transaction_pipeline(connection(), [command()], keyword()) ::
          {:ok, [redis_value()]} | {:error, RedixRs.Error.t() | ConnectionError.t()}
  def transaction_pipeline(conn, [_ | _] = commands, opts \\ []) do
    RedixRs.Call.run(conn, commands, :transaction, opts)
    |> RedixRs.Command.transaction_result()
  end

  @doc """
  Like `transaction_pipeline/3`, but returns the replies and raises on errors.

  ## Examples

      iex> RedixRs.transaction_pipeline!(:redix, [["DEL", "u"], ["INCR", "u"]])
      [0, 1]
  """
  @spec transaction_pipeline!(connection(), [command()], keyword()) :: [redis_value()] | nil
  def transaction_pipeline!(conn, commands, opts \\ []),
    do: RedixRs.Command.ok!(transaction_pipeline(conn, commands, opts))
end
