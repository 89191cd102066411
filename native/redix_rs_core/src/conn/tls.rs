//! TLS over TCP with rustls (ring provider): the client configuration built from [`TlsOptions`], the
//! handshake, the stream type, and TLS errors named as the alerts Erlang's `:ssl` reports.
//!
//! Verification is webpki's: the chain must lead to a trusted CA, the certificate must be valid now
//! and valid for the server name (DNS names with RFC 6125 wildcards, or IP addresses).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme, SupportedProtocolVersion,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{
    CertChain, ClientCert, ConnectError, KeyFormat, PrivateKey, Reason, Roots, TlsOptions,
    TlsVersion,
};
use crate::resp::{Limits, Parsed, Parser};

/// A TLS connection to a server.
///
/// Writes are reported done only once their encrypted records have reached the socket: a caller
/// that writes, then waits for a reply without flushing (as the multiplexer's writer does) would
/// otherwise leave the end of a large write in rustls's buffer while the kernel's send buffer is
/// full. A write that returns `Pending` after its bytes were taken must be retried with the same
/// bytes, as `write_all` does.
#[derive(Debug)]
pub struct TlsStream {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    /// Bytes already taken by rustls whose records are still being flushed.
    unflushed: Option<usize>,
}

impl TlsStream {
    /// The negotiated protocol version, such as `"TLSv1_3"`.
    pub fn protocol_version(&self) -> Option<String> {
        self.inner
            .get_ref()
            .1
            .protocol_version()
            .map(|v| format!("{v:?}"))
    }

    /// The negotiated cipher suite's IANA number.
    pub fn cipher_suite(&self) -> Option<u16> {
        self.inner
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|suite| u16::from(suite.suite()))
    }

    /// The negotiated key exchange group's IANA number.
    pub fn key_exchange_group(&self) -> Option<u16> {
        self.inner
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|group| u16::from(group.name()))
    }

    /// The ALPN protocol the server chose, if any.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.inner.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The TCP socket under the TLS session (to read its options back).
    pub fn tcp(&self) -> &TcpStream {
        self.inner.get_ref().0
    }
}

/// Runs the TLS handshake on `tcp`, connected to `host`.
pub(crate) async fn connect(
    tcp: TcpStream,
    host: &str,
    opts: &TlsOptions,
) -> Result<TlsStream, ConnectError> {
    let config = client_config_off_runtime(opts).await?;
    let name = opts.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
        ConnectError::TlsConfig(format!(
            "{name:?} is not a valid DNS name or IP address to verify the server's certificate against"
        ))
    })?;
    let inner = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await?;
    Ok(TlsStream {
        inner,
        unflushed: None,
    })
}

/// [`client_config`] on a thread of tokio's blocking pool: it reads files (at each connection, so
/// that rotated certificates are picked up), and a reconnect storm must not stall the I/O of every
/// connection served by the runtime's worker threads meanwhile.
async fn client_config_off_runtime(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ConnectError> {
    let opts = opts.clone();
    tokio::task::spawn_blocking(move || client_config(&opts))
        .await
        .map_err(|e| {
            ConnectError::TlsConfig(format!("preparing the TLS configuration failed: {e}"))
        })?
}

/// One round trip (a `PING`; any reply will do, `-NOAUTH` included), for a handshake that sends no
/// command. With TLS 1.3 the client's side of the handshake ends before the server has checked the
/// client's certificate: a server that requires one (`tls-auth-clients yes`) only says no with an
/// alert in answer to the first bytes sent, which this turns into a connection failure rather than
/// a disconnection right after `:connected`.
pub(crate) async fn confirm<S>(stream: &mut S, mut buf: BytesMut) -> Result<BytesMut, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
    let mut parser = Parser::new(Limits::default());
    loop {
        if let Parsed::Complete(_) = parser.parse(&mut buf)? {
            return Ok(buf);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ConnectError::Closed);
        }
    }
}

/// The rustls configuration for `opts`; certificate and key files are read now, at each connection
/// (a blocking call: see [`client_config_off_runtime`]).
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ConnectError> {
    let provider = Arc::new(provider_for(opts)?);
    let versions: Vec<&'static SupportedProtocolVersion> = match &opts.versions {
        None => rustls::DEFAULT_VERSIONS.to_vec(),
        Some(versions) => versions
            .iter()
            .map(|v| match v {
                TlsVersion::Tls12 => &rustls::version::TLS12,
                TlsVersion::Tls13 => &rustls::version::TLS13,
            })
            .collect(),
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| {
            ConnectError::TlsConfig(format!(
                "no cipher suite of the :ciphers socket option can be used with the TLS \
                 versions of :versions ({e})"
            ))
        })?;
    let builder = if opts.verify {
        builder.with_root_certificates(roots(&opts.roots)?)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider.clone())))
    };
    let mut config = if opts.client_certs.is_empty() {
        builder.with_no_client_auth()
    } else {
        let certs = opts
            .client_certs
            .iter()
            .map(|client| certified_key(client, &provider))
            .collect::<Result<Vec<_>, _>>()?;
        builder.with_client_cert_resolver(Arc::new(FirstUsableCert(certs)))
    };
    config.enable_sni = opts.sni;
    config.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The ring provider, with only the cipher suites and groups `opts` allows, in its order.
fn provider_for(opts: &TlsOptions) -> Result<CryptoProvider, ConnectError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(codes) = &opts.cipher_suites {
        let all = std::mem::take(&mut provider.cipher_suites);
        provider.cipher_suites = pick(codes, &all, |suite| u16::from(suite.suite()));
        if provider.cipher_suites.is_empty() {
            return Err(ConnectError::TlsConfig(format!(
                "none of the cipher suites {codes:04X?} is available (rustls has {:04X?})",
                supported_cipher_suites()
            )));
        }
    }
    if let Some(codes) = &opts.groups {
        let all = std::mem::take(&mut provider.kx_groups);
        provider.kx_groups = pick(codes, &all, |group| u16::from(group.name()));
        if provider.kx_groups.is_empty() {
            return Err(ConnectError::TlsConfig(format!(
                "none of the key exchange groups {codes:04X?} is available (rustls has {:04X?})",
                supported_groups()
            )));
        }
    }
    Ok(provider)
}

/// The items of `all` whose number is in `codes`, in the order of `codes`, once each.
fn pick<T: Copy>(codes: &[u16], all: &[T], code: impl Fn(&T) -> u16) -> Vec<T> {
    let mut picked: Vec<T> = Vec::new();
    for wanted in codes {
        if let Some(item) = all.iter().find(|item| code(item) == *wanted) {
            if !picked.iter().any(|p| code(p) == *wanted) {
                picked.push(*item);
            }
        }
    }
    picked
}

/// The IANA numbers of the cipher suites rustls (ring provider) offers, in its order of preference.
pub fn supported_cipher_suites() -> Vec<u16> {
    provider()
        .cipher_suites
        .iter()
        .map(|suite| u16::from(suite.suite()))
        .collect()
}

/// The IANA numbers of the key exchange groups rustls (ring provider) offers.
pub fn supported_groups() -> Vec<u16> {
    provider()
        .kx_groups
        .iter()
        .map(|group| u16::from(group.name()))
        .collect()
}

fn roots(roots: &Roots) -> Result<Arc<RootCertStore>, ConnectError> {
    let certs = match roots {
        Roots::System => return system_roots(),
        Roots::Der(ders) => ders
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect(),
        Roots::PemFile(path) => read_certs(path, "cacertfile")?,
    };
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            let which = match roots {
                Roots::PemFile(path) => format!("cacertfile {}", path.display()),
                _ => "cacerts".to_string(),
            };
            ConnectError::TlsConfig(format!(
                "certificate #{} of {which} cannot be used as a trusted CA: {e}",
                i + 1
            ))
        })?;
    }
    Ok(Arc::new(store))
}

/// The operating system's trusted CAs, read once per process (as `:public_key.cacerts_get/0` does).
/// A store found empty is not remembered, so installing CA certificates later is noticed.
fn system_roots() -> Result<Arc<RootCertStore>, ConnectError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    if let Some(store) = ROOTS.get() {
        return Ok(store.clone());
    }
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(ConnectError::TlsConfig(format!(
            "no trusted CA certificate found in the system store{why}: install the CA \
             certificates (ca-certificates on Debian), set SSL_CERT_FILE, or pass the :cacertfile \
             or :cacerts socket option"
        )));
    }
    Ok(ROOTS.get_or_init(|| Arc::new(store)).clone())
}

/// A client certificate chain with its key, checked to belong together.
fn certified_key(
    client: &ClientCert,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, ConnectError> {
    let chain = match &client.chain {
        CertChain::PemFile(path) => read_certs(path, "certfile")?,
        CertChain::Der(ders) if !ders.is_empty() => ders
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect(),
        CertChain::Der(_) => {
            return Err(ConnectError::TlsConfig(
                "the :cert socket option holds no certificate".to_string(),
            ))
        }
    };
    let key = match &client.key {
        PrivateKey::PemFile(path) => {
            let pem = read_file(path, "keyfile")?;
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                ConnectError::TlsConfig(format!(
                    "no usable private key (PEM: PKCS#8, RSA or EC, unencrypted) in keyfile {}: {e}",
                    path.display()
                ))
            })?
        }
        PrivateKey::Der(format, der) => match format {
            KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(der.clone().into()),
            KeyFormat::Sec1 => PrivateKeyDer::Sec1(der.clone().into()),
            KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(der.clone().into()),
        },
    };
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        ConnectError::TlsConfig(format!(
            "cannot use the client certificate of {} with the key of {}: {e}",
            describe_chain(&client.chain),
            describe_key(&client.key)
        ))
    })?;
    Ok(Arc::new(certified))
}

fn describe_chain(chain: &CertChain) -> String {
    match chain {
        CertChain::PemFile(path) => format!("certfile {}", path.display()),
        CertChain::Der(_) => "the :cert socket option".to_string(),
    }
}

fn describe_key(key: &PrivateKey) -> String {
    match key {
        PrivateKey::PemFile(path) => format!("keyfile {}", path.display()),
        PrivateKey::Der(..) => "the :key socket option".to_string(),
    }
}

/// Every certificate of a PEM file (other sections, such as a key, are skipped).
fn read_certs(path: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let pem = read_file(path, option)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConnectError::TlsConfig(format!("{option} {} is not valid PEM: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(ConnectError::TlsConfig(format!(
            "no certificate (-----BEGIN CERTIFICATE-----) in {option} {}",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_file(path: &Path, option: &str) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|e| {
        ConnectError::TlsConfig(format!("cannot read {option} {}: {e}", path.display()))
    })
}

/// The client certificates to choose from: the first whose key can sign with a scheme the server
/// accepts, as `:ssl` chooses among `certs_keys`.
#[derive(Debug)]
struct FirstUsableCert(Vec<Arc<CertifiedKey>>);

impl ResolvesClientCert for FirstUsableCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .iter()
            .find(|certified| certified.key.choose_scheme(sigschemes).is_some())
            .cloned()
    }

    fn has_certs(&self) -> bool {
        !self.0.is_empty()
    }
}

/// `verify: :verify_none`: any certificate is accepted. The handshake signatures are still checked,
/// so the connection is encrypted with whoever holds the certificate's key, whoever that is.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS failure as `:ssl` would report it: `{:tls_alert, {alert, message}}` (see [`Reason`]).
///
/// A certificate not valid for the server name is a `handshake_failure`, as `:ssl` reports its
/// `hostname_check_failed`; other certificate errors are named after the alert rustls sends for them
/// (`unknown_ca`, `certificate_expired`, `bad_certificate`, ...); an alert from the server keeps
/// its name (`certificate_required` when a client certificate is missing).
pub(crate) fn reason(err: &rustls::Error) -> Reason {
    use rustls::Error as E;
    let (alert, message) = match err {
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            "handshake_failure",
            format!("the server's certificate does not match the server name: {err}"),
        ),
        E::InvalidCertificate(cert) => {
            let alert = alert_name(AlertDescription::from(cert.clone()));
            let what = match alert {
                "unknown_ca" => {
                    "the server's certificate is not signed by a trusted CA (trusted: the \
                     :cacertfile or :cacerts socket option, else the system store)"
                }
                "certificate_expired" => "the server's certificate is expired or not yet valid",
                _ => "the server's certificate was refused",
            };
            (alert, format!("{what}: {err}"))
        }
        E::AlertReceived(alert) => {
            use AlertDescription as A;
            let hint = match alert {
                A::CertificateRequired => {
                    " (the server requires a client certificate: pass the :certfile and :keyfile \
                     socket options, or :cert and :key)"
                }
                // A server only ever checks a client's certificate.
                A::UnknownCA
                | A::BadCertificate
                | A::CertificateUnknown
                | A::CertificateExpired => " (the server does not accept the client certificate)",
                _ => "",
            };
            (
                alert_name(*alert),
                format!("the server sent the fatal alert {alert:?}{hint}"),
            )
        }
        E::InvalidMessage(_) => ("decode_error", format!("{err} (is this port serving TLS?)")),
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            ("unexpected_message", err.to_string())
        }
        E::PeerMisbehaved(_) => ("illegal_parameter", err.to_string()),
        E::DecryptError => ("bad_record_mac", err.to_string()),
        E::PeerSentOversizedRecord => ("record_overflow", err.to_string()),
        E::NoApplicationProtocol => ("no_application_protocol", err.to_string()),
        _ => ("handshake_failure", err.to_string()),
    };
    Reason::tls(alert, message)
}

/// The atom `:ssl` uses for a TLS alert.
fn alert_name(alert: AlertDescription) -> &'static str {
    use AlertDescription as A;
    match alert {
        A::CloseNotify => "close_notify",
        A::UnexpectedMessage => "unexpected_message",
        A::BadRecordMac => "bad_record_mac",
        A::DecryptionFailed => "decryption_failed",
        A::RecordOverflow => "record_overflow",
        A::DecompressionFailure => "decompression_failure",
        A::HandshakeFailure => "handshake_failure",
        A::NoCertificate => "no_certificate",
        A::BadCertificate => "bad_certificate",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRevoked => "certificate_revoked",
        A::CertificateExpired => "certificate_expired",
        A::CertificateUnknown => "certificate_unknown",
        A::IllegalParameter => "illegal_parameter",
        A::UnknownCA => "unknown_ca",
        A::AccessDenied => "access_denied",
        A::DecodeError => "decode_error",
        A::DecryptError => "decrypt_error",
        A::ExportRestriction => "export_restriction",
        A::ProtocolVersion => "protocol_version",
        A::InsufficientSecurity => "insufficient_security",
        A::InternalError => "internal_error",
        A::InappropriateFallback => "inappropriate_fallback",
        A::UserCanceled => "user_canceled",
        A::NoRenegotiation => "no_renegotiation",
        A::MissingExtension => "missing_extension",
        A::UnsupportedExtension => "unsupported_extension",
        A::CertificateUnobtainable => "certificate_unobtainable",
        A::UnrecognisedName => "unrecognized_name",
        A::BadCertificateStatusResponse => "bad_certificate_status_response",
        A::BadCertificateHashValue => "bad_certificate_hash_value",
        A::UnknownPSKIdentity => "unknown_psk_identity",
        A::CertificateRequired => "certificate_required",
        A::NoApplicationProtocol => "no_application_protocol",
        _ => "unknown_alert",
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let taken = match this.unflushed {
            Some(n) => n.min(buf.len()),
            None => {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
                this.unflushed = Some(n);
                n
            }
        };
        let flushed = ready!(Pin::new(&mut this.inner).poll_flush(cx));
        this.unflushed = None;
        Poll::Ready(flushed.map(|()| taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
