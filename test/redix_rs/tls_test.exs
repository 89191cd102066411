defmodule RedixRs.TLSTest.Certs do
  @moduledoc false
  # Test certificates, made with `openssl` when the test module starts: a CA, a second CA nobody
  # trusts, and certificates signed by the first one (P-256 keys: quick to make).

  @ec ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

  @doc "Writes every certificate and key into `dir`; returns their paths by name."
  def generate!(dir) do
    File.mkdir_p!(dir)
    ca = ca!(dir, "ca", "redix_rs test CA")
    other_ca = ca!(dir, "other_ca", "redix_rs untrusted CA")

    server = sign!(dir, ca, "server", "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth")
    wildcard = sign!(dir, ca, "wildcard", "*.redix.test", "DNS:*.redix.test", "serverAuth")
    client = sign!(dir, ca, "client", "redix_rs client", nil, "clientAuth")
    rsa_client = sign!(dir, ca, "rsa_client", "redix_rs RSA client", nil, "clientAuth", :rsa)
    rogue = sign!(dir, other_ca, "rogue_client", "rogue client", nil, "clientAuth")
    expired = expired!(dir, ca)

    # A client certificate with its key in the same file, as `:ssl` allows (keyfile defaults to
    # certfile).
    combined = Path.join(dir, "client_combined.pem")
    File.write!(combined, File.read!(client.cert) <> File.read!(client.key))

    not_pem = Path.join(dir, "not_pem.txt")
    File.write!(not_pem, "this is not a certificate\n")

    %{
      dir: dir,
      ca: ca.cert,
      other_ca: other_ca.cert,
      server: server,
      wildcard: wildcard,
      client: client,
      client_combined: combined,
      rsa_client: rsa_client,
      rogue_client: rogue,
      expired: expired,
      not_pem: not_pem
    }
  end

  defp ca!(dir, name, cn) do
    paths = paths(dir, name)

    openssl!(
      ["req", "-x509"] ++
        @ec ++
        ["-keyout", paths.key, "-out", paths.cert, "-days", "30", "-subj", "/CN=#{cn}"] ++
        ["-addext", "basicConstraints=critical,CA:TRUE"] ++
        ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    )

    paths
  end

  defp sign!(dir, ca, name, cn, san, usage, key_type \\ :ec) do
    paths = paths(dir, name)
    csr = Path.join(dir, "#{name}.csr")
    key_args = if key_type == :rsa, do: ["-newkey", "rsa:2048", "-nodes"], else: @ec

    openssl!(
      ["req", "-new"] ++ key_args ++ ["-keyout", paths.key, "-out", csr, "-subj", "/CN=#{cn}"]
    )

    ext = extensions!(dir, name, san, usage)

    openssl!(
      ["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key] ++
        ["-set_serial", "#{System.unique_integer([:positive])}", "-days", "30"] ++
        ["-out", paths.cert, "-extfile", ext]
    )

    paths
  end

  # `openssl x509` (OpenSSL 3.0) cannot back-date a certificate; `openssl ca` can, with a minimal
  # configuration of its own.
  defp expired!(dir, ca) do
    paths = paths(dir, "expired")
    csr = Path.join(dir, "expired.csr")
    ca_dir = Path.join(dir, "ca_db")
    File.mkdir_p!(Path.join(ca_dir, "newcerts"))
    File.write!(Path.join(ca_dir, "index.txt"), "")
    File.write!(Path.join(ca_dir, "serial"), "1000\n")

    config = Path.join(ca_dir, "ca.cnf")

    File.write!(config, """
    [ ca ]
    default_ca = test_ca
    [ test_ca ]
    database = #{ca_dir}/index.txt
    new_certs_dir = #{ca_dir}/newcerts
    serial = #{ca_dir}/serial
    default_md = sha256
    policy = policy_any
    unique_subject = no
    [ policy_any ]
    commonName = supplied
    """)

    openssl!(
      ["req", "-new"] ++ @ec ++ ["-keyout", paths.key, "-out", csr, "-subj", "/CN=localhost"]
    )

    ext = extensions!(dir, "expired", "DNS:localhost,IP:127.0.0.1", "serverAuth")

    openssl!(
      ["ca", "-batch", "-config", config, "-cert", ca.cert, "-keyfile", ca.key, "-in", csr] ++
        ["-out", paths.cert, "-startdate", "20200101000000Z", "-enddate", "20200102000000Z"] ++
        ["-extfile", ext, "-notext"]
    )

    paths
  end

  defp extensions!(dir, name, san, usage) do
    path = Path.join(dir, "#{name}.ext")

    lines =
      if(san, do: ["subjectAltName=#{san}"], else: []) ++
        [
          "basicConstraints=CA:FALSE",
          "keyUsage=critical,digitalSignature",
          "extendedKeyUsage=#{usage}"
        ]

    File.write!(path, Enum.join(lines, "\n") <> "\n")
    path
  end

  defp paths(dir, name),
    do: %{cert: Path.join(dir, "#{name}.crt"), key: Path.join(dir, "#{name}.key")}

  @doc "The DER of the first PEM block of `file`."
  def der(file), do: file |> File.read!() |> :public_key.pem_decode() |> hd() |> elem(1)

  @doc "A private key in the DER encoding `:ssl` names `type` (`:ECPrivateKey`, ...), via openssl."
  def key_der(key_file, type) do
    out = key_file <> ".#{type}.pem"

    case type do
      :PrivateKeyInfo -> File.cp!(key_file, out)
      :ECPrivateKey -> openssl!(["ec", "-in", key_file, "-out", out])
      :RSAPrivateKey -> openssl!(["rsa", "-in", key_file, "-traditional", "-out", out])
    end

    [{^type, der, :not_encrypted}] = out |> File.read!() |> :public_key.pem_decode()
    {type, der}
  end

  defp openssl!(args) do
    case System.cmd("openssl", args, stderr_to_stdout: true) do
      {_output, 0} -> :ok
      {output, status} -> raise "openssl #{Enum.join(args, " ")} failed (#{status}):\n#{output}"
    end
  end
end

defmodule RedixRs.TLSTest do
  # TLS (rustls) against real redis-server processes serving TLS, with certificates made at test
  # time: commands, URIs, pub/sub, mutual TLS, the ways verification fails and the options that are
  # refused.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog

  alias RedixRs.ConnectionError
  alias RedixRs.Test.RedisServer
  alias RedixRs.TLSTest.Certs

  setup_all do
    dir = RedixRs.Test.Helpers.tmp_dir!("redix_rs_tls")
    on_exit(fn -> File.rm_rf!(dir) end)
    certs = Certs.generate!(dir)

    tls = fn cert, extra ->
      [tls: [cert_file: cert.cert, key_file: cert.key, ca_cert_file: certs.ca] ++ extra]
    end

    tls12 = ["--tls-protocols", "TLSv1.2"]

    %{
      certs: certs,
      server: RedisServer.start(tls.(certs.server, [])),
      mtls: RedisServer.start(tls.(certs.server, auth_clients: :yes)),
      wildcard: RedisServer.start(tls.(certs.wildcard, [])),
      expired: RedisServer.start(tls.(certs.expired, [])),
      tls12: RedisServer.start(tls.(certs.server, []) ++ [args: tls12]),
      # TLS 1.2 with one cipher suite.
      one_suite:
        RedisServer.start(
          tls.(certs.server, []) ++
            [args: tls12 ++ ["--tls-ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384"]]
        )
    }
  end

  setup do
    %{key: "tls:#{System.unique_integer([:positive])}"}
  end

  defp start(server, opts) do
    [host: "localhost", port: server.tls_port, ssl: true, sync_connect: true]
    |> Keyword.merge(opts)
    |> RedixRs.start_link()
  end

  defp trusted(certs, opts \\ []), do: Keyword.merge([socket_opts: [cacertfile: certs.ca]], opts)

  # Forwards these telemetry events to the test process; the handler goes with the test.
  defp listen(events) do
    test_pid = self()
    id = "redix_rs-tls-test-#{System.unique_integer([:positive])}"
    handler = fn event, _measurements, meta, _ -> send(test_pid, {:event, event, meta}) end
    :ok = :telemetry.attach_many(id, events, handler, nil)
    on_exit(fn -> :telemetry.detach(id) end)
  end

  # Drops this connection only (the servers are shared by the tests of this module).
  defp kill_client(server, conn) do
    {:ok, id} = RedixRs.command(conn, ["CLIENT", "ID"])
    assert RedisServer.redis_cli(server, ["CLIENT", "KILL", "ID", id]) == ":1\r\n"
  end

  defp failure(server, opts) do
    Process.flag(:trap_exit, true)
    assert {:error, %ConnectionError{reason: reason} = error} = start(server, opts)
    assert is_binary(Exception.message(error))
    reason
  end

  describe "a verified TLS connection" do
    test "runs blocking commands on TLS side connections", %{
      server: server,
      certs: certs,
      key: key
    } do
      name = "tls#{System.unique_integer([:positive])}"
      {:ok, conn} = start(server, trusted(certs, client_name: name))
      task = Task.async(fn -> RedixRs.command(conn, ["BLPOP", key, 0]) end)

      # The side connection (the server takes TLS only on this port) sits in BLPOP; the shared one
      # still answers.
      assert RedixRs.Test.Helpers.eventually(fn ->
               {:ok, list} = RedixRs.command(conn, ["CLIENT", "LIST"], timeout: 1_000)

               list
               |> String.split("\n")
               |> Enum.any?(&(&1 =~ "name=#{name} " and &1 =~ "cmd=blpop"))
             end)

      RedixRs.command!(conn, ["RPUSH", key, "x"])
      assert Task.await(task) == {:ok, [key, "x"]}
    end

    test "runs commands, pipelines and large values", %{server: server, certs: certs, key: key} do
      {:ok, conn} = start(server, trusted(certs))

      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
      assert RedixRs.command(conn, ["SET", key, "over tls"]) == {:ok, "OK"}

      assert RedixRs.pipeline(conn, [["GET", key], ["INCR", key <> ":n"]]) ==
               {:ok, ["over tls", 1]}

      # 1 MiB each way, then 16 MiB: the end of a large write must reach the server without waiting
      # for a later write to push it out.
      for size <- [1024 * 1024, 16 * 1024 * 1024] do
        value = :crypto.strong_rand_bytes(size)
        assert RedixRs.command(conn, ["SET", key, value]) == {:ok, "OK"}
        assert RedixRs.command(conn, ["GET", key], timeout: 30_000) == {:ok, value}
      end

      assert {:error, %RedixRs.Error{message: "WRONGTYPE" <> _}} =
               RedixRs.command(conn, ["LPUSH", key, "x"])
    end

    test "is shared by concurrent callers", %{server: server, certs: certs, key: key} do
      {:ok, conn} = start(server, trusted(certs))

      1..20
      |> Enum.map(fn i ->
        Task.async(fn ->
          for j <- 1..50 do
            value = "#{i}:#{j}:" <> String.duplicate("x", i * j)
            {:ok, "OK"} = RedixRs.command(conn, ["SET", "#{key}:#{i}", value])
            {:ok, ^value} = RedixRs.command(conn, ["GET", "#{key}:#{i}"])
          end
        end)
      end)
      |> Task.await_many(30_000)
    end

    test "trusts DER certificates given with :cacerts", %{server: server, certs: certs} do
      [{:Certificate, der, :not_encrypted}] = certs.ca |> File.read!() |> :public_key.pem_decode()
      {:ok, conn} = start(server, socket_opts: [cacerts: [der]])
      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    end

    test "a charlist :cacertfile, as :ssl takes it", %{server: server, certs: certs} do
      {:ok, conn} = start(server, socket_opts: [cacertfile: String.to_charlist(certs.ca)])
      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    end

    test "an IP address host is checked against the certificate's IP addresses", %{
      server: server,
      certs: certs
    } do
      {:ok, conn} = start(server, trusted(certs, host: "127.0.0.1"))
      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    end

    test "rediss:// URIs", %{server: server, certs: certs, key: key} do
      {:ok, conn} =
        RedixRs.start_link("rediss://localhost:#{server.tls_port}/3",
          socket_opts: [cacertfile: certs.ca],
          sync_connect: true
        )

      assert RedixRs.command(conn, ["SET", key, "db3"]) == {:ok, "OK"}
      assert RedixRs.command(conn, ["CLIENT", "INFO"]) |> elem(1) =~ " db=3 "
      # The plain port of the same server shows the key in database 3.
      assert RedisServer.redis_cli(server, ["EXISTS", key]) == ":0\r\n"
    end

    test "plain TCP socket options still apply", %{server: server, certs: certs} do
      socket_opts = [
        :inet,
        keepalive: true,
        nodelay: false,
        sndbuf: 256 * 1024,
        recbuf: 256 * 1024,
        cacertfile: certs.ca,
        verify: :verify_peer,
        depth: 3
      ]

      {:ok, conn} = start(server, socket_opts: socket_opts)
      value = :crypto.strong_rand_bytes(512 * 1024)
      assert RedixRs.command(conn, ["ECHO", value]) == {:ok, value}
    end

    test "reconnects over TLS after the server drops the connection (reason :ssl_closed)", %{
      server: server,
      certs: certs
    } do
      listen([[:redix_rs, :disconnection], [:redix_rs, :connection]])
      {:ok, conn} = start(server, trusted(certs, backoff_initial: 10))
      assert_receive {:event, [:redix_rs, :connection], %{connection: ^conn}}

      capture_log(fn ->
        kill_client(server, conn)

        assert_receive {:event, [:redix_rs, :disconnection],
                        %{connection: ^conn, reason: %ConnectionError{reason: :ssl_closed}}},
                       5_000

        assert_receive {:event, [:redix_rs, :connection],
                        %{connection: ^conn, reconnection: true}},
                       5_000
      end)

      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    end

    test "files are read at each connection: one gone since the start is a :tls_config reason", %{
      server: server,
      certs: certs
    } do
      ca = Path.join(certs.dir, "ca_copy_#{System.unique_integer([:positive])}.crt")
      File.cp!(certs.ca, ca)
      listen([[:redix_rs, :failed_connection], [:redix_rs, :connection]])

      {:ok, conn} =
        start(server, socket_opts: [cacertfile: ca], backoff_initial: 10, backoff_max: 100)

      assert_receive {:event, [:redix_rs, :connection], %{connection: ^conn}}

      capture_log(fn ->
        File.rm!(ca)
        kill_client(server, conn)

        assert_receive {:event, [:redix_rs, :failed_connection],
                        %{connection: ^conn, reason: %ConnectionError{reason: reason}}},
                       5_000

        assert {:tls_config, "cannot read cacertfile " <> _} = reason
        assert Process.alive?(conn)

        File.cp!(certs.ca, ca)

        assert_receive {:event, [:redix_rs, :connection],
                        %{connection: ^conn, reconnection: true}},
                       5_000
      end)

      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    end
  end

  describe "mutual TLS (a server with tls-auth-clients yes)" do
    test "works with :certfile and :keyfile", %{mtls: server, certs: certs, key: key} do
      socket_opts = [cacertfile: certs.ca, certfile: certs.client.cert, keyfile: certs.client.key]
      {:ok, conn} = start(server, socket_opts: socket_opts)
      assert RedixRs.command(conn, ["SET", key, "mutual"]) == {:ok, "OK"}
      assert RedixRs.command(conn, ["GET", key]) == {:ok, "mutual"}
    end

    test "takes the key from the certificate's file when :keyfile is not given", %{
      mtls: server,
      certs: certs
    } do
      socket_opts = [cacertfile: certs.ca, certfile: certs.client_combined]
      {:ok, conn} = start(server, socket_opts: socket_opts)
      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    end

    test "fails clearly without a client certificate", %{mtls: server, certs: certs} do
      # With no command in the handshake, and with one (CLIENT SETNAME).
      for opts <- [[], [client_name: "no-cert"]] do
        assert {:tls_alert, {:certificate_required, message}} =
                 failure(server, trusted(certs, opts))

        assert message =~ "requires a client certificate"
        assert message =~ ":certfile"
      end
    end

    test "fails when the server does not trust the client certificate's CA", %{
      mtls: server,
      certs: certs
    } do
      socket_opts = [
        cacertfile: certs.ca,
        certfile: certs.rogue_client.cert,
        keyfile: certs.rogue_client.key
      ]

      assert {:tls_alert, {:unknown_ca, message}} = failure(server, socket_opts: socket_opts)
      assert message =~ "the server does not accept the client certificate"
    end
  end

  describe "verification failures" do
    test "a server certificate from an untrusted CA is :unknown_ca", %{
      server: server,
      certs: certs
    } do
      assert {:tls_alert, {:unknown_ca, message}} =
               failure(server, socket_opts: [cacertfile: certs.other_ca])

      assert message =~ "not signed by a trusted CA"
    end

    test "the system's CAs are the default, and do not include the test CA", %{server: server} do
      assert {:tls_alert, {:unknown_ca, _}} = failure(server, [])
    end

    test "a host name the certificate does not cover is :handshake_failure", %{
      server: server,
      certs: certs
    } do
      socket_opts = [cacertfile: certs.ca, server_name_indication: ~c"redis.example.com"]

      assert {:tls_alert, {:handshake_failure, message}} =
               failure(server, host: "127.0.0.1", socket_opts: socket_opts)

      assert message =~ "redis.example.com"
      assert message =~ "localhost"
    end

    test "an expired certificate is :certificate_expired", %{expired: server, certs: certs} do
      assert {:tls_alert, {:certificate_expired, message}} = failure(server, trusted(certs))
      assert message =~ "expired"
    end

    test "the reason reads well", %{server: server, certs: certs} do
      Process.flag(:trap_exit, true)
      assert {:error, error} = start(server, socket_opts: [cacertfile: certs.other_ca])
      assert Exception.message(error) =~ ~r/^TLS alert unknown_ca: the server's certificate/
    end

    test "an asynchronous connection reports the same reason in telemetry", %{
      server: server,
      certs: certs
    } do
      listen([[:redix_rs, :failed_connection]])

      capture_log(fn ->
        {:ok, conn} =
          start(server,
            sync_connect: false,
            backoff_initial: 60_000,
            socket_opts: [cacertfile: certs.other_ca]
          )

        assert_receive {:event, _,
                        %{connection: ^conn, reason: %ConnectionError{reason: reason}}},
                       5_000

        assert {:tls_alert, {:unknown_ca, _}} = reason
        assert {:error, %ConnectionError{reason: :closed}} = RedixRs.command(conn, ["PING"])
      end)
    end

    test "a CA file without a certificate is a :tls_config reason", %{
      server: server,
      certs: certs
    } do
      assert {:tls_config, message} = failure(server, socket_opts: [cacertfile: certs.not_pem])
      assert message =~ "no certificate"
      assert message =~ certs.not_pem
    end

    test "a plain port is not taken for TLS", %{server: server, certs: certs} do
      Process.flag(:trap_exit, true)

      assert {:error, %ConnectionError{reason: reason}} =
               RedixRs.start_link(
                 host: "localhost",
                 port: server.port,
                 ssl: true,
                 sync_connect: true,
                 timeout: 2_000,
                 socket_opts: [cacertfile: certs.ca]
               )

      assert match?({:tls_alert, {_, _}}, reason) or reason in [:timeout, :tcp_closed],
             "unexpected reason #{inspect(reason)}"
    end
  end

  describe "verify: :verify_none" do
    test "connects to a server nobody trusts, and warns once", %{server: server, expired: expired} do
      log =
        capture_log(fn ->
          for server <- [server, expired] do
            {:ok, conn} = start(server, socket_opts: [verify: :verify_none])
            assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
          end
        end)

      assert log =~ "verify: :verify_none"
      assert log =~ "insecure"
      assert length(String.split(log, "localhost:#{server.tls_port} with verify")) == 2
    end
  end

  describe "server_name_indication" do
    test "matches a wildcard certificate while connecting to an IP address", %{
      wildcard: server,
      certs: certs
    } do
      for name <- [~c"db.redix.test", "cache.redix.test"] do
        socket_opts = [cacertfile: certs.ca, server_name_indication: name]
        {:ok, conn} = start(server, host: "127.0.0.1", socket_opts: socket_opts)
        assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
      end
    end

    test "a wildcard covers exactly one label (RFC 6125)", %{wildcard: server, certs: certs} do
      for name <- ["a.b.redix.test", "redix.test", "localhost"] do
        socket_opts = [cacertfile: certs.ca, server_name_indication: name]

        assert {:tls_alert, {:handshake_failure, _}} =
                 failure(server, host: "127.0.0.1", socket_opts: socket_opts)
      end
    end

    test ":disable sends no SNI and checks the host", %{server: server, certs: certs} do
      socket_opts = [cacertfile: certs.ca, server_name_indication: :disable]
      {:ok, conn} = start(server, socket_opts: socket_opts)
      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    end
  end

  describe "socket options mapped onto rustls" do
    test "versions: a TLS 1.2-only server takes [:\"tlsv1.1\", :\"tlsv1.2\"] and refuses 1.3", %{
      tls12: server,
      certs: certs
    } do
      for versions <- [[:"tlsv1.1", :"tlsv1.2"], [:"tlsv1.2", :"tlsv1.3"]] do
        {:ok, conn} = start(server, socket_opts: [cacertfile: certs.ca, versions: versions])
        assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
      end

      assert {:tls_alert, {:protocol_version, _}} =
               failure(server, socket_opts: [cacertfile: certs.ca, versions: [:"tlsv1.3"]])
    end

    test "ciphers, in every form :ssl takes, by overlap with rustls's", %{
      one_suite: server,
      certs: certs
    } do
      for ciphers <- [
            ["ECDHE-ECDSA-AES256-GCM-SHA384"],
            [~c"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
            ~c"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
            "DHE-RSA-AES256-SHA:ECDHE-ECDSA-AES256-GCM-SHA384",
            [%{key_exchange: :ecdhe_ecdsa, cipher: :aes_256_gcm, mac: :aead, prf: :sha384}],
            [{:ecdhe_ecdsa, :aes_256_gcm, :null, :sha384}],
            [<<0xC0, 0x2C>>],
            :ssl.cipher_suites(:all, :"tlsv1.2"),
            :ssl.cipher_suites(:default, :"tlsv1.2")
          ] do
        {:ok, conn} = start(server, socket_opts: [cacertfile: certs.ca, ciphers: ciphers])
        assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}, inspect(ciphers)
      end

      # Only suites the server lacks: it says no.
      assert {:tls_alert, {:handshake_failure, _}} =
               failure(server,
                 socket_opts: [cacertfile: certs.ca, ciphers: ["ECDHE-ECDSA-AES128-GCM-SHA256"]]
               )
    end

    test "the cipher suites of the table are named and numbered as :ssl does" do
      for {code, rfc, openssl, _version, map} <- RedixRs.Options.TLS.suites() do
        assert :ssl.str_to_suite(String.to_charlist(rfc)) == map
        assert :ssl.str_to_suite(String.to_charlist(openssl)) == map
        assert to_string(:ssl.suite_to_str(map)) == rfc
        assert :ssl_cipher_format.suite_map_to_bin(map) == <<code::16>>
      end
    end

    test "eccs and supported_groups", %{server: server, certs: certs} do
      for groups <- [
            [eccs: [:secp384r1]],
            [supported_groups: [:x448, :x25519]],
            [eccs: [:secp256r1, :sect571r1]]
          ] do
        {:ok, conn} = start(server, socket_opts: [cacertfile: certs.ca] ++ groups)
        assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
      end
    end

    test "alpn_advertised_protocols (Redis negotiates none, and does not mind)", %{
      server: server,
      certs: certs
    } do
      {:ok, conn} =
        start(server, socket_opts: [cacertfile: certs.ca, alpn_advertised_protocols: ["redis"]])

      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    end

    test "a client certificate and key given as DER, in each encoding :ssl names", %{
      mtls: server,
      certs: certs
    } do
      for {client, type} <- [
            {certs.client, :PrivateKeyInfo},
            {certs.client, :ECPrivateKey},
            {certs.rsa_client, :RSAPrivateKey},
            {certs.rsa_client, :PrivateKeyInfo}
          ],
          cert <- [Certs.der(client.cert), [Certs.der(client.cert)]] do
        key = Certs.key_der(client.key, type)
        {:ok, conn} = start(server, socket_opts: [cacertfile: certs.ca, cert: cert, key: key])
        assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}, inspect(type)
      end

      # DER certificate with a PEM key file, and the other way round.
      for socket_opts <- [
            [cert: Certs.der(certs.client.cert), keyfile: certs.client.key],
            [certfile: certs.client.cert, key: Certs.key_der(certs.client.key, :ECPrivateKey)]
          ] do
        {:ok, conn} = start(server, socket_opts: [cacertfile: certs.ca] ++ socket_opts)
        assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
      end
    end

    test "certs_keys: the first certificate whose key the server can use; others ignored", %{
      mtls: server,
      certs: certs
    } do
      good = %{
        cert: Certs.der(certs.client.cert),
        key: Certs.key_der(certs.client.key, :ECPrivateKey)
      }

      rogue = %{certfile: certs.rogue_client.cert, keyfile: certs.rogue_client.key}
      base = [cacertfile: certs.ca]

      for certs_keys <- [
            [good],
            [good, rogue],
            [%{certfile: certs.client.cert, keyfile: certs.client.key}]
          ] do
        # The top-level certificate is ignored when certs_keys is given, as in :ssl.
        socket_opts = base ++ [certs_keys: certs_keys, certfile: certs.rogue_client.cert]
        {:ok, conn} = start(server, socket_opts: socket_opts)
        assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
      end

      assert {:tls_alert, {:unknown_ca, _}} =
               failure(server, socket_opts: base ++ [certs_keys: [rogue, good]])
    end

    test "customize_hostname_check: Redix's recipe for wildcard certificates", %{
      wildcard: server,
      certs: certs
    } do
      check = [match_fun: :public_key.pkix_verify_hostname_match_fun(:https)]

      socket_opts = fn name ->
        [cacertfile: certs.ca, server_name_indication: name, customize_hostname_check: check]
      end

      {:ok, conn} = start(server, host: "127.0.0.1", socket_opts: socket_opts.(~c"db.redix.test"))
      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}

      # It widens nothing: a wildcard still covers one label.
      assert {:tls_alert, {:handshake_failure, _}} =
               failure(server, host: "127.0.0.1", socket_opts: socket_opts.("a.b.redix.test"))
    end

    test "every option of the table with no effect, at once, on a working connection", %{
      server: server,
      certs: certs
    } do
      samples =
        RedixRs.Test.SocketOptsSamples.samples(%{
          ca: certs.ca,
          cert: certs.client.cert,
          key: certs.client.key
        })

      no_effect = for {key, _, :no_effect, _} <- RedixRs.Options.Socket.table(), do: samples[key]
      assert length(no_effect) > 40
      {:ok, conn} = start(server, socket_opts: [{:cacertfile, certs.ca} | no_effect])
      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    end
  end

  describe "pub/sub over TLS" do
    test "subscribes, and receives what another connection publishes", %{
      server: server,
      certs: certs,
      key: channel
    } do
      {:ok, pubsub} =
        RedixRs.PubSub.start_link(
          host: "localhost",
          port: server.tls_port,
          ssl: true,
          socket_opts: [cacertfile: certs.ca],
          sync_connect: true
        )

      {:ok, ref} = RedixRs.PubSub.subscribe(pubsub, channel, self())
      assert_receive {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: ^channel}}, 5_000

      {:ok, conn} = start(server, trusted(certs))
      assert RedixRs.command(conn, ["PUBLISH", channel, "hello over tls"]) == {:ok, 1}

      assert_receive {:redix_pubsub, ^pubsub, ^ref, :message,
                      %{channel: ^channel, payload: "hello over tls"}},
                     5_000
    end

    test "a failed sync connect returns the TLS reason", %{server: server, certs: certs} do
      Process.flag(:trap_exit, true)

      assert {:error, %ConnectionError{reason: {:tls_alert, {:unknown_ca, _}}}} =
               RedixRs.PubSub.start_link(
                 host: "localhost",
                 port: server.tls_port,
                 ssl: true,
                 socket_opts: [cacertfile: certs.other_ca],
                 sync_connect: true
               )
    end
  end

  describe "options that are refused" do
    test ":ssl options rustls cannot honour raise, saying why and what to do instead", %{
      certs: certs
    } do
      for {opt, why} <- [
            {[verify_fun: {fn _, _, s -> {:valid, s} end, nil}], "choose the trusted CAs with"},
            {[customize_hostname_check: [match_fun: fn _, _ -> true end]],
             "use :server_name_indication to choose the name checked"},
            {[customize_hostname_check: [fqdn_fun: fn _ -> ~c"x" end]],
             "use :server_name_indication"},
            {[password: "key password"], "decrypt it"},
            {[partial_chain: fn _ -> :unknown_ca end], "put the intermediate CA you trust"},
            {[crl_check: :peer], "revocation lists are not checked"},
            {[ocsp_stapling: true], "no OCSP"},
            {[key: {:DSAPrivateKey, "der"}, certfile: certs.client.cert], "use an RSA or EC key"}
          ] do
        [{key, _} | _] = opt

        error =
          assert_raise ArgumentError, fn ->
            RedixRs.start_link(ssl: true, socket_opts: opt ++ [cacertfile: certs.ca])
          end

        assert error.message =~ "the socket option #{inspect(key)} is not supported by redix_rs: "
        assert error.message =~ why
      end
    end

    test "TLS options need ssl: true", %{certs: certs} do
      assert_raise ArgumentError, ~r/\[:cacertfile\] are TLS options: they need ssl: true/, fn ->
        RedixRs.start_link(socket_opts: [cacertfile: certs.ca])
      end
    end

    test "files must exist, and values make sense", %{certs: certs} do
      missing = Path.join(certs.dir, "missing.pem")

      for {socket_opts, message} <- [
            {[cacertfile: missing], "the :cacertfile socket option names a file that does not"},
            {[certfile: missing], "the :certfile socket option names a file that does not"},
            {[keyfile: certs.client.key], ":keyfile socket option needs :certfile"},
            {[key: {:PrivateKeyInfo, "der"}], ":key socket option needs :certfile or :cert"},
            {[cert: "der"], ":cert socket option needs :key or :keyfile"},
            {[cert: [:no]], "expected a DER certificate or a list of them"},
            {[key: {:PrivateKeyInfo, :no}, cert: "der"], "expected {:RSAPrivateKey"},
            # A key is not shown, its shape is.
            {[key: {:PKCS8, "secret key"}, cert: "der"], "got: {:PKCS8, <<10 bytes>>}"},
            {[certs_keys: [%{key: {:PrivateKeyInfo, "secret"}, x: 1}]],
             "got: %{:key => {:PrivateKeyInfo, <<6 bytes>>}, :x => 1}"},
            {[certs_keys: [%{key: {:PrivateKeyInfo, "der"}}]], "in :certs_keys needs :certfile"},
            {[certs_keys: [%{cert: "der", password: ~c"pw"}]], "decrypt it"},
            {[versions: [:"tlsv1.1"]], "rustls speaks TLS 1.2 and 1.3"},
            {[versions: [:tls13]], "expected a list of"},
            {[ciphers: ["DHE-RSA-AES256-SHA"]], "it has: TLS_AES_256_GCM_SHA384"},
            {[ciphers: ["ECDHE-RSA-AES999-GCM"]], "is not the OpenSSL or RFC name of a cipher"},
            {[versions: [:"tlsv1.2"], ciphers: ["TLS_AES_128_GCM_SHA256"]],
             "is one of the TLS versions of :versions"},
            {[eccs: [:sect571r1]], "it has: [:x25519, :secp256r1, :secp384r1]"},
            {[supported_groups: [:x448]], "it has: [:x25519"},
            {[alpn_advertised_protocols: ["", "x"]], "expected a list of protocol names"},
            {[verify: :verify_host], "expected :verify_peer or :verify_none"},
            {[cacerts: [:not_der]], "expected a list of DER-encoded certificates"},
            {[server_name_indication: 42], "expected a host name"},
            {[depth: -1], "expected a non-negative integer"}
          ] do
        assert_raise ArgumentError, ~r/#{Regex.escape(message)}/, fn ->
          RedixRs.start_link(ssl: true, socket_opts: socket_opts)
        end
      end
    end

    test "ssl: true is refused on a Unix socket" do
      assert_raise ArgumentError, ~r/Unix domain socket/, fn ->
        RedixRs.start_link(host: {:local, "/tmp/redis.sock"}, port: 0, ssl: true)
      end
    end
  end
end
