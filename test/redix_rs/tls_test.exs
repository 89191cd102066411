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

  defp sign!(dir, ca, name, cn, san, usage) do
    paths = paths(dir, name)
    csr = Path.join(dir, "#{name}.csr")
    openssl!(["req", "-new"] ++ @ec ++ ["-keyout", paths.key, "-out", csr, "-subj", "/CN=#{cn}"])
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
    dir = Path.join(System.tmp_dir!(), "redix_rs_tls_#{System.unique_integer([:positive])}")
    certs = Certs.generate!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)

    tls = fn cert, extra ->
      [tls: [cert_file: cert.cert, key_file: cert.key, ca_cert_file: certs.ca] ++ extra]
    end

    %{
      certs: certs,
      server: RedisServer.start(tls.(certs.server, [])),
      mtls: RedisServer.start(tls.(certs.server, auth_clients: :yes)),
      wildcard: RedisServer.start(tls.(certs.wildcard, [])),
      expired: RedisServer.start(tls.(certs.expired, []))
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
    test ":ssl options with no rustls equivalent raise, naming the option", %{certs: certs} do
      for opt <- [
            verify_fun: {fn _, _, s -> {:valid, s} end, nil},
            customize_hostname_check: [match_fun: fn _, _ -> true end],
            versions: [:"tlsv1.3"],
            ciphers: [],
            password: "key password"
          ] do
        {key, _} = opt

        error =
          assert_raise ArgumentError, fn ->
            RedixRs.start_link(ssl: true, socket_opts: [opt, cacertfile: certs.ca])
          end

        assert error.message =~ "the :ssl socket option #{inspect(key)} is not supported"
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
