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
    };
    let max_queued_bytes = get("max_queued_bytes")?.decode()?;
    let reply_limits = decode_reply_limits(get("reply_limits")?)?;
    let pubsub = get("pubsub")?.decode()?;
    let max_backlog_bytes = get("max_backlog_bytes")?.decode()?;
    let notify_disconnection = get("notify_disconnection")?.decode()?;
    Ok(NativeConfig {
        connect,
        max_queued_bytes,
        reply_limits,
        pubsub,
        max_backlog_bytes,
        notify_disconnection,
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
fn decode_tcp(map: Term<'_>) -> NifResult<TcpOptions> {
    let get = |key: &str| -> NifResult<Term<'_>> {
        let atom = rustler::Atom::from_str(map.get_env(), key)?;
        map.map_get(atom)
    };
    Ok(TcpOptions {
        inet6: get("inet6")?.decode()?,
        keepalive: get("keepalive")?.decode()?,
        send_buffer: get("sndbuf")?.decode()?,
        recv_buffer: get("recbuf")?.decode()?,
        nodelay: get("nodelay")?.decode()?,
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

/// `nil`, or `%{server_name:, sni:, verify:, cacerts:, cacertfile:, certfile:, keyfile:}` where
/// `cacerts` is `nil` or a list of DER binaries (it wins over `cacertfile`, as in `:ssl`) and the
/// files are `nil` or paths (`keyfile` is set whenever `certfile` is).
fn decode_tls(term: Term<'_>) -> NifResult<Option<TlsOptions>> {
    if term.is_atom() {
        return Ok(None); // nil
    }
    let get = |key: &str| -> NifResult<Term<'_>> {
        let atom = rustler::Atom::from_str(term.get_env(), key)?;
        term.map_get(atom)
    };
    let optional_path = |key: &str| -> NifResult<Option<PathBuf>> {
        Ok(optional_bytes(get(key)?)?.map(|bytes| PathBuf::from(OsString::from_vec(bytes))))
    };
    let cacerts = get("cacerts")?;
    let roots = if !cacerts.is_atom() {
        let ders: Vec<Binary> = cacerts.decode()?;
        Roots::Der(ders.iter().map(|der| der.as_slice().to_vec()).collect())
    } else if let Some(path) = optional_path("cacertfile")? {
        Roots::PemFile(path)
    } else {
        Roots::System
    };
    let client_cert = match (optional_path("certfile")?, optional_path("keyfile")?) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        _ => return Err(Error::BadArg),
    };
    Ok(Some(TlsOptions {
        server_name: optional_bytes(get("server_name")?)?
            .map(|bytes| String::from_utf8(bytes).map_err(|_| Error::BadArg))
            .transpose()?,
        sni: get("sni")?.decode()?,
        verify: get("verify")?.decode()?,
        roots,
        client_cert,
    }))
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
