//! TLS (rustls) against a real redis-server serving TLS, with certificates made by `openssl` for each
//! test: commands and large values through the multiplexer, client certificates, and the reasons
//! each verification failure gives.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redix_rs_core::conn::{
    establish, supported_cipher_suites, supported_groups, Address, CertChain, ClientCert,
    ConnectError, ConnectOptions, KeyFormat, Multiplexer, PrivateKey, Reason, Roots, Stream,
    TlsOptions, TlsStream, TlsVersion,
};
use support::*;

/// A CA and certificates it signed, in a temp dir.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: TempDir::new("pki"),
        };
        pki.ca("ca", "redix_rs test CA");
        pki.ca("other_ca", "untrusted CA");
        let server_san = "DNS:localhost,IP:127.0.0.1";
        pki.sign("ca", "server", "localhost", Some(server_san), "serverAuth");
        pki.sign(
            "ca",
            "wildcard",
            "*.redix.test",
            Some("DNS:*.redix.test"),
            "serverAuth",
        );
        pki.sign("ca", "client", "client", None, "clientAuth");
        pki.sign("other_ca", "rogue_client", "rogue", None, "clientAuth");
        pki.sign_rsa("ca", "rsa_client", "rsa client", "clientAuth");
        // The same keys in the other DER encodings `:ssl` names: SEC1 (EC) and PKCS#1 (RSA).
        openssl(&[
            "ec",
            "-in",
            &pki.file("client", "key"),
            "-out",
            &pki.file("client", "sec1"),
        ]);
        openssl(&[
            "rsa",
            "-in",
            &pki.file("rsa_client", "key"),
            "-traditional",
            "-out",
            &pki.file("rsa_client", "pkcs1"),
        ]);
        pki.expired("ca", "expired", server_san);
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn ca(&self, name: &str, cn: &str) {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &self.file(name, "key"),
            "-out",
            &self.file(name, "crt"),
            "-days",
            "30",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    fn csr(&self, name: &str, cn: &str) {
        self.csr_with(
            name,
            cn,
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
        );
    }

    fn csr_with(&self, name: &str, cn: &str, key: &[&str]) {
        let (keyout, out, subj) = (
            self.file(name, "key"),
            self.file(name, "csr"),
            format!("/CN={cn}"),
        );
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend_from_slice(key);
        args.extend_from_slice(&["-keyout", &keyout, "-out", &out, "-subj", &subj]);
        openssl(&args);
    }

    fn extensions(&self, name: &str, san: Option<&str>, usage: &str) -> String {
        let mut ext = String::new();
        if let Some(san) = san {
            ext.push_str(&format!("subjectAltName={san}\n"));
        }
        ext.push_str("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n");
        ext.push_str(&format!("extendedKeyUsage={usage}\n"));
        let path = self.file(name, "ext");
        std::fs::write(&path, ext).expect("write extensions");
        path
    }

    fn sign(&self, ca: &str, name: &str, cn: &str, san: Option<&str>, usage: &str) {
        self.csr(name, cn);
        self.sign_csr(ca, name, san, usage);
    }

    /// A certificate with an RSA key (2048 bits).
    fn sign_rsa(&self, ca: &str, name: &str, cn: &str, usage: &str) {
        self.csr_with(name, cn, &["-newkey", "rsa:2048"]);
        self.sign_csr(ca, name, None, usage);
    }

    fn sign_csr(&self, ca: &str, name: &str, san: Option<&str>, usage: &str) {
        let ext = self.extensions(name, san, usage);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &self.file(name, "csr"),
            "-CA",
            &self.file(ca, "crt"),
            "-CAkey",
            &self.file(ca, "key"),
            "-set_serial",
            &format!("{}", std::process::id() as u64 * 1000 + name.len() as u64),
            "-days",
            "30",
            "-out",
            &self.file(name, "crt"),
            "-extfile",
            &ext,
        ]);
    }

    /// Valid for one day in 2020: `openssl ca` can back-date, `openssl x509` (3.0) cannot.
    fn expired(&self, ca: &str, name: &str, san: &str) {
        let db = self.path("ca_db");
        std::fs::create_dir_all(db.join("newcerts")).expect("ca dir");
        std::fs::write(db.join("index.txt"), "").expect("index");
        std::fs::write(db.join("serial"), "1000\n").expect("serial");
        let config = db.join("ca.cnf");
        let d = db.display();
        std::fs::write(
            &config,
            format!(
                "[ ca ]\ndefault_ca = test_ca\n[ test_ca ]\ndatabase = {d}/index.txt\n\
                 new_certs_dir = {d}/newcerts\nserial = {d}/serial\ndefault_md = sha256\n\
                 policy = policy_any\nunique_subject = no\n[ policy_any ]\ncommonName = supplied\n"
            ),
        )
        .expect("ca config");
        self.csr(name, "localhost");
        let ext = self.extensions(name, Some(san), "serverAuth");
        openssl(&[
            "ca",
            "-batch",
            "-config",
            &config.to_string_lossy(),
            "-cert",
            &self.file(ca, "crt"),
            "-keyfile",
            &self.file(ca, "key"),
            "-in",
            &self.file(name, "csr"),
            "-out",
            &self.file(name, "crt"),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-extfile",
            &ext,
            "-notext",
        ]);
    }

    fn file(&self, name: &str, ext: &str) -> String {
        self.path(&format!("{name}.{ext}"))
            .to_string_lossy()
            .into_owned()
    }

    fn trusting(&self, ca: &str) -> TlsOptions {
        TlsOptions {
            roots: Roots::PemFile(self.path(&format!("{ca}.crt"))),
            ..TlsOptions::default()
        }
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A redis-server serving TLS only (`--port 0`), killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl TlsServer {
    fn start(pki: &Pki, cert: &str, auth_clients: bool) -> TlsServer {
        TlsServer::start_with(pki, cert, auth_clients, &[])
    }

    /// A server with more arguments, such as `["--tls-protocols", "TLSv1.2"]`.
    fn start_with(pki: &Pki, cert: &str, auth_clients: bool, extra: &[&str]) -> TlsServer {
        for _attempt in 0..5 {
            let dir = TempDir::new("tls_redis");
            let port = free_port();
            let child = Command::new(REDIS_SERVER)
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--tls-cert-file", &pki.file(cert, "crt")])
                .args(["--tls-key-file", &pki.file(cert, "key")])
                .args(["--tls-ca-cert-file", &pki.file("ca", "crt")])
                .args([
                    "--tls-auth-clients",
                    if auth_clients { "yes" } else { "no" },
                ])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut server = TlsServer {
                child,
                port,
                _dir: dir,
            };
            if server.wait_listening() {
                return server;
            }
        }
        panic!("redis-server with TLS did not start");
    }

    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn opts(&self, host: &str, tls: TlsOptions) -> ConnectOptions {
        ConnectOptions {
            tls: Some(tls),
            ..ConnectOptions::tcp(host, self.port)
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn failure(opts: &ConnectOptions) -> Reason {
    match establish(opts).await {
        Ok(_) => panic!("connected, but a failure was expected"),
        Err(ConnectError::Redis(msg)) => panic!("unexpected Redis error {msg}"),
        Err(err) => err.reason(),
    }
}

fn alert(reason: &Reason) -> (String, String) {
    let (alert, message) = reason
        .tls_alert()
        .unwrap_or_else(|| panic!("not a TLS alert: {reason:?}"));
    (alert.to_string(), message.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_large_values_over_tls() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, "server", false);
    let (stream, leftover) = establish(&server.opts("localhost", pki.trusting("ca")))
        .await
        .expect("establish");
    let Stream::Tls(tls) = &stream else {
        panic!("not a TLS stream: {stream:?}");
    };
    assert_eq!(tls.protocol_version().as_deref(), Some("TLSv1_3"));

    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let runner = mux.clone();
    let task = tokio::spawn(async move { runner.run(stream, leftover).await });
    assert_eq!(cmd(&mux, &["PING"]).await, simple("PONG"));

    // Large writes end with records that only reach the socket if each write is flushed.
    for size in [1 << 20, 16 << 20] {
        let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        assert_eq!(cmd(&mux, &[&b"SET"[..], b"big", &value]).await, ok());
        assert_eq!(cmd(&mux, &[&b"GET"[..], b"big"]).await, bulk(&value));
    }

    // Many small commands queued at once, from many tasks.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mux = mux.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..20 {
                let key = format!("k{i}");
                let value = format!("{i}-{j}");
                assert_eq!(cmd(&mux, &["SET", &key, &value]).await, ok());
                assert_eq!(cmd(&mux, &["GET", &key]).await, bulk(&value));
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }

    // The server going away ends the connection with :ssl_closed.
    drop(server);
    let reason = tokio::time::timeout(WAIT, task)
        .await
        .expect("run() returned")
        .expect("no panic");
    assert_eq!(reason, Reason::SslClosed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_addresses_der_roots_and_wildcards() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, "server", false);
    let wildcard = TlsServer::start(&pki, "wildcard", false);

    let pem = std::fs::read(pki.path("ca.crt")).unwrap();
    let der = pem_to_der(&pem);
    let der_roots = TlsOptions {
        roots: Roots::Der(vec![der]),
        ..TlsOptions::default()
    };
    establish(&server.opts("127.0.0.1", der_roots))
        .await
        .expect("IP address in the certificate, DER roots");

    let named = |name: &str| TlsOptions {
        server_name: Some(name.to_string()),
        ..pki.trusting("ca")
    };
    establish(&wildcard.opts("127.0.0.1", named("db.redix.test")))
        .await
        .expect("wildcard match");
    for name in ["a.b.redix.test", "redix.test"] {
        let reason = failure(&wildcard.opts("127.0.0.1", named(name))).await;
        let (alert, message) = alert(&reason);
        assert_eq!(alert, "handshake_failure", "{name}: {message}");
        assert!(message.contains(name), "{message}");
    }
}

/// The base64 body of the first PEM block, decoded (enough for a test: no dependency needed).
fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(pem);
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in body.bytes().filter(|&c| c != b'=') {
        let v = table.iter().position(|&t| t == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_failures_are_named_as_ssl_alerts() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, "server", false);
    let expired = TlsServer::start(&pki, "expired", false);

    let (name, message) =
        alert(&failure(&server.opts("localhost", pki.trusting("other_ca"))).await);
    assert_eq!(name, "unknown_ca", "{message}");

    let (name, _) = alert(&failure(&server.opts("localhost", TlsOptions::default())).await);
    assert_eq!(
        name, "unknown_ca",
        "the system store does not hold the test CA"
    );

    let wrong_name = TlsOptions {
        server_name: Some("redis.example.com".into()),
        ..pki.trusting("ca")
    };
    let (name, message) = alert(&failure(&server.opts("127.0.0.1", wrong_name)).await);
    assert_eq!(name, "handshake_failure");
    assert!(message.contains("redis.example.com"), "{message}");

    let (name, message) = alert(&failure(&expired.opts("localhost", pki.trusting("ca"))).await);
    assert_eq!(name, "certificate_expired", "{message}");

    // verify: false accepts both.
    for s in [&server, &expired] {
        let opts = s.opts(
            "localhost",
            TlsOptions {
                verify: false,
                ..TlsOptions::default()
            },
        );
        establish(&opts).await.expect("verify: false");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, "server", true);

    let with_cert = TlsOptions {
        client_certs: vec![ClientCert::files(
            pki.path("client.crt"),
            pki.path("client.key"),
        )],
        ..pki.trusting("ca")
    };
    let conn = Conn::open(&server.opts("localhost", with_cert)).await;
    assert_eq!(cmd(&conn.mux, &["PING"]).await, simple("PONG"));

    // Without one, the TLS 1.3 handshake completes on the client's side: the refusal comes with the
    // first reply, which `establish` waits for.
    let (name, message) = alert(&failure(&server.opts("localhost", pki.trusting("ca"))).await);
    assert_eq!(name, "certificate_required", "{message}");

    let mut with_setname = server.opts("localhost", pki.trusting("ca"));
    with_setname.client_name = Some(b"x".to_vec());
    let (name, _) = alert(&failure(&with_setname).await);
    assert_eq!(name, "certificate_required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_settings_are_tls_config_errors() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, "server", false);

    let missing = TlsOptions {
        roots: Roots::PemFile(pki.path("missing.crt")),
        ..TlsOptions::default()
    };
    let reason = failure(&server.opts("localhost", missing)).await;
    let Reason::TlsConfig(message) = &reason else {
        panic!("{reason:?}");
    };
    assert!(message.starts_with("cannot read cacertfile"), "{message}");

    let key_is_not_a_cert = TlsOptions {
        client_certs: vec![ClientCert::files(
            pki.path("client.key"),
            pki.path("client.key"),
        )],
        ..pki.trusting("ca")
    };
    let reason = failure(&server.opts("localhost", key_is_not_a_cert)).await;
    assert!(
        matches!(&reason, Reason::TlsConfig(m) if m.contains("no certificate")),
        "{reason:?}"
    );

    let cert_is_not_a_key = TlsOptions {
        client_certs: vec![ClientCert::files(
            pki.path("client.crt"),
            pki.path("client.crt"),
        )],
        ..pki.trusting("ca")
    };
    let reason = failure(&server.opts("localhost", cert_is_not_a_key)).await;
    assert!(
        matches!(&reason, Reason::TlsConfig(m) if m.contains("no usable private key")),
        "{reason:?}"
    );

    let unix = ConnectOptions {
        address: Address::Unix {
            path: "/nonexistent.sock".into(),
        },
        tls: Some(TlsOptions::default()),
        ..ConnectOptions::tcp("localhost", 1)
    };
    assert!(matches!(
        establish(&unix).await,
        Err(ConnectError::TlsConfig(_))
    ));
}

#[test]
fn tls_alert_reasons_split_into_alert_and_message() {
    let reason = Reason::tls("unknown_ca", "not trusted: really");
    assert_eq!(
        reason.tls_alert(),
        Some(("unknown_ca", "not trusted: really"))
    );
    assert_eq!(Reason::TcpClosed.tls_alert(), None);
    assert_eq!(Reason::Protocol("a: b".into()).tls_alert(), None);
}

/// A TLS server that reads slowly, so that the client's socket stays full while it writes: the end of
/// a large write must still reach it without a later write (or a flush the writer never makes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_the_end_of_a_large_write() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = Pki::new();
    let chain = CertificateDer::pem_file_iter(pki.path("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let (listener, port) = fake_listener().await;

    let value: Vec<u8> = (0..2 << 20).map(|i| (i % 253) as u8).collect();
    let expected = encoded(&[&b"SET"[..], b"k", &value]).len();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut ping = [0u8; 14];
        tls.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"*1\r\n$4\r\nPING\r\n");
        tls.write_all(b"+PONG\r\n").await.unwrap();
        let mut seen = 0;
        let mut buf = vec![0u8; 4 * 1024];
        while seen < expected {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client closed after {seen} of {expected} bytes");
            seen += n;
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        tls.write_all(b"+OK\r\n").await.unwrap();
        tls.flush().await.unwrap();
        tls
    });

    let mut opts = ConnectOptions {
        tls: Some(pki.trusting("ca")),
        ..ConnectOptions::tcp("localhost", port)
    };
    opts.tcp.send_buffer = Some(16 * 1024);
    let conn = Conn::open(&opts).await;
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        cmd(&conn.mux, &[&b"SET"[..], b"k", &value]),
    )
    .await
    .expect("the server got the whole command and answered");
    assert_eq!(reply, ok());
    let _server_side = server.await.unwrap();
}

fn tls(stream: &Stream) -> &TlsStream {
    match stream {
        Stream::Tls(tls) => tls,
        other => panic!("not a TLS stream: {other:?}"),
    }
}

/// The numbers `RedixRs.Options.TLS` (lib/redix_rs/options/tls.ex) lists as rustls's cipher suites
/// and groups, in rustls's order: the Elixir side computes overlaps with these.
#[test]
fn the_elixir_side_lists_rustls_suites_and_groups() {
    assert_eq!(
        supported_cipher_suites(),
        [0x1302, 0x1301, 0x1303, 0xC02C, 0xC02B, 0xCCA9, 0xC030, 0xC02F, 0xCCA8]
    );
    assert_eq!(supported_groups(), [0x001D, 0x0017, 0x0018]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_cipher_suites_and_groups_are_offered_as_asked() {
    let pki = Pki::new();
    let tls12_only = TlsServer::start_with(&pki, "server", false, &["--tls-protocols", "TLSv1.2"]);
    let one_suite = TlsServer::start_with(
        &pki,
        "server",
        false,
        &[
            "--tls-protocols",
            "TLSv1.2",
            "--tls-ciphers",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ],
    );
    let any = TlsServer::start(&pki, "server", false);
    let with = |f: &dyn Fn(&mut TlsOptions)| {
        let mut opts = pki.trusting("ca");
        f(&mut opts);
        opts
    };

    // Versions: a TLS 1.2-only server takes TLS 1.2, and refuses a client that offers only 1.3.
    let (stream, _) = establish(&tls12_only.opts("localhost", pki.trusting("ca")))
        .await
        .expect("TLS 1.2 by default");
    assert_eq!(tls(&stream).protocol_version().as_deref(), Some("TLSv1_2"));
    let only13 = with(&|o| o.versions = Some(vec![TlsVersion::Tls13]));
    let (name, message) = alert(&failure(&tls12_only.opts("localhost", only13)).await);
    assert_eq!(name, "protocol_version", "{message}");
    let only12 = with(&|o| o.versions = Some(vec![TlsVersion::Tls12]));
    let (stream, _) = establish(&any.opts("localhost", only12))
        .await
        .expect("TLS 1.2 with a server that has 1.3 too");
    assert_eq!(tls(&stream).protocol_version().as_deref(), Some("TLSv1_2"));

    // Cipher suites: offered as asked, in the order asked.
    let aes128 = with(&|o| o.cipher_suites = Some(vec![0xC02B]));
    let (name, message) = alert(&failure(&one_suite.opts("localhost", aes128)).await);
    assert_eq!(name, "handshake_failure", "{message}");
    let both = with(&|o| o.cipher_suites = Some(vec![0xC02B, 0xC02C]));
    let (stream, _) = establish(&one_suite.opts("localhost", both))
        .await
        .expect("the suite the server has");
    assert_eq!(tls(&stream).cipher_suite(), Some(0xC02C));
    let chacha = with(&|o| o.cipher_suites = Some(vec![0x1303]));
    let (stream, _) = establish(&any.opts("localhost", chacha))
        .await
        .expect("a TLS 1.3 suite");
    assert_eq!(tls(&stream).cipher_suite(), Some(0x1303));
    // Numbers rustls does not know are ignored; none known is a configuration error.
    let unknown = with(&|o| o.cipher_suites = Some(vec![0x0033]));
    let err = establish(&any.opts("localhost", unknown))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::TlsConfig(m) if m.contains("none of the cipher suites")),
        "{err:?}"
    );

    // Groups.
    for group in [0x0018, 0x0017, 0x001D] {
        let opts = with(&|o| o.groups = Some(vec![group]));
        let (stream, _) = establish(&any.opts("localhost", opts))
            .await
            .expect("a group OpenSSL has");
        assert_eq!(tls(&stream).key_exchange_group(), Some(group));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_in_der_and_pem_in_every_key_encoding() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, "server", true);
    let cert_der =
        |name: &str| pem_to_der(&std::fs::read(pki.path(&format!("{name}.crt"))).unwrap());
    let key_der = |file: &str| pem_to_der(&std::fs::read(pki.path(file)).unwrap());

    let cases = [
        ("client", KeyFormat::Pkcs8, "client.key"),
        ("client", KeyFormat::Sec1, "client.sec1"),
        ("rsa_client", KeyFormat::Pkcs8, "rsa_client.key"),
        ("rsa_client", KeyFormat::Pkcs1, "rsa_client.pkcs1"),
    ];
    for (cert, format, key) in cases {
        let client = ClientCert {
            chain: CertChain::Der(vec![cert_der(cert)]),
            key: PrivateKey::Der(format, key_der(key)),
        };
        let opts = TlsOptions {
            client_certs: vec![client],
            ..pki.trusting("ca")
        };
        let conn = Conn::open(&server.opts("localhost", opts)).await;
        assert_eq!(
            cmd(&conn.mux, &["PING"]).await,
            simple("PONG"),
            "{cert} {key}"
        );
        // PEM files, in the same encodings.
        let files = TlsOptions {
            client_certs: vec![ClientCert::files(
                pki.path(&format!("{cert}.crt")),
                pki.path(key),
            )],
            ..pki.trusting("ca")
        };
        let conn = Conn::open(&server.opts("localhost", files)).await;
        assert_eq!(
            cmd(&conn.mux, &["PING"]).await,
            simple("PONG"),
            "{cert} {key}"
        );
    }

    // Several certificates: the first whose key can sign with a scheme the server accepts.
    let several = TlsOptions {
        client_certs: vec![
            ClientCert::files(pki.path("client.crt"), pki.path("client.key")),
            ClientCert::files(pki.path("rogue_client.crt"), pki.path("rogue_client.key")),
        ],
        ..pki.trusting("ca")
    };
    let conn = Conn::open(&server.opts("localhost", several)).await;
    assert_eq!(cmd(&conn.mux, &["PING"]).await, simple("PONG"));
    let rogue_first = TlsOptions {
        client_certs: vec![
            ClientCert::files(pki.path("rogue_client.crt"), pki.path("rogue_client.key")),
            ClientCert::files(pki.path("client.crt"), pki.path("client.key")),
        ],
        ..pki.trusting("ca")
    };
    let (name, message) = alert(&failure(&server.opts("localhost", rogue_first)).await);
    assert_eq!(name, "unknown_ca", "{message}");

    // A key that is not the certificate's.
    let mismatch = TlsOptions {
        client_certs: vec![ClientCert {
            chain: CertChain::Der(vec![cert_der("client")]),
            key: PrivateKey::Der(KeyFormat::Pkcs8, key_der("rsa_client.key")),
        }],
        ..pki.trusting("ca")
    };
    let err = establish(&server.opts("localhost", mismatch))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::TlsConfig(m)
            if m.contains("cannot use the client certificate of the :cert socket option")),
        "{err:?}"
    );
}

/// ALPN and SNI as a server sees them: a rustls server that negotiates ALPN (Redis negotiates
/// none) and reports the name the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_protocols_and_sni_as_the_server_sees_them() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = Pki::new();
    let chain = CertificateDer::pem_file_iter(pki.path("server.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"resp3".to_vec(), b"redis".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let (listener, port) = fake_listener().await;
    // Answers the PING of each connection; reports the ALPN protocol chosen and the SNI received.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let mut kept = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let (_, session) = tls.get_ref();
            let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
            let sni = session.server_name().map(str::to_string);
            let mut ping = [0u8; 14];
            tls.read_exact(&mut ping).await.unwrap();
            tls.write_all(b"+PONG\r\n").await.unwrap();
            tls.flush().await.unwrap();
            seen_tx.send((alpn, sni)).unwrap();
            kept.push(tls);
        }
    });
    let opts = |tls: TlsOptions| ConnectOptions {
        tls: Some(tls),
        ..ConnectOptions::tcp("localhost", port)
    };

    let with_alpn = TlsOptions {
        alpn: vec![b"redis".to_vec()],
        ..pki.trusting("ca")
    };
    let (stream, _) = establish(&opts(with_alpn)).await.expect("establish");
    assert_eq!(tls(&stream).alpn_protocol().as_deref(), Some(&b"redis"[..]));
    let (alpn, sni) = seen.recv().await.unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"redis"[..]));
    assert_eq!(sni.as_deref(), Some("localhost"));

    // By default: no ALPN, SNI sent. With `server_name_indication: :disable`: no SNI, and the
    // certificate is still checked against the host.
    let (stream, _) = establish(&opts(pki.trusting("ca")))
        .await
        .expect("establish");
    assert_eq!(tls(&stream).alpn_protocol(), None);
    assert_eq!(seen.recv().await.unwrap(), (None, Some("localhost".into())));
    let no_sni = TlsOptions {
        sni: false,
        ..pki.trusting("ca")
    };
    establish(&opts(no_sni))
        .await
        .expect("establish without SNI");
    assert_eq!(seen.recv().await.unwrap(), (None, None));
    server.abort();
}

/// Certificate files are read at each connection, on a thread of the blocking pool: a read that
/// blocks (a slow disk, a network file system; here a FIFO nobody writes to yet) must not stall
/// the runtime thread that serves every other connection's I/O.
#[test]
fn certificate_files_are_read_off_the_runtime_thread() {
    let pki = Pki::new();
    let server = TlsServer::start(&pki, "server", false);
    let fifo = pki.path("ca.fifo");
    let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let ca = std::fs::read(pki.path("ca.crt")).unwrap();

    // The writer waits until the runtime has shown it is not blocked, then lets the read finish;
    // without that sign, it gives up waiting after a while (so the test fails instead of hanging).
    let (ran, ran_rx) = std::sync::mpsc::channel::<()>();
    let writer_fifo = fifo.clone();
    let writer = std::thread::spawn(move || {
        let unblocked = ran_rx.recv_timeout(Duration::from_secs(5)).is_ok();
        std::fs::write(&writer_fifo, ca).expect("write the CA into the FIFO");
        unblocked
    });

    // One runtime thread, as in the NIF's default configuration.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut opts = server.opts(
        "localhost",
        TlsOptions {
            roots: Roots::PemFile(fifo),
            ..TlsOptions::default()
        },
    );
    // Longer than the writer's patience, so that a blocked thread shows as the assertion below.
    opts.timeout = WAIT;
    runtime.block_on(async {
        let connecting = tokio::spawn(async move { establish(&opts).await.map(|_| ()) });
        // While the certificate file is being read, other work on this thread goes on.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = ran.send(());
        tokio::time::timeout(WAIT, connecting)
            .await
            .expect("connected in time")
            .expect("no panic")
            .expect("connected once the file could be read");
    });
    assert!(
        writer.join().unwrap(),
        "the runtime's only thread was blocked while the certificate file was read"
    );
}
