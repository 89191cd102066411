//! Client-side caching, the NIF side: the cache resource a `RedixRs` connection process holds across
//! reconnections (`cache_new`, `cache_stats`), hits answered in the caller's process (`cache_get`,
//! on that resource: the reply's term is built from the cached frame, no message, no other thread,
//! no lookup of the connection's handle), and the submission
//! of a miss (`submit`, called by `nifs::submit` for the kind `:cached`) whose waiter fills the cache
//! on the connection's reader, in wire order, before the caller is answered ([`Fill`]).

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redix_rs_core::cache::{ClientCache, Limits, Refusal, Ticket, TrackingMode, CACHING_YES};
use redix_rs_core::conn::{Outgoing, SubmitError};
use redix_rs_core::resp::{encode_array_header, encode_bulk, encode_command, Frame};
use rustler::{Binary, Encoder, Env, Error, NifResult, ResourceArc, Term};

use crate::handle::{ConnectionHandle, ReplyWaiter};
use crate::{atoms, reply};
use redix_rs_core::conn::call_state::CallState;
use redix_rs_core::conn::submission::Expect;

mod cache_atoms {
    rustler::atoms! {
        cached,
        miss,
        not_cacheable,
        optin,
        broadcast,
        hits,
        misses,
        evictions,
        invalidations,
        refused_fills,
        entries,
        bytes,
    }
}
use cache_atoms as ca;

/// A cached read may be at most this large (it is encoded on a normal scheduler).
const MAX_ELEMENTS: usize = 4096;
const MAX_BYTES: usize = 256 * 1024;

/// The cache of one `RedixRs` connection process, shared by each of its connections in turn.
pub struct CacheResource {
    pub cache: Arc<ClientCache>,
}

#[rustler::resource_impl]
impl rustler::Resource for CacheResource {}

/// `cache_new(%{max_entries: n, max_bytes: n, mode: :optin | :broadcast, prefixes: [binary]})`.
#[rustler::nif]
fn cache_new(config: Term<'_>) -> NifResult<Term<'_>> {
    let env = config.get_env();
    let get =
        |key: &str| -> NifResult<Term<'_>> { config.map_get(rustler::Atom::from_str(env, key)?) };
    let limits = Limits {
        max_entries: get("max_entries")?.decode()?,
        max_bytes: get("max_bytes")?.decode()?,
    };
    let mode = get("mode")?;
    let mode = if mode == ca::optin().encode(env) {
        TrackingMode::OptIn
    } else if mode == ca::broadcast().encode(env) {
        let prefixes: Vec<Binary> = get("prefixes")?.decode()?;
        TrackingMode::Broadcast {
            prefixes: prefixes
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_slice()))
                .collect(),
        }
    } else {
        return Err(Error::BadArg);
    };
    let cache = ClientCache::new(limits, mode).map_err(|_| Error::BadArg)?;
    // Returned as a term: the resource holds locks, which are not `RefUnwindSafe`.
    let resource = ResourceArc::new(CacheResource {
        cache: Arc::new(cache),
    });
    Ok(resource.encode(env))
}

/// `%{hits:, misses:, evictions:, invalidations:, refused_fills:, entries:, bytes:}`.
#[rustler::nif]
fn cache_stats(env: Env<'_>, resource: ResourceArc<CacheResource>) -> NifResult<Term<'_>> {
    let s = resource.cache.stats();
    let keys = [
        ca::hits(),
        ca::misses(),
        ca::evictions(),
        ca::invalidations(),
        ca::refused_fills(),
        ca::entries(),
        ca::bytes(),
    ]
    .map(|a| a.encode(env));
    let values = [
        s.hits,
        s.misses,
        s.evictions,
        s.invalidations,
        s.refused_fills,
        s.entries as u64,
        s.bytes as u64,
    ]
    .map(|n| n.encode(env));
    Term::map_from_term_arrays(env, &keys, &values)
}

thread_local! {
    /// Where a lookup's cache key is encoded (one per scheduler thread: no allocation per hit).
    static KEY: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(256));
}

/// Replies up to this size become terms with their shard's read lock held (no reference count to
/// bump on a hot entry); larger ones are cloned out first, so that no writer waits for a big copy.
const BUILD_UNDER_LOCK: usize = 4096;

/// Answers a cached read from `cache` (the connection's, which its process publishes): `{:ok,
/// value}` on a hit, `:miss` (submit it with the kind `:cached`), `:normalize` when the command
/// needs Elixir's conversion first. Nothing waits: one read lock of one shard, no allocation for a
/// command of binaries and integers.
#[rustler::nif]
fn cache_get<'a>(env: Env<'a>, resource: Term<'a>, command: Term<'a>) -> NifResult<Term<'a>> {
    // Borrowed, not a `ResourceArc`: no reference count to bump, a cache line every scheduler
    // would otherwise write on every hit.
    let resource: &CacheResource = resource.decode()?;
    enum Found<'a> {
        Term(Term<'a>),
        Large(redix_rs_core::cache::Reply),
    }
    let found = KEY.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        encode_key_terms(command, &mut buf)?;
        Ok(resource.cache.get_with(&buf, |cached| {
            if cached.size() <= BUILD_UNDER_LOCK {
                Found::Term(reply::frame(env, cached.frame()))
            } else {
                Found::Large(cached.clone())
            }
        }))
    });
    Ok(match found {
        Ok(Some(Found::Term(term))) => (atoms::ok(), term).encode(env),
        Ok(Some(Found::Large(cached))) => {
            (atoms::ok(), reply::frame(env, cached.frame())).encode(env)
        }
        Ok(None) | Err(Stop::TooLarge) => ca::miss().encode(env),
        Err(Stop::Normalize) => atoms::normalize().encode(env),
    })
}

/// `encode_key` of a command given as a term, element by element (no vector of arguments).
fn encode_key_terms(command: Term<'_>, out: &mut BytesMut) -> Result<(), Stop> {
    let len = command.list_length().map_err(|_| Stop::Normalize)?;
    if len == 0 {
        return Err(Stop::Normalize);
    }
    if len > MAX_ELEMENTS {
        return Err(Stop::TooLarge);
    }
    encode_array_header(len, out);
    let mut first = true;
    for element in command.into_list_iterator().map_err(|_| Stop::Normalize)? {
        let start = out.len();
        if let Ok(bin) = Binary::from_term(element) {
            encode_bulk(bin.as_slice(), out);
        } else if let Ok(i) = element.decode::<i64>() {
            encode_bulk(i.to_string().as_bytes(), out);
        } else if element.is_atom() {
            let name = element.atom_to_string().map_err(|_| Stop::Normalize)?;
            encode_bulk(if name == "nil" { b"" } else { name.as_bytes() }, out);
        } else {
            return Err(Stop::Normalize);
        }
        if first {
            // The name, upper-cased as `encode_key` does: between its header and the CRLF.
            first = false;
            let end = out.len() - 2;
            let header = out[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            out[start + header..end].make_ascii_uppercase();
        }
        if out.len() > MAX_BYTES {
            return Err(Stop::TooLarge);
        }
    }
    Ok(())
}

/// Submits a cached read that missed (`commands` is `[command]`): checks that it may be cached, takes
/// its fill ticket, then queues `CLIENT CACHING yes` (OPTIN) and the read as one submission. Returns
/// what `nifs::submit` returns, or `{:not_cacheable, message}`; `kind` must be `:cached`.
pub fn submit<'a>(
    env: Env<'a>,
    handle: &ConnectionHandle,
    reference: Term<'a>,
    commands: Term<'a>,
    kind: Term<'a>,
) -> NifResult<Term<'a>> {
    if kind != ca::cached().encode(env) {
        return Err(Error::BadArg);
    }
    let Some(cache) = &handle.cache else {
        return Ok(no_cache(env));
    };
    let command = match commands.into_list_iterator()?.collect::<Vec<Term>>()[..] {
        [command] => command,
        _ => return Err(Error::BadArg),
    };
    let args = match decode_command(command) {
        Ok(args) => args,
        Err(Stop::Normalize) => return Ok(atoms::normalize().encode(env)),
        Err(Stop::TooLarge) => {
            let message = format!(
                "a cached read may have at most {MAX_ELEMENTS} elements and {MAX_BYTES} bytes; \
                 send this one without cache: true"
            );
            return Ok(not_cacheable(env, &message));
        }
    };
    let ticket = match cache.prepare(&args) {
        Ok(ticket) => ticket,
        Err(Refusal::NotReady) => return Ok((atoms::error(), atoms::closed()).encode(env)),
        Err(refusal) => return Ok(not_cacheable(env, &refusal_message(&refusal))),
    };
    let Some(state) = CallState::new() else {
        return Ok((atoms::error(), atoms::full()).encode(env));
    };
    let token = state.token();
    let confirm = cache.sends_caching_yes();
    let expect = Expect::Replies(if confirm { 2 } else { 1 });
    let fill = Fill {
        cache: cache.clone(),
        ticket: Some(ticket),
        confirm,
    };
    let waiter = ReplyWaiter::new(state, env.pid(), reference, expect).with_fill(fill);
    let encode = |out: &mut Outgoing<'_>| {
        if confirm {
            out.buf().extend_from_slice(CACHING_YES);
        }
        encode_command(&args, out.buf());
        Ok::<(), std::convert::Infallible>(())
    };
    Ok(match handle.mux.submit_with(waiter, encode) {
        Ok(()) => (atoms::ok(), (token.index, token.generation)).encode(env),
        Err(SubmitError::Full(_)) => (atoms::error(), atoms::full()).encode(env),
        Err(_) => (atoms::error(), atoms::closed()).encode(env),
    })
}

/// What a cached read's waiter does with its replies: eats the `+OK` of `CLIENT CACHING yes`, then
/// fills the cache with the read's reply if its ticket still holds. Runs on the connection's reader,
/// in wire order with the invalidations.
pub struct Fill {
    cache: Arc<ClientCache>,
    ticket: Option<Ticket>,
    /// The next reply is `CLIENT CACHING yes`'s.
    confirm: bool,
}

impl Fill {
    /// Takes one reply; true if it is the caller's (false: `CLIENT CACHING yes`'s, not shown).
    pub fn reply(&mut self, frame: &Frame) -> bool {
        if self.confirm {
            self.confirm = false;
            // Anything but +OK (an error; QUEUED inside someone's MULTI): the read is not tracked.
            if !matches!(frame, Frame::Simple(ok) if ok.as_ref() == b"OK") {
                self.ticket = None;
            }
            return false;
        }
        if let Some(ticket) = self.ticket.take() {
            // A refused fill (stale, flushed, too large, an error reply) just is not cached.
            let _ = self.cache.fill(ticket, frame);
        }
        true
    }
}

enum Stop {
    /// Elixir converts or refuses it (`RedixRs.Command`).
    Normalize,
    /// More than [`MAX_ELEMENTS`] elements or [`MAX_BYTES`] bytes.
    TooLarge,
}

/// A command's elements as bytes: binaries as they are, integers and atoms as `to_string/1` renders
/// them; anything else (or an improper or empty list) is for Elixir to convert or refuse.
fn decode_command(command: Term<'_>) -> Result<Vec<Cow<'_, [u8]>>, Stop> {
    let mut args = Vec::with_capacity(4);
    let mut bytes = 0usize;
    for element in command.into_list_iterator().map_err(|_| Stop::Normalize)? {
        if args.len() == MAX_ELEMENTS {
            return Err(Stop::TooLarge);
        }
        let arg = if let Ok(bin) = Binary::from_term(element) {
            Cow::Borrowed(bin.as_slice())
        } else if let Ok(i) = element.decode::<i64>() {
            Cow::Owned(i.to_string().into_bytes())
        } else if element.is_atom() {
            let name = element.atom_to_string().map_err(|_| Stop::Normalize)?;
            // to_string(nil) is "" in Elixir; every other atom renders as its name.
            let text = if name == "nil" { String::new() } else { name };
            Cow::Owned(text.into_bytes())
        } else {
            return Err(Stop::Normalize);
        };
        bytes += arg.len();
        if bytes > MAX_BYTES {
            return Err(Stop::TooLarge);
        }
        args.push(arg);
    }
    if args.is_empty() {
        Err(Stop::Normalize)
    } else {
        Ok(args)
    }
}

fn refusal_message(refusal: &Refusal) -> String {
    match refusal {
        Refusal::NotCovered(_) => format!(
            "cache: true needs every key under one of the connection's broadcast prefixes: {refusal}"
        ),
        other => format!("cache: true needs a cacheable read: {other}"),
    }
}

fn no_cache(env: Env<'_>) -> Term<'_> {
    not_cacheable(
        env,
        "cache: true needs a connection started with the :client_cache option",
    )
}

fn not_cacheable<'a>(env: Env<'a>, message: &str) -> Term<'a> {
    (ca::not_cacheable(), message).encode(env)
}
