defmodule RedixRs.Options do
  # The one place where start options are declared and validated. The schema also writes the option
  # docs shown in `RedixRs.start_link/1`. The options of a Redis Cluster client (`RedixRs.Cluster`,
  # `RedixRs.PubSub` with `:nodes`) are in `RedixRs.Options.Cluster`, reached through this module.
  @moduledoc false

  @reply_limits [
    max_bulk_bytes: 512 * 1024 * 1024,
    max_elements: 2_147_483_648,
    max_depth: 256,
    max_reply_bytes: 1024 * 1024 * 1024
  ]

  @schema [
    host: [
      type: :host,
      default: "localhost",
      doc:
        "the host where Redis runs, or `{:local, path}` for a Unix socket (then `:port` must be 0)"
    ],
    port: [type: :port, default: 6379, doc: "the port Redis listens on (0 with a Unix socket)"],
    database: [
      type: :database,
      default: nil,
      doc: "the database to `SELECT` after connecting (an integer or a string of digits)"
    ],
    username: [
      type: :string_or_nil,
      default: nil,
      doc: "the ACL user to authenticate as (Redis 6+); needs `:password`"
    ],
    password: [
      type: :password,
      default: nil,
      doc:
        "the password for `AUTH`: a string, or `{module, function, args}` called at each connection"
    ],
    client_name: [
      type: :string_or_nil,
      default: nil,
      doc: "a name sent with `CLIENT SETNAME` after connecting (shown by `CLIENT LIST`)"
    ],
    protocol: [
      type: :protocol,
      default: :resp2,
      doc:
        "`:resp2` (Redix's replies) or `:resp3` (`HELLO 3`, Redis 6+): maps become maps, doubles " <>
          "floats (`:infinity`, `:negative_infinity`, `:nan`), booleans `true`/`false`, big numbers " <>
          "integers, sets lists; push frames never reach callers"
    ],
    timeout: [
      type: :timeout,
      default: 5_000,
      doc: "milliseconds allowed to connect and complete the handshake (not a command timeout)"
    ],
    readonly: [
      type: :boolean,
      default: false,
      doc:
        "send `READONLY` after connecting (and after every reconnection), so that a Redis Cluster " <>
          "replica serves read commands instead of redirecting them; an error reply (a server " <>
          "without cluster support) is fatal, as an `AUTH` error is"
    ],
    sync_connect: [
      type: :boolean,
      default: false,
      doc:
        "connect inside `start_link/1` and return `{:error, %RedixRs.ConnectionError{}}` if that fails"
    ],
    exit_on_disconnection: [
      type: :boolean,
      default: false,
      doc: "stop the process (with the `RedixRs.ConnectionError`) instead of reconnecting"
    ],
    backoff_initial: [
      type: :non_neg_integer,
      default: 500,
      doc: "milliseconds before the first reconnection attempt"
    ],
    backoff_max: [
      type: :timeout,
      default: 30_000,
      doc: "the longest wait between attempts (each failed attempt multiplies the wait by 1.5)"
    ],
    socket_opts: [
      type: :socket_opts,
      default: [],
      doc:
        "socket options as `:gen_tcp` takes them and, with `ssl: true`, as `:ssl` takes them: " <>
          "each one is mapped onto the socket or rustls, accepted with no effect, or refused " <>
          "with an `ArgumentError` saying why, as the table \"Socket options\" below says"
    ],
    ssl: [
      type: :boolean,
      default: false,
      doc:
        "connect with TLS (rustls), verifying the server's certificate and name against the " <>
          "system's trusted CAs unless `:socket_opts` say otherwise"
    ],
    sentinel: [
      type: :sentinel,
      default: nil,
      doc:
        "find the server through Redis Sentinel: `[sentinels: [uri_or_keyword, ...], group: " <>
          "\"mymaster\", role: :primary | :replica, password: ..., timeout: 500, ssl: false, " <>
          "socket_opts: []]` (then `:host` and `:port` cannot be given)"
    ],
    health_check_interval: [
      type: :timeout,
      default: :infinity,
      doc:
        "milliseconds between health checks (off by default): a `PING` on the connection; if it is " <>
          "not answered within the interval (it may wait behind a blocking command such as " <>
          "`BLPOP 0`), a fresh connection asks the server; if that fails too, the connection is " <>
          "closed with reason `:health_check_timeout` and re-established"
    ],
    write_queue_limit: [
      type: :pos_integer,
      default: 128 * 1024 * 1024,
      doc:
        "bytes of encoded commands that may wait to be written; past it, calls get " <>
          "`%RedixRs.ConnectionError{reason: :write_queue_full}` (one larger submission is still " <>
          "accepted when nothing is waiting)"
    ],
    reply_limits: [
      type: :reply_limits,
      default: [],
      doc:
        "limits on what one reply may be, checked as its bytes arrive: `:max_bulk_bytes` (one " <>
          "string, default 512 MiB as Redis's `proto-max-bulk-len`), `:max_elements` (elements of " <>
          "one array, set or map, default 2,147,483,648), `:max_depth` (nesting, default 256), " <>
          "`:max_reply_bytes` (the whole reply as sent, default 1 GiB). Past one, the caller whose " <>
          "reply it is gets `%RedixRs.ConnectionError{reason: {:protocol_error, :reply_too_large}}` " <>
          "(`:bulk_too_long`, `:aggregate_too_long`, `:too_deep` for the others), the connection " <>
          "is closed and re-established, and other callers in flight get `:disconnected`"
    ],
    max_side_connections: [
      type: :non_neg_integer,
      default: 8,
      doc:
        "how many side connections the connection may open for blocking commands (`BLPOP`, " <>
          "`BRPOP`, `BRPOPLPUSH`, `BLMOVE`, `BLMPOP`, `BZPOPMIN`, `BZPOPMAX`, `BZMPOP`, and " <>
          "`XREAD`/`XREADGROUP` with `BLOCK`) and for pipelines and transactions holding one, so " <>
          "that they never stall the other callers; opened on demand with the same settings, one " <>
          "call at a time each; when all are busy a blocking call waits for one within its " <>
          "`:timeout`. `0` sends everything over the shared connection, as Redix does (see " <>
          "\"Blocking commands\" in the README)"
    ],
    side_connection_idle_timeout: [
      type: :timeout,
      default: 30_000,
      doc: "milliseconds after which an unused side connection is closed"
    ],
    client_cache: [
      type: :client_cache,
      default: nil,
      doc:
        "client-side caching (needs `protocol: :resp3` given explicitly, else `ArgumentError`): " <>
          "`[max_entries: 10_000, max_bytes: 64 MiB, mode: :optin]`, or `mode: :broadcast, " <>
          "prefixes: [\"user:\", ...]`. Turns `CLIENT TRACKING on` at every (re)connection (`OPTIN`, " <>
          "or `BCAST PREFIX ...`; never `NOLOOP`), so that reads sent with `cache: true` (see " <>
          "`command/3`) are answered from memory in the calling process until Redis says their " <>
          "keys changed. `max_entries` and `max_bytes` (cache keys plus cached replies) bound it; " <>
          "S3-FIFO eviction keeps keys that are read again. The cache is emptied when the " <>
          "connection drops and when it is re-established. See \"Client-side caching\" in the README"
    ],
    name: [
      type: :name,
      default: nil,
      doc:
        "a name to register the connection under: an atom, `{:global, term}` or `{:via, module, term}`"
    ],
    hibernate_after: [type: :timeout, default: nil, doc: "passed to `GenServer.start_link/3`"],
    spawn_opt: [type: :keyword, default: nil, doc: "passed to `GenServer.start_link/3`"],
    debug: [type: :list, default: nil, doc: "passed to `GenServer.start_link/3`"]
  ]

  # Options only `RedixRs.PubSub` takes.
  @pubsub_schema [
    backlog_limit: [
      type: :pos_integer,
      default: 256 * 1024 * 1024,
      doc:
        "bytes of messages that may wait to be sent to subscribers (a payload shared by many " <>
          "subscribers counts once); past it (or past 1,000,000 deliveries) the connection is " <>
          "closed with reason `:pubsub_backlog`: subscribers get what was queued, then " <>
          "`:disconnected`, and everything is subscribed again when it comes back"
    ],
    fetch_client_id_on_connect: [
      type: :boolean,
      default: false,
      doc: "run `CLIENT ID` after connecting, for `RedixRs.PubSub.get_client_id/1`"
    ]
  ]

  @doc """
  The reply limits of `limits` (the `:reply_limits` option), defaults filled in, as the native
  side takes them.
  """
  @spec reply_limits(keyword()) :: %{atom() => pos_integer()}
  def reply_limits(limits), do: @reply_limits |> Keyword.merge(limits) |> Map.new()

  defp schema(:plain), do: @schema
  # Health checks are for RedixRs connections (as in Redix 1.6).
  # Side connections too: a pub/sub connection sends no blocking command.
  defp schema(:pubsub),
    do:
      Keyword.drop(@schema, [
        :health_check_interval,
        :max_side_connections,
        :side_connection_idle_timeout,
        :client_cache
      ]) ++ @pubsub_schema

  defp schema(:pubsub_only), do: @pubsub_schema

  @doc "The options a `:plain` or `:pubsub` connection takes."
  @spec keys(:plain | :pubsub) :: [atom()]
  def keys(mode), do: Keyword.keys(schema(mode))

  @doc "Markdown describing every start option of a `:plain` or `:pubsub` connection."
  def docs(mode \\ :plain), do: schema_docs(schema(mode))

  @doc "Markdown describing the options of `schema` (entries as in the schema above)."
  @spec schema_docs(keyword()) :: String.t()
  def schema_docs(schema) do
    Enum.map_join(schema, "\n", fn {key, spec} ->
      default =
        if spec[:default] in [nil, []], do: "", else: " Defaults to `#{inspect(spec[:default])}`."

      "  * `#{inspect(key)}` - #{spec[:doc]}.#{default}"
    end)
  end

  @doc """
  Validates `opts` for a `:plain` (`RedixRs`) or `:pubsub` (`RedixRs.PubSub`) connection, fills in
  defaults and returns a keyword list with every option. Raises `ArgumentError` on unknown or
  invalid options.
  """
  @spec validate!(keyword(), :plain | :pubsub) :: keyword()
  def validate!(opts, mode \\ :plain)

  def validate!(opts, mode) when is_list(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError,
            "expected a keyword list of options, got: #{inspect(RedixRs.Redact.term(opts))}"
    end

    schema = schema(mode)
    known!(opts, Keyword.keys(schema))

    validated =
      Enum.map(schema, fn {key, spec} ->
        value = Keyword.get(opts, key, spec[:default])
        {key, check!(spec[:type], key, value, spec[:default])}
      end)

    validated
    |> check_unix_port!()
    |> check_tls!()
    |> check_sentinel!(opts)
    |> check_client_cache!(opts)
  end

  def validate!(other, _mode) do
    raise ArgumentError,
          "expected a keyword list of options, got: #{inspect(RedixRs.Redact.term(other))}"
  end

  @doc """
  Checks `value`, given as option `key`, against `type` (a type of the schema above): returns it
  normalised or raises `ArgumentError`. For `RedixRs.Options.Cluster`, whose own options use them.
  """
  @spec check!(atom(), atom(), term()) :: term()
  def check!(type, key, value), do: check!(type, key, value, :no_default)

  @doc "Raises `ArgumentError` if `opts` has keys other than `keys` (the valid options)."
  @spec known!(keyword(), [atom()]) :: :ok
  def known!(opts, keys) do
    case Keyword.keys(opts) -- keys do
      [] ->
        :ok

      unknown ->
        raise ArgumentError,
              "unknown options #{inspect(Enum.uniq(unknown))}, valid options are: #{inspect(keys)}"
    end
  end

  # A default value is always valid (nil means "not set").
  defp check!(_type, _key, value, value), do: value

  defp check!(type, key, value, _default) do
    case valid(type, value) do
      {:ok, value} -> value
      {:error, expected} -> invalid!(key, expected, value)
    end
  end

  defp valid(:host, host) when is_binary(host), do: {:ok, host}
  defp valid(:host, {:local, path} = host) when is_binary(path), do: {:ok, host}
  defp valid(:host, {:local, path}) when is_list(path), do: {:ok, {:local, List.to_string(path)}}
  defp valid(:host, host) when is_list(host), do: {:ok, List.to_string(host)}
  defp valid(:host, _), do: {:error, "a string or {:local, path}"}
  defp valid(:port, port) when is_integer(port) and port in 0..65_535, do: {:ok, port}
  defp valid(:port, _), do: {:error, "an integer between 0 and 65535"}
  defp valid(:database, db) when is_integer(db) and db >= 0, do: {:ok, db}

  defp valid(:database, db) when is_binary(db) do
    case Integer.parse(db) do
      {n, ""} when n >= 0 -> {:ok, n}
      _ -> {:error, "a non-negative integer"}
    end
  end

  defp valid(:database, _), do: {:error, "a non-negative integer"}
  defp valid(:string_or_nil, value) when is_binary(value), do: {:ok, value}
  defp valid(:string_or_nil, _), do: {:error, "a string"}
  defp valid(:password, value) when is_binary(value), do: {:ok, value}

  defp valid(:password, {m, f, a} = mfa) when is_atom(m) and is_atom(f) and is_list(a),
    do: {:ok, mfa}

  defp valid(:password, _), do: {:error, "a string or a {module, function, args} tuple"}
  defp valid(:timeout, :infinity), do: {:ok, :infinity}
  defp valid(:timeout, t) when is_integer(t) and t >= 0, do: {:ok, t}
  defp valid(:timeout, _), do: {:error, "a non-negative integer or :infinity"}
  defp valid(:boolean, b) when is_boolean(b), do: {:ok, b}
  defp valid(:boolean, _), do: {:error, "a boolean"}
  defp valid(:non_neg_integer, n) when is_integer(n) and n >= 0, do: {:ok, n}
  defp valid(:non_neg_integer, _), do: {:error, "a non-negative integer"}
  defp valid(:pos_integer, n) when is_integer(n) and n > 0, do: {:ok, n}
  defp valid(:pos_integer, _), do: {:error, "a positive integer"}
  defp valid(:protocol, protocol) when protocol in [:resp2, :resp3], do: {:ok, protocol}
  defp valid(:protocol, _), do: {:error, ":resp2 or :resp3"}
  defp valid(:sentinel, opts), do: {:ok, RedixRs.Options.Sentinel.validate!(opts)}

  defp valid(:reply_limits, kw) when is_list(kw) do
    ok? =
      Keyword.keyword?(kw) and
        Enum.all?(kw, fn {key, n} ->
          key in Keyword.keys(@reply_limits) and is_integer(n) and n > 0
        end)

    if ok?,
      do: {:ok, kw},
      else:
        {:error,
         "a keyword list of #{inspect(Keyword.keys(@reply_limits))}, each a positive integer"}
  end

  defp valid(:reply_limits, _),
    do:
      {:error,
       "a keyword list of #{inspect(Keyword.keys(@reply_limits))}, each a positive integer"}

  defp valid(:keyword, kw) when is_list(kw), do: {:ok, kw}
  defp valid(:keyword, _), do: {:error, "a keyword list"}
  defp valid(:list, list) when is_list(list), do: {:ok, list}
  defp valid(:list, _), do: {:error, "a list"}
  defp valid(:name, name) when is_atom(name), do: {:ok, name}
  defp valid(:name, {:global, _} = name), do: {:ok, name}
  defp valid(:name, {:via, mod, _} = name) when is_atom(mod), do: {:ok, name}
  # Redix's words.
  defp valid(:name, other) do
    raise ArgumentError, """
    expected :name option to be one of the following:

      * nil
      * atom
      * {:global, term}
      * {:via, module, term}

    Got: #{inspect(other)}
    """
  end

  defp valid(:socket_opts, opts), do: {:ok, RedixRs.Options.Socket.validate!(opts)}
  defp valid(:client_cache, opts), do: RedixRs.Cache.validate(opts)

  @doc "Raises the `ArgumentError` of an invalid option value (for `RedixRs.Options.Cluster` too)."
  @spec invalid!(atom(), String.t(), term()) :: no_return()
  def invalid!(key, expected, value) do
    shown = if key == :password, do: RedixRs.Redact.describe(value), else: inspect(value)

    raise ArgumentError,
          "invalid value for #{inspect(key)} option: expected #{expected}, got: #{shown}"
  end

  # TLS options need `ssl: true`, and `ssl: true` needs TCP; their values are checked here, with
  # the files they name, so that mistakes show at start rather than at each connection attempt.
  defp check_tls!(opts) do
    tls_keys = RedixRs.Options.TLS.keys(opts[:socket_opts])

    cond do
      opts[:ssl] and match?({:local, _}, opts[:host]) ->
        raise ArgumentError,
              "ssl: true cannot be used with a Unix domain socket (Redis serves TLS over TCP only)"

      opts[:ssl] ->
        RedixRs.Options.TLS.native(opts[:socket_opts], check_files: true)
        opts

      tls_keys != [] ->
        raise ArgumentError,
              "the socket options #{inspect(tls_keys)} are TLS options: they need ssl: true " <>
                "(or a rediss:// URI)"

      true ->
        opts
    end
  end

  defp check_sentinel!(validated, given) do
    if validated[:sentinel] && (Keyword.has_key?(given, :host) or Keyword.has_key?(given, :port)) do
      raise ArgumentError, ":host or :port can't be passed as option if :sentinel is used"
    end

    validated
  end

  # Invalidations arrive on the connection itself only with RESP3: RESP2 would need a second,
  # redirected connection, which the cache's correctness argument does not cover.
  defp check_client_cache!(validated, given) do
    if validated[:client_cache] && Keyword.get(given, :protocol) != :resp3 do
      raise ArgumentError,
            "the :client_cache option needs protocol: :resp3 given explicitly (Redis pushes " <>
              "the invalidations the cache relies on over RESP3, on the same connection)"
    end

    validated
  end

  defp check_unix_port!(opts) do
    case {opts[:host], opts[:port]} do
      {{:local, _}, port} when port not in [0, 6379] ->
        raise ArgumentError,
              "when using Unix domain sockets, the port must be 0, got: #{inspect(port)}"

      {{:local, _}, _} ->
        Keyword.put(opts, :port, 0)

      _ ->
        opts
    end
  end

  ## Redis Cluster: `RedixRs.Options.Cluster` holds the cluster's own options and the seed nodes.

  @doc "Markdown describing the cluster options of `RedixRs.Cluster` (`:cluster`) or `RedixRs.PubSub` (`:pubsub`)."
  @spec cluster_docs(:cluster | :pubsub) :: String.t()
  def cluster_docs(mode \\ :cluster), do: RedixRs.Options.Cluster.docs(mode)

  @doc """
  Validates the options of `RedixRs.Cluster.start_link/1` (`:cluster`: returns `{cluster_opts,
  node_opts}`) or of `RedixRs.PubSub.start_link/1` with `:nodes` (`:pubsub`: returns the options).
  See `RedixRs.Options.Cluster.validate!/2`.
  """
  @spec validate_cluster!(keyword(), :cluster | :pubsub) :: {keyword(), keyword()} | keyword()
  def validate_cluster!(opts, mode \\ :cluster), do: RedixRs.Options.Cluster.validate!(opts, mode)
end
