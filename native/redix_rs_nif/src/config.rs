//! Decodes the options map built by `RedixRs.Connection` into `ConnectOptions`.
//!
//! The Elixir side has already validated every option, so a decoding failure here is a bug and is
//! reported as `badarg` rather than explained.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use redix_rs_core::conn::{
    Address, ClientCert, ConnectOptions, Protocol, Role, Roots, Sentinel, SentinelOptions,
    TcpOptions, TlsOptions,
};
use redix_rs_core::resp::Limits;
use rustler::{Binary, Error, NifResult, Term};
use std::sync::Arc;

use redix_rs_core::cache::{ClientCache, Tracking};

use redix_rs_core::conn::{CertChain, KeyFormat, PrivateKey, TlsVersion};

/// What `connect/2` needs: how to connect, and how much may be queued unwritten.
pub struct NativeConfig {
    pub connect: ConnectOptions,
    pub max_queued_bytes: usize,
    /// What one reply may be (`:reply_limits`).
    pub reply_limits: Limits,
    /// A `RedixRs.PubSub` connection (its out-of-band frames go to the pub/sub fan-out).
    pub pubsub: bool,
    /// Bytes of messages that may wait for the `RedixRs.PubSub` process (`:backlog_limit`).
    pub max_backlog_bytes: usize,
    /// Whether subscribers get `:disconnected` when the connection ends (not with
    /// `exit_on_disconnection`, as in Redix).
    pub notify_disconnection: bool,
    /// The process lending side connections for blocking commands (`side_pool`, absent or `nil`:
    /// none).
    pub side_pool: Option<rustler::LocalPid>,
    /// The client-side cache (`:client_cache`), absent or `nil` without one.
    pub cache: Option<Arc<ClientCache>>,
}

pub fn decode(map: Term<'_>) -> NifResult<NativeConfig> {
    let get = |key: &str| -> NifResult<Term<'_>> {
        let atom = rustler::Atom::from_str(map.get_env(), key)?;
        map.map_get(atom)
    };
    let connect = ConnectOptions {
        address: decode_address(get("address")?)?,
        tcp: decode_tcp(map)?,
        tls: decode_tls(get("tls")?)?,
        username: optional_bytes(get("username")?)?,
        password: optional_bytes(get("password")?)?,
        database: optional_bytes(get("database")?)?,
        client_name: optional_bytes(get("client_name")?)?,
        protocol: match get("protocol")?.atom_to_string()?.as_str() {
            "resp3" => Protocol::Resp3,
            _ => Protocol::Resp2,
        },
        readonly: get("readonly")?.decode()?,
        sentinel: decode_sentinel(get("sentinel")?)?,
        timeout: Duration::from_millis(get("timeout")?.decode()?),
        tracking: None,
    };
    let max_queued_bytes = get("max_queued_bytes")?.decode()?;
    let reply_limits = decode_reply_limits(get("reply_limits")?)?;
    let pubsub = get("pubsub")?.decode()?;
    let max_backlog_bytes = get("max_backlog_bytes")?.decode()?;
    let notify_disconnection = get("notify_disconnection")?.decode()?;
    let side_pool = get("side_pool")
        .ok()
        .and_then(|pid| pid.decode::<rustler::LocalPid>().ok());
    let cache = match get("cache") {
        Ok(term) if !term.is_atom() => Some(crate::cache::cache_of(term)?.cache.clone()),
        _ => None,
    };
    let mut connect = connect;
    connect.tracking = cache.clone().map(Tracking);
    Ok(NativeConfig {
        connect,
        max_queued_bytes,
        reply_limits,
        pubsub,
        max_backlog_bytes,
        notify_disconnection,
        side_pool,
        cache,
    })
}

/// `%{max_bulk_bytes: n, max_elements: n, max_depth: n, max_reply_bytes: n}`.
fn decode_reply_limits(map: Term<'_>) -> NifResult<Limits> {
    let get = |key: &str| -> NifResult<usize> {
        let atom = rustler::Atom::from_str(map.get_env(), key)?;
        map.map_get(atom)?.decode()
    };
    Ok(Limits {
        max_bulk_len: get("max_bulk_bytes")?,
        max_aggregate_len: get("max_elements")?,
        max_depth: get("max_depth")?,
        max_reply_bytes: get("max_reply_bytes")?,
    })
}

/// The plain-TCP socket options of `map`: `inet6`, `keepalive`, `sndbuf`, `recbuf`, `nodelay`.
/// Also `dontroute` (a boolean), and `local_address` (a string), `local_port`, `linger` (seconds),
/// `tos`, `tclass`, `ttl`, `priority`, `bind_to_device` (a binary), `keepalive_idle`,
/// `keepalive_interval`, `keepalive_count` and `send_timeout` (milliseconds), each `nil` when not set.
fn decode_tcp(map: Term<'_>) -> NifResult<TcpOptions> {
    let get = |key: &str| -> NifResult<Term<'_>> {
        let atom = rustler::Atom::from_str(map.get_env(), key)?;
        map.map_get(atom)
    };
    let local_address = optional_bytes(get("local_address")?)?
        .map(|bytes| {
            std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse::<std::net::IpAddr>().ok())
                .ok_or(Error::BadArg)
        })
        .transpose()?;
    Ok(TcpOptions {
        inet6: get("inet6")?.decode()?,
        keepalive: get("keepalive")?.decode()?,
        send_buffer: get("sndbuf")?.decode()?,
        recv_buffer: get("recbuf")?.decode()?,
        nodelay: get("nodelay")?.decode()?,
        local_address,
        local_port: get("local_port")?.decode()?,
        linger: get("linger")?
            .decode::<Option<u64>>()?
            .map(Duration::from_secs),
        tos: get("tos")?.decode()?,
        tclass: get("tclass")?.decode()?,
        ttl: get("ttl")?.decode()?,
        priority: get("priority")?.decode()?,
        dontroute: get("dontroute")?.decode()?,
        bind_device: optional_bytes(get("bind_to_device")?)?,
        keepalive_idle: get("keepalive_idle")?.decode()?,
        keepalive_interval: get("keepalive_interval")?.decode()?,
        keepalive_count: get("keepalive_count")?.decode()?,
        send_timeout: get("send_timeout")?
            .decode::<Option<u64>>()?
            .map(Duration::from_millis),
    })
}

/// `nil`, or `%{sentinels: [{host, port, password | nil}], group:, role: :primary | :replica,
/// password:, timeout:, tls:}` plus the sentinels' TCP options (as `decode_tcp`).
fn decode_sentinel(term: Term<'_>) -> NifResult<Option<SentinelOptions>> {
    if term.is_atom() {
        return Ok(None); // nil
    }
    let get = |key: &str| -> NifResult<Term<'_>> {
        let atom = rustler::Atom::from_str(term.get_env(), key)?;
        term.map_get(atom)
    };
    let sentinels: Vec<(Term, u16, Term)> = get("sentinels")?.decode()?;
    let sentinels = sentinels
        .into_iter()
        .map(|(host, port, password)| {
            Ok(Sentinel {
                host: string(host)?,
                port,
                password: optional_bytes(password)?,
            })
        })
        .collect::<NifResult<Vec<_>>>()?;
    Ok(Some(SentinelOptions {
        sentinels,
        group: optional_bytes(get("group")?)?.ok_or(Error::BadArg)?,
        role: match get("role")?.atom_to_string()?.as_str() {
            "replica" => Role::Replica,
            _ => Role::Primary,
        },
        password: optional_bytes(get("password")?)?,
        timeout: Duration::from_millis(get("timeout")?.decode()?),
        tls: decode_tls(get("tls")?)?,
        tcp: decode_tcp(term)?,
    }))
}

/// `nil`, or `%{server_name:, sni:, verify:, cacerts:, cacertfile:, client_certs:, versions:,
/// ciphers:, groups:, alpn:}` where `cacerts` is `nil` or a list of DER binaries (it wins over
/// `cacertfile`, as in `:ssl`), `cacertfile` is `nil` or a path, `client_certs` a list of
/// `{cert, key}` (see `decode_client_cert`), `versions` `nil` or a list of `:tls12`/`:tls13`,
/// `ciphers` and `groups` `nil` or lists of IANA numbers, `alpn` a list of binaries.
fn decode_tls(term: Term<'_>) -> NifResult<Option<TlsOptions>> {
    if term.is_atom() {
        return Ok(None); // nil
    }
    let get = |key: &str| -> NifResult<Term<'_>> {
        let atom = rustler::Atom::from_str(term.get_env(), key)?;
        term.map_get(atom)
    };
    let cacerts = get("cacerts")?;
    let roots = if !cacerts.is_atom() {
        let ders: Vec<Binary> = cacerts.decode()?;
        Roots::Der(ders.iter().map(|der| der.as_slice().to_vec()).collect())
    } else if let Some(path) = optional_bytes(get("cacertfile")?)?.map(path) {
        Roots::PemFile(path)
    } else {
        Roots::System
    };
    let client_certs = get("client_certs")?
        .decode::<Vec<Term>>()?
        .into_iter()
        .map(decode_client_cert)
        .collect::<NifResult<Vec<_>>>()?;
    let versions = get("versions")?;
    let versions = if versions.is_atom() {
        None // nil
    } else {
        let atoms: Vec<rustler::Atom> = versions.decode()?;
        Some(
            atoms
                .into_iter()
                .map(
                    |atom| match atom.to_term(term.get_env()).atom_to_string()?.as_str() {
                        "tls12" => Ok(TlsVersion::Tls12),
                        "tls13" => Ok(TlsVersion::Tls13),
                        _ => Err(Error::BadArg),
                    },
                )
                .collect::<NifResult<Vec<_>>>()?,
        )
    };
    let alpn: Vec<Binary> = get("alpn")?.decode()?;
    Ok(Some(TlsOptions {
        server_name: optional_bytes(get("server_name")?)?
            .map(|bytes| String::from_utf8(bytes).map_err(|_| Error::BadArg))
            .transpose()?,
        sni: get("sni")?.decode()?,
        verify: get("verify")?.decode()?,
        roots,
        client_certs,
        versions,
        cipher_suites: get("ciphers")?.decode()?,
        groups: get("groups")?.decode()?,
        alpn: alpn.iter().map(|name| name.as_slice().to_vec()).collect(),
    }))
}

/// `{cert, key}`: `cert` is `{:file, path}` or `{:der, [der]}`, `key` is `{:file, path}` or
/// `{:der, :pkcs1 | :sec1 | :pkcs8, der}`.
fn decode_client_cert(term: Term<'_>) -> NifResult<ClientCert> {
    let (cert, key): (Term, Term) = term.decode()?;
    let chain = match rustler::types::tuple::get_tuple(cert)?.as_slice() {
        [tag, file] if tag.atom_to_string()? == "file" => {
            CertChain::PemFile(path(optional_bytes(*file)?.ok_or(Error::BadArg)?))
        }
        [tag, ders] if tag.atom_to_string()? == "der" => {
            let ders: Vec<Binary> = ders.decode()?;
            CertChain::Der(ders.iter().map(|der| der.as_slice().to_vec()).collect())
        }
        _ => return Err(Error::BadArg),
    };
    let key = match rustler::types::tuple::get_tuple(key)?.as_slice() {
        [tag, file] if tag.atom_to_string()? == "file" => {
            PrivateKey::PemFile(path(optional_bytes(*file)?.ok_or(Error::BadArg)?))
        }
        [tag, format, der] if tag.atom_to_string()? == "der" => {
            let format = match format.atom_to_string()?.as_str() {
                "pkcs1" => KeyFormat::Pkcs1,
                "sec1" => KeyFormat::Sec1,
                "pkcs8" => KeyFormat::Pkcs8,
                _ => return Err(Error::BadArg),
            };
            let der: Binary = der.decode()?;
            PrivateKey::Der(format, der.as_slice().to_vec())
        }
        _ => return Err(Error::BadArg),
    };
    Ok(ClientCert { chain, key })
}

fn path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// `{:tcp, host, port}` or `{:unix, path}`.
fn decode_address(term: Term<'_>) -> NifResult<Address> {
    let tuple = rustler::types::tuple::get_tuple(term)?;
    match tuple.as_slice() {
        [tag, host, port] if tag.atom_to_string()? == "tcp" => Ok(Address::Tcp {
            host: string(*host)?,
            port: port.decode()?,
        }),
        [tag, path] if tag.atom_to_string()? == "unix" => Ok(Address::Unix {
            path: string(*path)?,
        }),
        _ => Err(Error::BadArg),
    }
}

fn string(term: Term<'_>) -> NifResult<String> {
    let bin: Binary = term.decode()?;
    String::from_utf8(bin.as_slice().to_vec()).map_err(|_| Error::BadArg)
}

fn optional_bytes(term: Term<'_>) -> NifResult<Option<Vec<u8>>> {
    if term.is_atom() {
        return Ok(None); // nil
    }
    let bin: Binary = term.decode()?;
    Ok(Some(bin.as_slice().to_vec()))
}
