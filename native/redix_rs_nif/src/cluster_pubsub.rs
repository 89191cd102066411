//! What `RedixRs.PubSub` needs to run on a Redis Cluster: the slot of a shard channel (`key_slot`),
//! and the cluster's slot map, asked of one node (`cluster_pubsub_discover`). Both reuse the core's
//! `cluster::slot` and `cluster::topology`; the subscriptions themselves run on ordinary pub/sub
//! connections, one per node, managed by `RedixRs.PubSub.Cluster`.

use bytes::BytesMut;
use redix_rs_core::cluster::{slot, Origin, Topology, TopologyError, SLOT_COUNT};
use redix_rs_core::conn::{
    establish, Address, Confirmations, ConnectError, ConnectOptions, Stream,
};
use redix_rs_core::pubsub::Kind;
use redix_rs_core::resp::{encode_command, Frame, Limits, Parsed, Parser};
use rustler::{Binary, Encoder, Env, Error, LocalPid, NifResult, OwnedEnv, Term};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{atoms, config, reply, runtime};

rustler::atoms! {
    topology,
    redix_rs_pubsub_ended,
    panic,
    subscribe,
    unsubscribe,
    shard,
}

/// Bytes of key `key_slot` hashes on a normal scheduler: CRC16 costs about 3 ns a byte (measured on
/// the 2-core dev box under load: 45 µs for 16 KiB, 3.4 ms for 1 MiB), so a call stays under 100 µs.
const INLINE_SLOT_BYTES: usize = 16 * 1024;

/// The hash slot of `key` (CRC16/XMODEM mod 16384 of its hash tag, or of the whole key), or `:dirty`
/// for a key longer than `INLINE_SLOT_BYTES` (hash it with `key_slot_dirty/1`). Pure.
#[rustler::nif]
fn key_slot<'a>(env: Env<'a>, key: Binary<'a>) -> Term<'a> {
    if key.len() > INLINE_SLOT_BYTES {
        return atoms::dirty().encode(env);
    }
    slot(key.as_slice()).encode(env)
}

/// `key_slot/1` for a key of any length, on a dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn key_slot_dirty(key: Binary<'_>) -> u16 {
    slot(key.as_slice())
}

/// Connects to the node of `config` (a connection config as `connect/2` takes it), asks it
/// `CLUSTER SHARDS` (`CLUSTER SLOTS` before Redis 7) and sends the caller `{reference, {:ok,
/// ranges}}`, where `ranges` lists `{first_slot, last_slot, host, port}` of each run of slots one
/// primary owns (unowned slots are left out), or `{reference, {:error, reason}}` (a connection
/// error's reason, `%RedixRs.Error{}` for an error reply, `{:topology, text}` for a reply that is not
/// a slot map, or `:panic`). Returns `:ok`
/// at once; everything else happens on the tokio runtime, within the config's `timeout` for the
/// connection and again for the exchange.
#[rustler::nif]
fn cluster_pubsub_discover<'a>(
    env: Env<'a>,
    config: Term<'a>,
    reference: Term<'a>,
) -> NifResult<Term<'a>> {
    let config = config::decode(config)?;
    let runtime = runtime::get().map_err(|e| Error::Term(Box::new(e)))?;
    let caller = env.pid();
    let mut owned = OwnedEnv::new();
    let saved = owned.save(reference);
    let opts = config.connect;
    runtime.spawn(async move {
        // A panic ends the inner task only; the caller still gets an answer.
        let result = match tokio::spawn(async move { discover(&opts).await }).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Panic),
        };
        let _ = owned.send_and_clear(&caller, |env| {
            let reference = saved.load(env);
            (reference, result_term(env, result)).encode(env)
        });
    });
    Ok(atoms::ok().encode(env))
}

/// Why a discovery failed.
enum Failure {
    Connect(ConnectError),
    Topology(TopologyError),
    Panic,
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Self {
        Failure::Connect(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Connect(ConnectError::Io(e))
    }
}

/// A run of slots owned by one primary: `(first, last, host, port)`.
type Range = (u16, u16, String, u16);

async fn discover(opts: &ConnectOptions) -> Result<Vec<Range>, Failure> {
    let (mut stream, mut buf) = establish(opts).await?;
    let host = match &opts.address {
        Address::Tcp { host, .. } => host.clone(),
        Address::Unix { .. } => String::new(),
    };
    let origin = Origin {
        host: &host,
        tls: opts.tls.is_some(),
    };
    let exchange = async {
        let reply = request(&mut stream, &mut buf, &["CLUSTER", "SHARDS"]).await?;
        let parsed = match Topology::from_shards(&reply, origin) {
            // Before Redis 7: `ERR unknown subcommand 'shards'`.
            Err(TopologyError::Server(message)) if message.contains("unknown subcommand") => {
                let reply = request(&mut stream, &mut buf, &["CLUSTER", "SLOTS"]).await?;
                Topology::from_slots(&reply, origin)
            }
            parsed => parsed,
        };
        parsed.map(|t| ranges(&t)).map_err(Failure::Topology)
    };
    tokio::time::timeout(opts.timeout, exchange)
        .await
        .map_err(|_| Failure::Connect(ConnectError::Timeout))?
}

/// One command and its reply on a stream nothing else uses.
async fn request(stream: &mut Stream, buf: &mut BytesMut, args: &[&str]) -> Result<Frame, Failure> {
    let mut out = BytesMut::new();
    encode_command(args, &mut out);
    stream.write_all(&out).await?;
    let mut parser = Parser::new(Limits::default());
    loop {
        if let Parsed::Complete(frame) = parser.parse(buf).map_err(ConnectError::from)? {
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Failure::Connect(ConnectError::Closed));
        }
    }
}

/// The slot table as runs of consecutive slots with the same primary.
fn ranges(topology: &Topology) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    let mut current: Option<(u16, usize)> = None;
    let close = |start: u16, end: u16, index: usize, out: &mut Vec<Range>| {
        if let Some(node) = topology.node(index) {
            out.push((start, end, node.host.clone(), node.port));
        }
    };
    for s in 0..SLOT_COUNT {
        let owner = topology.primary(s);
        match (current, owner) {
            (Some((_, index)), Some(o)) if index == o => {}
            (Some((start, index)), _) => {
                close(start, s - 1, index, &mut out);
                current = owner.map(|o| (s, o));
            }
            (None, _) => current = owner.map(|o| (s, o)),
        }
    }
    if let Some((start, index)) = current {
        close(start, SLOT_COUNT - 1, index, &mut out);
    }
    out
}

fn result_term(env: Env<'_>, result: Result<Vec<Range>, Failure>) -> Term<'_> {
    match result {
        Ok(ranges) => (atoms::ok(), ranges).encode(env),
        Err(failure) => {
            let reason = match failure {
                Failure::Connect(ConnectError::Redis(message)) => {
                    reply::redis_error(env, message.as_bytes())
                }
                Failure::Connect(e) => reply::reason(env, &e.reason()),
                // An error reply (`ERR This instance has cluster support disabled`): as Redis said it.
                Failure::Topology(TopologyError::Server(message)) => {
                    reply::redis_error(env, message.as_bytes())
                }
                Failure::Topology(e) => (topology(), e.to_string()).encode(env),
                Failure::Panic => panic().encode(env),
            };
            (atoms::error(), reason).encode(env)
        }
    }
}

/// Tells the owner of pub/sub connection `id` that Redis ended its subscription to shard channel
/// `channel` on its own (the channel's slot moved to another node): `{:redix_rs_pubsub_ended, id,
/// channel}`. From a tokio thread.
pub fn notify_ended(env: &mut OwnedEnv, owner: &LocalPid, id: u64, channel: &[u8]) {
    let _ = env.send_and_clear(owner, |env| {
        (redix_rs_pubsub_ended(), id, reply::binary(env, channel)).encode(env)
    });
}

/// Tells the owner of pub/sub connection `id` that Redis refused a (un)subscription:
/// `{:redix_rs_pubsub_rejected, error, {id, :subscribe | :unsubscribe, kind, names}}`. From a tokio
/// thread.
pub fn notify_refused(
    env: &mut OwnedEnv,
    owner: &LocalPid,
    id: u64,
    error: &Frame,
    refused: &Confirmations,
) {
    let _ = env.send_and_clear(owner, |env| {
        let action = if refused.subscribe {
            subscribe()
        } else {
            unsubscribe()
        };
        let kind = match refused.kind {
            Kind::Channel => atoms::channel(),
            Kind::Pattern => atoms::pattern(),
            Kind::Shard => shard(),
        };
        let names: Vec<Term> = refused
            .names
            .iter()
            .map(|name| reply::binary(env, name))
            .collect();
        let what = (id, action, kind, names);
        (
            atoms::redix_rs_pubsub_rejected(),
            reply::frame(env, error),
            what,
        )
            .encode(env)
    });
}
