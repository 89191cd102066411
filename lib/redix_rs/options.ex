defmodule RedixRs.Options do
  # The one place where start options are declared and validated. The schema also writes the option
  # docs shown in `RedixRs.start_link/1`.
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
        "TCP socket options: `:inet6`, `:inet`, `keepalive: boolean`, `nodelay: boolean`, " <>
          "`sndbuf:`, `recbuf:` and `buffer:` (bytes); with `ssl: true`, also the TLS options " <>
          "`cacertfile:`, `cacerts:`, `certfile:`, `keyfile:`, `verify:`, " <>
          "`server_name_indication:` and `depth:` (as in `:ssl`); other options raise `ArgumentError`"
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
  defp schema(:pubsub), do: Keyword.delete(@schema, :health_check_interval) ++ @pubsub_schema
  defp schema(:pubsub_only), do: @pubsub_schema

  @doc "Markdown describing every start option of a `:plain` or `:pubsub` connection."
  def docs(mode \\ :plain) do
    Enum.map_join(schema(mode), "\n", fn {key, spec} ->
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
    keys = Keyword.keys(schema)

    case Keyword.keys(opts) -- keys do
      [] ->
        :ok

      unknown ->
        raise ArgumentError,
              "unknown options #{inspect(Enum.uniq(unknown))}, valid options are: #{inspect(keys)}"
    end

    validated =
      Enum.map(schema, fn {key, spec} ->
        value = Keyword.get(opts, key, spec[:default])
        {key, check!(spec[:type], key, value, spec[:default])}
      end)

    validated |> check_unix_port!() |> check_tls!() |> check_sentinel!(opts)
  end

  def validate!(other, _mode) do
    raise ArgumentError,
          "expected a keyword list of options, got: #{inspect(RedixRs.Redact.term(other))}"
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

  defp valid(:socket_opts, opts) when is_list(opts) do
    RedixRs.Options.TLS.reject_unsupported!(opts)
    with {:ok, _} <- RedixRs.Options.Socket.parse(opts), do: {:ok, opts}
  end

  defp valid(:socket_opts, _), do: {:error, "a list of socket options"}

  defp invalid!(key, expected, value) do
    shown = if key == :password, do: RedixRs.Redact.describe(value), else: inspect(value)

    raise ArgumentError,
          "invalid value for #{inspect(key)} option: expected #{expected}, got: #{shown}"
  end

  # TLS options need `ssl: true`, and `ssl: true` needs TCP; their values are checked here, with
  # the files they name, so that mistakes show at start rather than at each connection attempt.
  defp check_tls!(opts) do
    tls_keys = opts[:socket_opts] |> RedixRs.Options.TLS.take() |> Keyword.keys() |> Enum.uniq()

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
end

defmodule RedixRs.Options.Socket do
  # Redix's `:socket_opts` vocabulary for plain TCP, mapped onto what the Rust transport sets.
  @moduledoc false

  @doc "Parses `:gen_tcp`-style options into a map; `{:error, expected}` names what is unsupported."
  def parse(opts) do
    Enum.reduce_while(opts, {:ok, defaults()}, fn opt, {:ok, acc} ->
      case put(opt, acc) do
        {:ok, acc} -> {:cont, {:ok, acc}}
        :error -> {:halt, {:error, "supported socket options (#{inspect(opt)} is not supported)"}}
      end
    end)
  end

  @doc "The settings used when no socket option is given."
  def defaults, do: %{inet6: false, keepalive: false, nodelay: true, sndbuf: nil, recbuf: nil}

  defp put(:inet6, acc), do: {:ok, %{acc | inet6: true}}
  defp put(:inet, acc), do: {:ok, %{acc | inet6: false}}
  defp put({:keepalive, b}, acc) when is_boolean(b), do: {:ok, %{acc | keepalive: b}}
  defp put({:nodelay, b}, acc) when is_boolean(b), do: {:ok, %{acc | nodelay: b}}
  defp put({:sndbuf, n}, acc) when is_integer(n) and n > 0, do: {:ok, %{acc | sndbuf: n}}
  defp put({:recbuf, n}, acc) when is_integer(n) and n > 0, do: {:ok, %{acc | recbuf: n}}

  # `:buffer` is the BEAM's user-space buffer; the nearest native knob is the kernel receive buffer.
  defp put({:buffer, n}, acc) when is_integer(n) and n > 0, do: {:ok, %{acc | recbuf: n}}

  # TLS options are `RedixRs.Options.TLS`'s business.
  defp put({key, _value}, acc) when is_atom(key) do
    if RedixRs.Options.TLS.key?(key), do: {:ok, acc}, else: :error
  end

  defp put(_, _), do: :error
end

defmodule RedixRs.Options.TLS do
  # Redix's `:ssl` socket options, mapped onto what the Rust side (rustls) does. Options of `:ssl`
  # with no rustls equivalent raise rather than being ignored.
  @moduledoc false

  @keys [:cacertfile, :cacerts, :certfile, :keyfile, :verify, :server_name_indication, :depth]

  # Client options of `:ssl` that have no equivalent here.
  @unsupported [
    :verify_fun,
    :customize_hostname_check,
    :versions,
    :ciphers,
    :password,
    :cert,
    :key,
    :certs_keys,
    :partial_chain,
    :crl_check,
    :crl_cache,
    :reuse_sessions,
    :reuse_session,
    :session_tickets,
    :use_ticket,
    :early_data,
    :alpn_advertised_protocols,
    :next_protocols_advertised,
    :client_preferred_next_protocols,
    :signature_algs,
    :signature_algs_cert,
    :supported_groups,
    :eccs,
    :secure_renegotiate,
    :client_renegotiation,
    :renegotiate_at,
    :fail_if_no_peer_cert,
    :log_level,
    :log_alert,
    :padding_check,
    :beast_mitigation,
    :middlebox_comp_mode,
    :max_handshake_size,
    :handshake,
    :keep_secrets,
    :max_fragment_length,
    :ocsp_stapling,
    :ocsp_responder_certs,
    :ocsp_nonce,
    :stapling,
    :key_update_at,
    :protocol,
    :psk_identity,
    :srp_identity,
    :user_lookup_fun,
    :dh,
    :dhfile,
    :honor_cipher_order,
    :honor_ecc_order,
    :sni_fun,
    :sni_hosts,
    :certificate_authorities,
    :cb_info,
    :sender_spawn_opts,
    :receiver_spawn_opts
  ]

  @doc "Whether `key` is a TLS option redix_rs supports."
  def key?(key), do: key in @keys

  @doc "The TLS options among socket options."
  def take(socket_opts) do
    for {key, _} = opt <- socket_opts, key?(key), do: opt
  end

  # What to do instead, for the options Redix users are most likely to have.
  @hints %{
    customize_hostname_check:
      "; wildcard certificates are matched as RFC 6125 says without it, and " <>
        ":server_name_indication sets the name checked",
    verify_fun: "; :verify_none turns verification off, :cacertfile/:cacerts choose the CAs",
    versions: "; rustls negotiates TLS 1.3, or TLS 1.2 with servers that lack 1.3",
    ciphers: "; rustls offers only modern cipher suites",
    password: "; decrypt the key file first",
    cert: "; use :certfile (PEM)",
    key: "; use :keyfile (PEM)"
  }

  @doc "Raises `ArgumentError` naming the first `:ssl` option that redix_rs cannot honour."
  def reject_unsupported!(socket_opts) do
    Enum.each(socket_opts, fn
      {key, _} when key in @unsupported ->
        raise ArgumentError,
              "the :ssl socket option #{inspect(key)} is not supported by redix_rs, whose TLS " <>
                "is rustls#{Map.get(@hints, key, "")}; the TLS options it takes are " <>
                "#{inspect(@keys)}"

      _ ->
        :ok
    end)
  end

  @doc "Whether these socket options turn verification off (`verify: :verify_none`)."
  def verify_none?(socket_opts), do: settings(socket_opts)[:verify] == :verify_none

  @doc """
  The map the native side decodes into its `TlsOptions`, from socket options; raises
  `ArgumentError` on a bad value, and with `check_files: true` on a file that does not exist.

  Connection attempts call it without `check_files`: a file that went away since the start is
  reported by the native side as a `{:tls_config, message}` reason, not as a crash.
  """
  def native(socket_opts, check \\ [check_files: false]) do
    settings = settings(socket_opts)
    check_files = Keyword.fetch!(check, :check_files)
    certfile = path(settings, :certfile, check_files)
    keyfile = path(settings, :keyfile, check_files)

    if keyfile && !certfile do
      raise ArgumentError, "the :keyfile socket option needs :certfile (the client certificate)"
    end

    {server_name, sni} = server_name(Map.get(settings, :server_name_indication))
    depth!(Map.get(settings, :depth))

    %{
      server_name: server_name,
      sni: sni,
      verify: verify(Map.get(settings, :verify, :verify_peer)),
      cacerts: cacerts(Map.get(settings, :cacerts)),
      cacertfile: path(settings, :cacertfile, check_files),
      certfile: certfile,
      # As in `:ssl`, the key may be in the certificate's file.
      keyfile: keyfile || certfile
    }
  end

  # The last occurrence of an option wins, as for the TCP options.
  defp settings(socket_opts), do: socket_opts |> take() |> Map.new()

  # Relative paths are relative to the current directory.
  defp path(settings, key, check_file) do
    case Map.get(settings, key) do
      nil ->
        nil

      value ->
        path = chardata(value) || bad_value!(key, "a file path (a string or a charlist)", value)
        path = Path.expand(path)

        if check_file and not File.regular?(path) do
          raise ArgumentError,
                "the #{inspect(key)} socket option names a file that does not exist: #{path}"
        end

        path
    end
  end

  defp verify(:verify_peer), do: true
  defp verify(:verify_none), do: false
  defp verify(other), do: bad_value!(:verify, ":verify_peer or :verify_none", other)

  # `:public_key.cacerts_get/0` returns `{:cert, der, decoded}` records: their DER is what counts.
  defp cacerts(nil), do: nil

  defp cacerts(certs) when is_list(certs) do
    Enum.map(certs, fn
      der when is_binary(der) -> der
      {:cert, der, _decoded} when is_binary(der) -> der
      _ -> bad_value!(:cacerts, "a list of DER-encoded certificates (binaries)", certs)
    end)
  end

  defp cacerts(other),
    do: bad_value!(:cacerts, "a list of DER-encoded certificates (binaries)", other)

  defp server_name(nil), do: {nil, true}
  defp server_name(:disable), do: {nil, false}

  defp server_name(name) do
    case chardata(name) do
      nil ->
        bad_value!(:server_name_indication, "a host name (string or charlist) or :disable", name)

      "" ->
        bad_value!(:server_name_indication, "a host name (string or charlist) or :disable", name)

      name ->
        {name, true}
    end
  end

  defp chardata(value) when is_binary(value) or is_list(value) do
    IO.chardata_to_string(value)
  rescue
    _ in [ArgumentError, UnicodeConversionError] -> nil
  end

  defp chardata(_value), do: nil

  # Accepted because Redix passes `depth: 3` by default; webpki bounds chains itself.
  defp depth!(nil), do: :ok
  defp depth!(depth) when is_integer(depth) and depth >= 0, do: :ok
  defp depth!(other), do: bad_value!(:depth, "a non-negative integer", other)

  defp bad_value!(key, expected, value) do
    raise ArgumentError,
          "invalid value for the #{inspect(key)} socket option: expected #{expected}, " <>
            "got: #{inspect(value)}"
  end
end
