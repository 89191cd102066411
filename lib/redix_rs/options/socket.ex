defmodule RedixRs.Options.Socket do
  # The one table of `:socket_opts`: every `:gen_tcp` connect option and every `:ssl` client option of
  # OTP 25 (plus the `:ssl` server options Redix users copy into clients), each mapped onto the Rust
  # socket or rustls, accepted with no effect, or refused with the reason and what to do instead.
  # The docs of `RedixRs` are written from this table, and a test walks it.
  #
  # This module validates the list and builds the TCP part of the native options;
  # `RedixRs.Options.TLS` builds the TLS part.
  @moduledoc false

  @typedoc "What redix_rs does with an option."
  @type treatment() :: :mapped | :no_effect | :refused

  @typedoc "A row: the option's key, where it comes from, its treatment and what that means."
  @type row() :: {atom(), :gen_tcp | :ssl, treatment(), String.t()}

  @same_family "the server's addresses of the other family are then skipped"
  @binaries "replies are always binaries, parsed in Rust from the raw byte stream"
  @no_port "the socket is not an Erlang port, and replies do not come as socket messages"
  @full_handshake "each connection makes a full handshake (no session resumption)"
  @tls10 "a TLS 1.0 option, and rustls has no TLS 1.0"
  @no_renegotiation "rustls never renegotiates"
  @server_only "a server option (`:ssl` refuses it in a client too): remove it"
  @no_psk "rustls has no PSK or SRP cipher suites: authenticate with a client certificate " <>
            "(`cert`/`certfile`) or Redis's `AUTH` (`:password`)"
  @no_npn "NPN, ALPN's predecessor, is not in rustls: use `alpn_advertised_protocols`"
  @no_ocsp "no OCSP response is requested or checked: remove it"

  @table [
    # :gen_tcp connect options (gen_tcp:connect_option/0, OTP 25)
    {:fd, :gen_tcp, :refused,
     "redix_rs opens its own socket in Rust and cannot take over a descriptor: give `:host` " <>
       "and `:port`"},
    {:inet, :gen_tcp, :mapped, "IPv4 addresses of `:host` first (the default)"},
    {:inet6, :gen_tcp, :mapped, "IPv6 addresses of `:host` first, then IPv4 ones"},
    {:local, :gen_tcp, :refused,
     "a Unix socket is chosen by the address: use `host: {:local, path}`"},
    {:ifaddr, :gen_tcp, :mapped,
     "the local address bound before connecting: an IP tuple, `:any`, `:loopback`, or " <>
       "`%{family: :inet | :inet6, addr: ip, port: port}` (whose port is the local port); " <>
       @same_family},
    {:ip, :gen_tcp, :mapped, "as `ifaddr`"},
    {:port, :gen_tcp, :mapped,
     "the local port bound before connecting (inside `:socket_opts`; the server's port is the " <>
       "`:port` start option)"},
    {:tcp_module, :gen_tcp, :refused,
     "the socket is not driven by an Erlang module: use `:inet6` to prefer IPv6"},
    {:netns, :gen_tcp, :refused,
     "connections are not opened in another network namespace: run the node inside it"},
    {:bind_to_device, :gen_tcp, :mapped, "SO_BINDTODEVICE (the interface's name, a binary)"},
    {:active, :gen_tcp, :no_effect, @no_port},
    {:buffer, :gen_tcp, :mapped,
     "SO_RCVBUF, the nearest native knob to the BEAM's user-space buffer (as `recbuf`)"},
    {:debug, :gen_tcp, :no_effect, "a switch of Erlang ports, and " <> @no_port},
    {:delay_send, :gen_tcp, :mapped,
     "`true` turns Nagle's algorithm on (TCP_NODELAY off, unless `nodelay` is given), so the " <>
       "kernel gathers small writes; redix_rs's writer gathers queued commands anyway"},
    {:deliver, :gen_tcp, :no_effect, @no_port},
    {:dontroute, :gen_tcp, :mapped, "SO_DONTROUTE"},
    {:exit_on_close, :gen_tcp, :no_effect, @no_port},
    {:header, :gen_tcp, :no_effect, @binaries},
    {:high_msgq_watermark, :gen_tcp, :no_effect, @no_port},
    {:high_watermark, :gen_tcp, :no_effect,
     @no_port <> "; `:write_queue_limit` bounds what waits to be written"},
    {:keepalive, :gen_tcp, :mapped, "SO_KEEPALIVE"},
    {:linger, :gen_tcp, :mapped,
     "SO_LINGER: `{true, 0}` closes with a reset (no TIME_WAIT), `{false, _}` is the default; " <>
       "`{true, n}` with n > 0 raises, as such a close blocks the closing thread, here the I/O " <>
       "thread of every connection, for up to n seconds"},
    {:low_msgq_watermark, :gen_tcp, :no_effect, @no_port},
    {:low_watermark, :gen_tcp, :no_effect,
     @no_port <> "; `:write_queue_limit` bounds what waits to be written"},
    {:mode, :gen_tcp, :no_effect, @binaries},
    {:list, :gen_tcp, :no_effect, @binaries},
    {:binary, :gen_tcp, :no_effect, @binaries},
    {:nodelay, :gen_tcp, :mapped,
     "TCP_NODELAY, on by default (the writer gathers queued commands itself)"},
    {:packet, :gen_tcp, :no_effect, @binaries},
    {:packet_size, :gen_tcp, :no_effect, @binaries},
    {:priority, :gen_tcp, :mapped, "SO_PRIORITY"},
    {:raw, :gen_tcp, :mapped,
     "`{:raw, 6, 4 | 5 | 6, <<n::native-32>>}`: TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT (the " <>
       "keepalive timing, Linux's numbers); other raw options raise, as their meaning cannot " <>
       "be checked: use the named option"},
    {:recbuf, :gen_tcp, :mapped, "SO_RCVBUF"},
    {:reuseaddr, :gen_tcp, :no_effect,
     "SO_REUSEADDR is set whenever a local `port` is bound, and only then, so that the port " <>
       "can be bound again while an earlier connection from it is in TIME_WAIT (the kernel " <>
       "still refuses the same server from it until that ends)"},
    {:send_timeout, :gen_tcp, :mapped,
     "TCP_USER_TIMEOUT: when written data stays unacknowledged, or cannot be sent because " <>
       "the server reads nothing, for this many milliseconds, the kernel closes the " <>
       "connection (reason `:etimedout`; Redix says `:timeout`); `:infinity` leaves it off"},
    {:send_timeout_close, :gen_tcp, :mapped,
     "the connection closes on a send timeout with or without it: a command written in part " <>
       "cannot be taken back (Redix disconnects too)"},
    {:show_econnreset, :gen_tcp, :no_effect,
     "a reset connection is reported as `:econnreset` either way"},
    {:sndbuf, :gen_tcp, :mapped, "SO_SNDBUF"},
    {:tos, :gen_tcp, :mapped, "IP_TOS (IPv4 connections)"},
    {:tclass, :gen_tcp, :mapped, "IPV6_TCLASS (IPv6 connections)"},
    {:ttl, :gen_tcp, :mapped, "IP_TTL, or IPV6_UNICAST_HOPS on IPv6"},
    {:recvtos, :gen_tcp, :no_effect, "ancillary data of received packets is not read"},
    {:recvtclass, :gen_tcp, :no_effect, "ancillary data of received packets is not read"},
    {:recvttl, :gen_tcp, :no_effect, "ancillary data of received packets is not read"},
    {:ipv6_v6only, :gen_tcp, :no_effect, "it matters to sockets that listen"},
    # :ssl client options (ssl:client_option/0, OTP 25)
    {:verify, :ssl, :mapped,
     "`:verify_peer` (the default) checks the chain and the name; `:verify_none` accepts any " <>
       "certificate (encrypted, not authenticated; a warning is logged)"},
    {:reuse_session, :ssl, :no_effect,
     "`:ssl`'s sessions cannot be resumed by rustls: " <> @full_handshake},
    {:reuse_sessions, :ssl, :no_effect, @full_handshake},
    {:cacerts, :ssl, :mapped,
     "DER certificates of the CAs to trust instead of the system's (`:public_key.cacerts_get()` " <>
       "works too); wins over `cacertfile`"},
    {:cacertfile, :ssl, :mapped, "a PEM file of the CAs to trust instead of the system's"},
    {:alpn_advertised_protocols, :ssl, :mapped,
     "the ALPN protocol names offered (binaries; Redis itself negotiates none)"},
    {:client_preferred_next_protocols, :ssl, :refused, @no_npn},
    {:psk_identity, :ssl, :refused, @no_psk},
    {:srp_identity, :ssl, :refused, @no_psk},
    {:server_name_indication, :ssl, :mapped,
     "the name sent as SNI and checked against the certificate instead of `:host` (a string " <>
       "or charlist); `:disable` sends no SNI and checks `:host`"},
    {:max_fragment_length, :ssl, :no_effect,
     "rustls does not negotiate the max_fragment_length extension: records keep their full size"},
    {:customize_hostname_check, :ssl, :no_effect,
     "Redix's recipe for wildcard certificates, `[match_fun: " <>
       ":public_key.pkix_verify_hostname_match_fun(:https)]`, is what rustls does anyway (RFC " <>
       "6125: `*.example.com` covers one label), as is `[]`; any other `match_fun` or a " <>
       "`fqdn_fun` raises, since no custom check can run inside rustls's verifier: use " <>
       "`server_name_indication` to choose the name checked"},
    {:fallback, :ssl, :no_effect, "rustls never retries with a lower version"},
    {:middlebox_comp_mode, :ssl, :no_effect, "rustls's TLS 1.3 handshakes always use it"},
    {:certificate_authorities, :ssl, :no_effect,
     "rustls does not send the certificate_authorities extension"},
    {:session_tickets, :ssl, :no_effect, @full_handshake},
    {:use_ticket, :ssl, :no_effect, @full_handshake},
    {:early_data, :ssl, :refused,
     "0-RTT early data is not sent: send the commands once connected"},
    {:next_protocol_selector, :ssl, :refused, @no_npn},
    # :ssl options common to clients and servers (ssl:common_option/0, OTP 25)
    {:protocol, :ssl, :no_effect,
     "`:tls` (the default) is the protocol; `:dtls` raises: Redis serves TLS over TCP"},
    {:handshake, :ssl, :no_effect,
     "`:full` (the default) is what happens; `:hello` raises: a handshake cannot be paused"},
    {:cert, :ssl, :mapped,
     "the client certificate in DER (`der`, or `[der | intermediates]`) instead of `certfile`; " <>
       "needs `key` or `keyfile`"},
    {:certfile, :ssl, :mapped,
     "a PEM file of the client certificate (and intermediates), read at each connection"},
    {:key, :ssl, :mapped,
     "the client key in DER, `{:RSAPrivateKey | :ECPrivateKey | :PrivateKeyInfo, der}`, " <>
       "instead of `keyfile`; DSA and crypto-engine keys raise, as rustls cannot sign with them"},
    {:keyfile, :ssl, :mapped,
     "a PEM file of the client key (PKCS#8, RSA or EC, unencrypted), read at each connection; " <>
       "defaults to `certfile`"},
    {:password, :ssl, :refused,
     "rustls reads no encrypted private key: decrypt it (`openssl pkey -in enc.pem -out " <>
       "key.pem`) and protect the file instead"},
    {:certs_keys, :ssl, :mapped,
     "client certificates to choose from, `[%{cert: ..., key: ...} | %{certfile: ..., " <>
       "keyfile: ...}]`: the first whose key can sign with a scheme the server accepts; when " <>
       "given, `cert`, `key`, `certfile` and `keyfile` are ignored, as in `:ssl`"},
    {:ciphers, :ssl, :mapped,
     "the overlap with rustls's cipher suites (below), in the order given: OpenSSL or RFC " <>
       "names (strings or charlists, or one `\":\"`-separated string), maps from " <>
       "`:ssl.cipher_suites/2`, tuples, or 2-byte suite codes; no overlap raises, naming " <>
       "what rustls has"},
    {:eccs, :ssl, :mapped,
     "the overlap with rustls's groups (`:x25519`, `:secp256r1`, `:secp384r1`); no overlap raises"},
    {:signature_algs, :ssl, :no_effect,
     "rustls offers its own fixed set (ECDSA P-256/P-384, Ed25519, RSA-PSS, RSA PKCS#1 with " <>
       "SHA-256/384/512; no SHA-1, no DSA)"},
    {:signature_algs_cert, :ssl, :no_effect, "as `signature_algs`"},
    {:supported_groups, :ssl, :mapped, "as `eccs` (with both, the groups in both)"},
    {:secure_renegotiate, :ssl, :no_effect, @no_renegotiation},
    {:keep_secrets, :ssl, :no_effect, "session secrets are not exported"},
    {:depth, :ssl, :no_effect, "webpki applies its own limit to chains"},
    {:verify_fun, :ssl, :refused,
     "no verification function can run inside rustls's verifier: choose the trusted CAs with " <>
       "`cacertfile`/`cacerts`, the name checked with `server_name_indication`, or turn " <>
       "checks off with `verify: :verify_none`"},
    {:crl_check, :ssl, :refused,
     "certificate revocation lists are not checked: remove it (`false` is accepted)"},
    {:crl_cache, :ssl, :refused, "certificate revocation lists are not checked: remove it"},
    {:max_handshake_size, :ssl, :no_effect, "rustls bounds handshake messages itself"},
    {:partial_chain, :ssl, :refused,
     "only the CAs of `cacertfile`/`cacerts` are trust anchors: put the intermediate CA you " <>
       "trust in `cacertfile`"},
    {:versions, :ssl, :mapped,
     "the overlap with TLS 1.2 and 1.3 (`[:\"tlsv1.1\", :\"tlsv1.2\"]` means TLS 1.2); no " <>
       "overlap raises"},
    {:user_lookup_fun, :ssl, :refused, @no_psk},
    {:log_level, :ssl, :no_effect, "rustls does not log through `Logger`"},
    {:log_alert, :ssl, :no_effect, "rustls does not log through `Logger`"},
    {:hibernate_after, :ssl, :no_effect, "there is no `:ssl` connection process to hibernate"},
    {:padding_check, :ssl, :no_effect, @tls10},
    {:beast_mitigation, :ssl, :no_effect, @tls10},
    {:ssl_imp, :ssl, :no_effect, "deprecated in `:ssl`"},
    {:key_update_at, :ssl, :no_effect, "rustls updates keys on its own schedule"},
    {:receiver_spawn_opts, :ssl, :no_effect, "there is no `:ssl` receiver process"},
    {:sender_spawn_opts, :ssl, :no_effect, "there is no `:ssl` sender process"},
    # ssl:transport_option/0
    {:cb_info, :ssl, :refused,
     "TLS runs in Rust over redix_rs's own socket, which no callback module can carry: remove it"},
    # The other options `:ssl` (OTP 25) knows
    {:ocsp_stapling, :ssl, :refused,
     "no OCSP response is requested: remove it (`false` is accepted)"},
    {:ocsp_responder_certs, :ssl, :refused, @no_ocsp},
    {:ocsp_nonce, :ssl, :refused, @no_ocsp},
    {:renegotiate_at, :ssl, :no_effect, @no_renegotiation},
    {:honor_cipher_order, :ssl, :no_effect,
     "a server option (`:ssl` refuses it in a client): the server picks among what the client " <>
       "offers"},
    {:honor_ecc_order, :ssl, :no_effect,
     "a server option (`:ssl` refuses it in a client): the server picks among what the client " <>
       "offers"},
    {:alpn_preferred_protocols, :ssl, :refused, @server_only},
    {:anti_replay, :ssl, :refused, @server_only},
    {:client_renegotiation, :ssl, :refused, @server_only},
    {:cookie, :ssl, :refused, @server_only},
    {:dh, :ssl, :refused, @server_only},
    {:dhfile, :ssl, :refused, @server_only},
    {:fail_if_no_peer_cert, :ssl, :refused, @server_only},
    {:next_protocols_advertised, :ssl, :refused, @server_only},
    {:sni_fun, :ssl, :refused, @server_only},
    {:sni_hosts, :ssl, :refused, @server_only},
    {:erl_dist, :ssl, :refused, "internal to Erlang distribution over TLS: remove it"}
  ]

  @rows Map.new(@table, fn {key, layer, treatment, text} -> {key, {layer, treatment, text}} end)

  # Options given as a bare atom rather than a `{key, value}` tuple.
  @bare [:inet, :inet6, :local, :list, :binary]

  @doc "The table: `[{key, :gen_tcp | :ssl, treatment, text}]`."
  @spec table() :: [row()]
  def table, do: @table

  @doc "Whether `key` is an `:ssl` option (which needs `ssl: true`)."
  def ssl?(key), do: match?({:ssl, _, _}, @rows[key])

  @doc "Markdown: the table, then the cipher suites and groups rustls has."
  def docs do
    rows =
      Enum.map_join(@table, "\n", fn {key, layer, treatment, text} ->
        "| `#{inspect(key)}` | `#{inspect(layer)}` | #{treatment_name(treatment)} | #{cell(text)} |"
      end)

    """
    | option | of | treatment | what redix_rs does |
    |---|---|---|---|
    #{rows}

    #{RedixRs.Options.TLS.docs()}
    """
  end

  @doc "`text` in a Markdown table's cell (its `|` escaped)."
  def cell(text), do: String.replace(text, "|", "\\|")

  defp treatment_name(:mapped), do: "mapped"
  defp treatment_name(:no_effect), do: "no effect"
  defp treatment_name(:refused), do: "refused"

  @doc """
  Checks every socket option against the table: raises `ArgumentError` for an unknown option, a
  refused one (saying why and what to do instead) or a TCP option with a bad value. Returns `opts`.
  """
  def validate!(opts) do
    unless is_list(opts) and not List.improper?(opts) and
             Enum.all?(opts, &(is_atom(&1) or is_tuple(&1))) do
      raise ArgumentError,
            "invalid value for :socket_opts option: expected a list of socket options " <>
              "(atoms and tuples, as :gen_tcp and :ssl take them), got: #{inspect(opts)}"
    end

    Enum.each(opts, &check_option!/1)
    tcp!(opts)
    opts
  end

  @doc "The TCP part of the native options (`{:ok, map}`); `opts` were validated."
  def parse(opts), do: {:ok, tcp!(opts)}

  @doc "The settings used when no socket option is given."
  def defaults do
    %{
      inet6: false,
      keepalive: false,
      nodelay: true,
      sndbuf: nil,
      recbuf: nil,
      local_address: nil,
      local_port: nil,
      linger: nil,
      tos: nil,
      tclass: nil,
      ttl: nil,
      priority: nil,
      dontroute: false,
      bind_to_device: nil,
      keepalive_idle: nil,
      keepalive_interval: nil,
      keepalive_count: nil,
      send_timeout: nil
    }
  end

  defp check_option!(opt) do
    key = key(opt)

    case @rows[key] do
      nil ->
        raise ArgumentError,
              "unknown socket option #{inspect(key || opt)}: :socket_opts takes the options of " <>
                ":gen_tcp and (with ssl: true) of :ssl listed in the RedixRs docs"

      {_layer, :refused, text} ->
        if not accepted_anyway?(opt), do: refuse!(key, text)

      {_layer, _treatment, _text} ->
        check_value!(opt)
    end
  end

  defp key(opt) when is_atom(opt) and opt in @bare, do: opt

  defp key(opt) when is_tuple(opt) and tuple_size(opt) >= 2 and is_atom(elem(opt, 0)),
    do: elem(opt, 0)

  defp key(_opt), do: nil

  # The "off" values of refused options change nothing.
  defp accepted_anyway?({:crl_check, false}), do: true
  defp accepted_anyway?({:ocsp_stapling, false}), do: true
  defp accepted_anyway?(_opt), do: false

  @doc "Raises the `ArgumentError` of a refused option: why, and what to do instead."
  @spec refuse!(atom(), String.t()) :: no_return()
  def refuse!(key, text) do
    raise ArgumentError, "the socket option #{inspect(key)} is not supported by redix_rs: #{text}"
  end

  # Options accepted with no effect whose other values cannot be honoured.
  defp check_value!({:protocol, :tls}), do: :ok

  defp check_value!({:protocol, other}),
    do:
      refuse!(
        :protocol,
        "#{inspect(other)}: Redis serves TLS over TCP (use :tls or leave it out)"
      )

  defp check_value!({:handshake, :full}), do: :ok

  defp check_value!({:handshake, other}),
    do:
      refuse!(
        :handshake,
        "#{inspect(other)}: a handshake cannot be paused (use :full or leave it out)"
      )

  defp check_value!({:customize_hostname_check, value}),
    do: RedixRs.Options.TLS.hostname_check!(value)

  defp check_value!(_opt), do: :ok

  # Builds the TCP map, checking the values (the last occurrence of an option wins).
  defp tcp!(opts) do
    acc = Enum.reduce(opts, Map.put(defaults(), :delay_send, false), &put/2)

    nodelay =
      case acc do
        %{nodelay_given: true} -> acc.nodelay
        %{delay_send: true} -> false
        _ -> acc.nodelay
      end

    local_address =
      case acc.local_address do
        :loopback -> if acc.inet6, do: "::1", else: "127.0.0.1"
        other -> other
      end

    acc
    |> Map.drop([:delay_send, :nodelay_given])
    |> Map.merge(%{nodelay: nodelay, local_address: local_address})
  end

  defp put(:inet6, acc), do: %{acc | inet6: true}
  defp put(:inet, acc), do: %{acc | inet6: false}
  defp put({:keepalive, b}, acc) when is_boolean(b), do: %{acc | keepalive: b}

  defp put({:nodelay, b}, acc) when is_boolean(b),
    do: Map.merge(acc, %{nodelay: b, nodelay_given: true})

  defp put({:delay_send, b}, acc) when is_boolean(b), do: %{acc | delay_send: b}
  defp put({:dontroute, b}, acc) when is_boolean(b), do: %{acc | dontroute: b}
  defp put({:sndbuf, n}, acc) when is_integer(n) and n > 0, do: %{acc | sndbuf: n}
  defp put({:recbuf, n}, acc) when is_integer(n) and n > 0, do: %{acc | recbuf: n}
  defp put({:buffer, n}, acc) when is_integer(n) and n > 0, do: %{acc | recbuf: n}

  defp put({key, n}, acc)
       when key in [:tos, :tclass, :priority] and is_integer(n) and n in 0..255,
       do: Map.put(acc, key, n)

  defp put({:ttl, n}, acc) when is_integer(n) and n in 1..255, do: %{acc | ttl: n}

  defp put({:linger, {false, seconds}}, acc) when is_integer(seconds) and seconds >= 0,
    do: %{acc | linger: nil}

  defp put({:linger, {true, 0}}, acc), do: %{acc | linger: 0}

  defp put({:linger, {true, seconds}} = opt, _acc) when is_integer(seconds) and seconds > 0 do
    refuse!(
      :linger,
      "#{inspect(opt)}: a lingering close blocks the thread that closes the socket for up to " <>
        "#{seconds} s, and redix_rs closes sockets on the I/O thread every connection shares: " <>
        "use {true, 0} (close with a reset) or leave it out"
    )
  end

  defp put({:send_timeout, :infinity}, acc), do: %{acc | send_timeout: nil}

  defp put({:send_timeout, ms}, acc) when is_integer(ms) and ms >= 0,
    do: %{acc | send_timeout: ms}

  defp put({:send_timeout_close, b}, acc) when is_boolean(b), do: acc

  defp put({:bind_to_device, device}, acc)
       when is_binary(device) and byte_size(device) in 1..15,
       do: %{acc | bind_to_device: device}

  defp put({:port, port}, acc) when is_integer(port) and port in 0..65_535,
    do: %{acc | local_port: if(port > 0, do: port)}

  defp put({key, address}, acc) when key in [:ip, :ifaddr], do: put_local(key, address, acc)
  defp put(raw, acc) when elem(raw, 0) == :raw, do: put_raw(raw, acc)

  defp put({key, value}, acc) when is_atom(key) do
    case @rows[key] do
      {:gen_tcp, :mapped, _} ->
        bad_value!(key, expected(key), value)

      # No effect, or `:ssl` (`RedixRs.Options.TLS`'s business).
      _ ->
        acc
    end
  end

  defp put(_bare, acc), do: acc

  defp put_local(key, %{family: family, addr: addr} = sockaddr, acc)
       when family in [:inet, :inet6] do
    acc = put_local(key, addr, acc)

    case Map.get(sockaddr, :port, 0) do
      port when is_integer(port) and port in 0..65_535 ->
        %{acc | local_port: if(port > 0, do: port)}

      _ ->
        bad_value!(key, expected(key), sockaddr)
    end
  end

  defp put_local(_key, :any, acc), do: %{acc | local_address: nil}
  defp put_local(_key, :loopback, acc), do: %{acc | local_address: :loopback}

  defp put_local(key, {:local, _} = address, _acc) do
    refuse!(
      key,
      "#{inspect(address)}: a Unix socket is chosen by the address: use " <>
        "`host: {:local, path}`"
    )
  end

  defp put_local(key, address, acc) when is_tuple(address) do
    case :inet.ntoa(address) do
      {:error, _} -> bad_value!(key, expected(key), address)
      text -> %{acc | local_address: List.to_string(text)}
    end
  end

  defp put_local(key, address, _acc), do: bad_value!(key, expected(key), address)

  # IPPROTO_TCP (6) with TCP_KEEPIDLE (4), TCP_KEEPINTVL (5) or TCP_KEEPCNT (6), Linux's numbers.
  @keepalive_raw %{4 => :keepalive_idle, 5 => :keepalive_interval, 6 => :keepalive_count}

  defp put_raw({:raw, 6, option, <<n::native-signed-32>>}, acc)
       when is_map_key(@keepalive_raw, option) and n > 0,
       do: Map.put(acc, @keepalive_raw[option], n)

  defp put_raw(raw, _acc) do
    refuse!(
      :raw,
      "#{inspect(raw)}: only {:raw, 6, 4 | 5 | 6, <<n::native-32>>} with n > 0 " <>
        "(TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) is taken, as the meaning of other raw " <>
        "options cannot be checked: use the named option (keepalive:, nodelay:, sndbuf:, ...)"
    )
  end

  defp expected(key) when key in [:inet, :inet6], do: "no value (the bare atom #{inspect(key)})"

  defp expected(key) when key in [:keepalive, :nodelay, :delay_send, :dontroute],
    do: "a boolean"

  defp expected(key) when key in [:sndbuf, :recbuf, :buffer], do: "a positive integer (bytes)"
  defp expected(key) when key in [:tos, :tclass, :priority], do: "an integer from 0 to 255"
  defp expected(:ttl), do: "an integer from 1 to 255"
  defp expected(:linger), do: "{boolean, seconds}"
  defp expected(:send_timeout), do: "a non-negative integer (milliseconds) or :infinity"
  defp expected(:send_timeout_close), do: "a boolean"
  defp expected(:bind_to_device), do: "an interface name (a binary of 1 to 15 bytes)"
  defp expected(:port), do: "an integer from 0 to 65535"

  defp expected(_ip),
    do: "an IP address tuple, :any, :loopback or %{family: :inet | :inet6, addr: ip, port: port}"

  defp bad_value!(key, expected, value) do
    raise ArgumentError,
          "invalid value for the #{inspect(key)} socket option: expected #{expected}, " <>
            "got: #{inspect(value)}"
  end
end
