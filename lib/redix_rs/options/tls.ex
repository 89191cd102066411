defmodule RedixRs.Options.TLS do
  # The `:ssl` options of `:socket_opts` (see `RedixRs.Options.Socket`'s table), turned into the
  # map the native side decodes into rustls settings: trusted CAs, client certificates (files or
  # DER), server name, versions, cipher suites, groups and ALPN.
  @moduledoc false

  alias RedixRs.Options.Socket

  # rustls's cipher suites (ring provider), in its order of preference: IANA number, RFC name,
  # OpenSSL name, version, and the map `:ssl` uses for it (`:ssl.str_to_suite/1`). A Rust test
  # checks the numbers against rustls, an ExUnit test the names and maps against `:ssl`.
  @suites [
    {0x1302, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", :tls13,
     %{key_exchange: :any, cipher: :aes_256_gcm, mac: :aead, prf: :sha384}},
    {0x1301, "TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", :tls13,
     %{key_exchange: :any, cipher: :aes_128_gcm, mac: :aead, prf: :sha256}},
    {0x1303, "TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256", :tls13,
     %{key_exchange: :any, cipher: :chacha20_poly1305, mac: :aead, prf: :sha256}},
    {0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384", :tls12,
     %{key_exchange: :ecdhe_ecdsa, cipher: :aes_256_gcm, mac: :aead, prf: :sha384}},
    {0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256", :tls12,
     %{key_exchange: :ecdhe_ecdsa, cipher: :aes_128_gcm, mac: :aead, prf: :sha256}},
    {0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
     :tls12, %{key_exchange: :ecdhe_ecdsa, cipher: :chacha20_poly1305, mac: :aead, prf: :sha256}},
    {0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384", :tls12,
     %{key_exchange: :ecdhe_rsa, cipher: :aes_256_gcm, mac: :aead, prf: :sha384}},
    {0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256", :tls12,
     %{key_exchange: :ecdhe_rsa, cipher: :aes_128_gcm, mac: :aead, prf: :sha256}},
    {0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305", :tls12,
     %{key_exchange: :ecdhe_rsa, cipher: :chacha20_poly1305, mac: :aead, prf: :sha256}}
  ]

  # rustls's key exchange groups (ring provider): `:ssl`'s name and the IANA number.
  @groups [x25519: 0x001D, secp256r1: 0x0017, secp384r1: 0x0018]

  @versions %{:"tlsv1.2" => :tls12, :"tlsv1.3" => :tls13}
  @known_versions [:"tlsv1.3", :"tlsv1.2", :"tlsv1.1", :tlsv1, :sslv3, :"dtlsv1.2", :dtlsv1]

  @doc "rustls's cipher suites: `[{iana, rfc_name, openssl_name, version, ssl_map}]`."
  def suites, do: @suites

  @doc "rustls's key exchange groups: `[{ssl_name, iana}]`."
  def groups, do: @groups

  @doc "Markdown listing the cipher suites and groups rustls has."
  def docs do
    suites =
      Enum.map_join(@suites, ", ", fn {_, rfc, openssl, version, _} ->
        if rfc == openssl,
          do: "`#{rfc}` (#{version_name(version)})",
          else: "`#{openssl}` / `#{rfc}` (#{version_name(version)})"
      end)

    "rustls's cipher suites, in its order of preference: #{suites}. Its key exchange groups: " <>
      Enum.map_join(@groups, ", ", fn {name, _} -> "`#{inspect(name)}`" end) <> "."
  end

  defp version_name(:tls12), do: "TLS 1.2"
  defp version_name(:tls13), do: "TLS 1.3"

  @doc "The `:ssl` options among `socket_opts`' keys."
  def keys(socket_opts) do
    for {key, _} <- socket_opts, is_atom(key), Socket.ssl?(key), uniq: true, do: key
  end

  @doc "Whether these socket options turn verification off (`verify: :verify_none`)."
  def verify_none?(socket_opts), do: settings(socket_opts)[:verify] == :verify_none

  @doc """
  Checks `customize_hostname_check`: only `[]` and Redix's recipe for wildcard certificates,
  `[match_fun: :public_key.pkix_verify_hostname_match_fun(:https)]`, are what rustls does anyway.
  """
  def hostname_check!(value) when is_list(value) do
    Enum.each(value, fn
      {:match_fun, fun} when is_function(fun, 2) ->
        if fun != https_match_fun() do
          Socket.refuse!(
            :customize_hostname_check,
            "a match_fun other than :public_key.pkix_verify_hostname_match_fun(:https) " <>
              "cannot run inside rustls's verifier, which matches names as RFC 6125 says " <>
              "(wildcards included): remove it, or use :server_name_indication to choose the " <>
              "name checked"
          )
        end

      {key, _} ->
        Socket.refuse!(
          :customize_hostname_check,
          "#{inspect(key)} cannot run inside rustls's verifier: use :server_name_indication " <>
            "to choose the name checked"
        )

      other ->
        bad_value!(:customize_hostname_check, "a keyword list", other)
    end)
  end

  def hostname_check!(other), do: bad_value!(:customize_hostname_check, "a keyword list", other)

  defp https_match_fun, do: optional(:public_key, :pkix_verify_hostname_match_fun, [:https])

  # `:public_key` and `:ssl` are not dependencies of redix_rs (TLS runs in Rust): what they know is
  # asked only when they are there, and `nil` stands for "unknown" otherwise.
  defp optional(module, function, args) do
    if Code.ensure_loaded?(module), do: apply(module, function, args)
  end

  @doc """
  The map the native side decodes into its `TlsOptions`, from socket options; raises
  `ArgumentError` on a bad value, and with `check_files: true` on a file that does not exist.

  Connection attempts call it without `check_files`: a file that went away since the start is
  reported by the native side as a `{:tls_config, message}` reason, not as a crash.
  """
  def native(socket_opts, check \\ [check_files: false]) do
    settings = settings(socket_opts)
    check_files = Keyword.fetch!(check, :check_files)
    {server_name, sni} = server_name(Map.get(settings, :server_name_indication))
    depth!(Map.get(settings, :depth))
    {versions, ciphers} = versions_and_ciphers!(settings[:versions], settings[:ciphers])

    %{
      server_name: server_name,
      sni: sni,
      verify: verify(Map.get(settings, :verify, :verify_peer)),
      cacerts: cacerts(Map.get(settings, :cacerts)),
      cacertfile: path(settings[:cacertfile], :cacertfile, check_files),
      client_certs: client_certs!(settings, check_files),
      versions: versions,
      ciphers: ciphers,
      groups: groups!(settings[:eccs], settings[:supported_groups]),
      alpn: alpn!(Map.get(settings, :alpn_advertised_protocols, []))
    }
  end

  # The last occurrence of an option wins, as for the TCP options.
  defp settings(socket_opts) do
    for {key, value} <- socket_opts, is_atom(key), Socket.ssl?(key), into: %{}, do: {key, value}
  end

  ## Client certificates

  # As in `:ssl`: `certs_keys` when given, else `cert` (or `certfile`) with `key` (or `keyfile`,
  # which defaults to `certfile`).
  defp client_certs!(%{certs_keys: list}, check_files) when is_list(list) do
    Enum.map(list, fn
      entry when is_map(entry) ->
        if Map.has_key?(entry, :password), do: refuse_password!()
        unknown = Map.keys(entry) -- [:cert, :key, :certfile, :keyfile]

        if unknown != [],
          do: bad_value!(:certs_keys, "maps with :cert or :certfile, and :key or :keyfile", entry)

        client_cert!(entry, "in :certs_keys", check_files)

      other ->
        bad_value!(:certs_keys, "maps with :cert or :certfile, and :key or :keyfile", other)
    end)
  end

  defp client_certs!(%{certs_keys: other}, _check_files),
    do: bad_value!(:certs_keys, "a list of maps", other)

  defp client_certs!(settings, check_files) do
    entry = Map.take(settings, [:cert, :key, :certfile, :keyfile])
    if entry == %{}, do: [], else: [client_cert!(entry, "", check_files)]
  end

  defp client_cert!(entry, where, check_files) do
    chain =
      cond do
        Map.has_key?(entry, :cert) -> {:der, cert_der!(entry.cert)}
        Map.has_key?(entry, :certfile) -> {:file, path(entry.certfile, :certfile, check_files)}
        Map.has_key?(entry, :key) -> needs!(:key, where)
        Map.has_key?(entry, :keyfile) -> needs!(:keyfile, where)
        true -> bad_value!(:certs_keys, "maps with :cert or :certfile", entry)
      end

    key =
      cond do
        Map.has_key?(entry, :key) -> key_der!(entry.key)
        Map.has_key?(entry, :keyfile) -> {:file, path(entry.keyfile, :keyfile, check_files)}
        # As in `:ssl`, the key may be in the certificate's file.
        match?({:file, _}, chain) -> chain
        true -> needs_key!(where)
      end

    {chain, key}
  end

  defp needs!(key, where) do
    raise ArgumentError,
          "the #{inspect(key)} socket option#{where(where)} needs :certfile or :cert (the " <>
            "client certificate)"
  end

  defp needs_key!(where) do
    raise ArgumentError,
          "the :cert socket option#{where(where)} needs :key or :keyfile (the client " <>
            "certificate's private key)"
  end

  defp where(""), do: ""
  defp where(where), do: " " <> where

  defp cert_der!(der) when is_binary(der), do: [der]

  defp cert_der!([_ | _] = ders) do
    if Enum.all?(ders, &is_binary/1),
      do: ders,
      else: bad_value!(:cert, "a DER certificate or a list of them (binaries)", ders)
  end

  defp cert_der!(other),
    do: bad_value!(:cert, "a DER certificate or a list of them (binaries)", other)

  @key_formats %{RSAPrivateKey: :pkcs1, ECPrivateKey: :sec1, PrivateKeyInfo: :pkcs8}

  defp key_der!({type, der}) when is_map_key(@key_formats, type) and is_binary(der),
    do: {:der, @key_formats[type], der}

  defp key_der!({:DSAPrivateKey, _}) do
    Socket.refuse!(:key, "a DSA key cannot sign with rustls: use an RSA or EC key")
  end

  defp key_der!(%{engine: _}) do
    Socket.refuse!(
      :key,
      "a crypto engine key cannot sign with rustls, which signs with keys it holds: give the " <>
        "key in DER (:key) or PEM (:keyfile)"
    )
  end

  defp key_der!(other) do
    bad_value!(:key, "{:RSAPrivateKey | :ECPrivateKey | :PrivateKeyInfo, der}", other)
  end

  @spec refuse_password!() :: no_return()
  defp refuse_password! do
    Socket.refuse!(
      :password,
      Enum.find_value(Socket.table(), fn {key, _, _, text} -> key == :password && text end)
    )
  end

  ## Versions and cipher suites

  defp versions_and_ciphers!(versions, ciphers) do
    versions = versions!(versions)

    case ciphers!(ciphers) do
      nil ->
        {versions, nil}

      codes ->
        with_suites = for {code, _, _, version, _} <- @suites, code in codes, do: version

        case Enum.filter(versions || [:tls12, :tls13], &(&1 in with_suites)) do
          [] ->
            raise ArgumentError,
                  "no cipher suite of the :ciphers socket option (#{names(codes)}) is one of " <>
                    "the TLS versions of :versions (#{Enum.map_join(versions || [], ", ", &version_name/1)})"

          usable ->
            {usable, codes}
        end
    end
  end

  defp versions!(nil), do: nil

  defp versions!([_ | _] = versions) do
    unless Enum.all?(versions, &(&1 in @known_versions)) do
      bad_value!(:versions, "a list of #{inspect(@known_versions)}", versions)
    end

    case for(v <- [:"tlsv1.2", :"tlsv1.3"], v in versions, do: @versions[v]) do
      [] ->
        raise ArgumentError,
              "rustls speaks TLS 1.2 and 1.3 (:\"tlsv1.2\", :\"tlsv1.3\") only, none of the " <>
                "versions given with the :versions socket option: #{inspect(versions)}"

      overlap ->
        overlap
    end
  end

  defp versions!(other), do: bad_value!(:versions, "a non-empty list of TLS versions", other)

  defp ciphers!(nil), do: nil
  defp ciphers!([]), do: nil

  defp ciphers!(string) when is_binary(string),
    do: overlap!(String.split(string, ":", trim: true))

  defp ciphers!(list) when is_list(list) do
    if List.ascii_printable?(list),
      do: overlap!(list |> List.to_string() |> String.split(":", trim: true)),
      else: overlap!(list)
  end

  defp ciphers!(other),
    do: bad_value!(:ciphers, "a list of cipher suites, or a \":\"-separated string", other)

  defp overlap!(items) do
    case items |> Enum.map(&suite_code!/1) |> Enum.filter(&is_integer/1) |> Enum.uniq() do
      [] ->
        raise ArgumentError,
              "none of the cipher suites of the :ciphers socket option is one rustls has " <>
                "(#{inspect(items)}); it has: #{names(Enum.map(@suites, &elem(&1, 0)))}"

      codes ->
        codes
    end
  end

  defp names(codes) do
    Enum.map_join(codes, ", ", fn code ->
      {_, _, openssl, _, _} = List.keyfind(@suites, code, 0)
      openssl
    end)
  end

  # The suite's number when rustls has it, `:unsupported` when `:ssl` knows it but rustls does not.
  defp suite_code!(%{} = map), do: by_map(Map.take(map, [:key_exchange, :cipher, :mac, :prf]))

  defp suite_code!({kex, cipher, mac}),
    do: by_map(%{key_exchange: kex, cipher: cipher, mac: mac, prf: :default_prf})

  defp suite_code!({kex, cipher, mac, prf}) do
    mac = if cipher in [:aes_128_gcm, :aes_256_gcm, :chacha20_poly1305], do: :aead, else: mac
    by_map(%{key_exchange: kex, cipher: cipher, mac: mac, prf: prf})
  end

  defp suite_code!(<<code::16>>) do
    if List.keymember?(@suites, code, 0), do: code, else: :unsupported
  end

  defp suite_code!(name) when is_binary(name), do: by_name!(name)

  defp suite_code!(name) when is_list(name) do
    if List.ascii_printable?(name) and name != [],
      do: by_name!(List.to_string(name)),
      else: bad_value!(:ciphers, "cipher suites", name)
  end

  defp suite_code!(other), do: bad_value!(:ciphers, "cipher suites", other)

  defp by_map(map) do
    Enum.find_value(@suites, :unsupported, fn {code, _, _, _, suite} -> suite == map && code end)
  end

  defp by_name!(name) do
    found =
      Enum.find_value(@suites, fn {code, rfc, openssl, _, _} ->
        name in [rfc, openssl] && code
      end)

    cond do
      found ->
        found

      # Names `:ssl` knows and rustls does not are left out; other names are mistakes (when
      # `:ssl` is not there to tell, left out as well).
      match?({:error, _}, optional(:ssl, :str_to_suite, [String.to_charlist(name)])) ->
        raise ArgumentError,
              "invalid value for the :ciphers socket option: #{inspect(name)} is not the " <>
                "OpenSSL or RFC name of a cipher suite"

      true ->
        :unsupported
    end
  end

  ## Groups and ALPN

  defp groups!(nil, nil), do: nil

  defp groups!(eccs, supported_groups) do
    eccs = group_list!(:eccs, eccs)
    supported = group_list!(:supported_groups, supported_groups)
    wanted = Enum.filter(supported || eccs, &(eccs == nil or &1 in eccs))

    case for(name <- wanted, code = @groups[name], uniq: true, do: code) do
      [] ->
        raise ArgumentError,
              "none of the groups of the :eccs / :supported_groups socket options is one " <>
                "rustls has (#{inspect(Enum.uniq((supported || []) ++ (eccs || [])))}); it has: " <>
                inspect(Keyword.keys(@groups))

      codes ->
        codes
    end
  end

  defp group_list!(_key, nil), do: nil

  defp group_list!(key, [_ | _] = names) do
    if Enum.all?(names, &is_atom/1),
      do: names,
      else: bad_value!(key, "a non-empty list of group names (atoms)", names)
  end

  defp group_list!(key, other), do: bad_value!(key, "a non-empty list of group names", other)

  defp alpn!(protocols) when is_list(protocols) do
    if Enum.all?(protocols, &(is_binary(&1) and byte_size(&1) in 1..255)),
      do: protocols,
      else:
        bad_value!(:alpn_advertised_protocols, "a list of protocol names (binaries)", protocols)
  end

  defp alpn!(other),
    do: bad_value!(:alpn_advertised_protocols, "a list of protocol names (binaries)", other)

  ## Trust and names

  # Relative paths are relative to the current directory.
  defp path(nil, _key, _check_file), do: nil

  defp path(value, key, check_file) do
    path = chardata(value) || bad_value!(key, "a file path (a string or a charlist)", value)
    path = Path.expand(path)

    if check_file and not File.regular?(path) do
      raise ArgumentError,
            "the #{inspect(key)} socket option names a file that does not exist: #{path}"
    end

    path
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

  # No effect (webpki bounds chains itself), but Redix passes `depth: 3` by default: checked as
  # `:ssl` would.
  defp depth!(nil), do: :ok
  defp depth!(depth) when is_integer(depth) and depth >= 0, do: :ok
  defp depth!(other), do: bad_value!(:depth, "a non-negative integer", other)

  defp bad_value!(key, expected, value) do
    raise ArgumentError,
          "invalid value for the #{inspect(key)} socket option: expected #{expected}, " <>
            "got: #{shown(key, value)}"
  end

  # Private keys are not shown in error messages: their shape is.
  defp shown(key, value) when key in [:key, :certs_keys], do: shape(value)
  defp shown(_key, value), do: inspect(value)

  defp shape(binary) when is_binary(binary), do: "<<#{byte_size(binary)} bytes>>"
  defp shape(tuple) when is_tuple(tuple), do: "{#{tuple |> Tuple.to_list() |> shapes()}}"
  defp shape(list) when is_list(list), do: "[#{shapes(list)}]"

  defp shape(map) when is_map(map),
    do: "%{#{Enum.map_join(map, ", ", fn {k, v} -> "#{inspect(k)} => #{shape(v)}" end)}}"

  defp shape(atom) when is_atom(atom) or is_number(atom), do: inspect(atom)
  defp shape(_other), do: "_"

  defp shapes(list) when is_list(list) do
    if List.improper?(list), do: "_", else: Enum.map_join(list, ", ", &shape/1)
  end
end
