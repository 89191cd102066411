//! Client-side caching, the NIF side: the cache resource a `RedixRs` connection process holds across
//! reconnections (`cache_new`, `cache_stats`), hits answered in the caller's process (`cache_get`,
//! on that resource: the reply's term is built from the cached frame, no message, no other thread,
//! no lookup of the connection's handle), and the submission
//! of a miss (`submit`, called by `nifs::submit` for the kind `:cached`) whose waiter fills the cache
//! on the connection's reader, in wire order, before the caller is answered ([`Fill`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redix_rs_core::cache::{ClientCache, Limits, Refusal, Ticket, TrackingMode, CACHING_YES};
use redix_rs_core::conn::{Outgoing, SubmitError};
use redix_rs_core::resp::{encode_array_header, encode_bulk, encode_command, Frame};
use rustler::sys::{c_void, ErlNifResourceFlags, ErlNifResourceType};
use rustler::{Binary, Encoder, Env, Error, NifResult, Term};

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
///
/// A resource of a type of its own, opened by the library's `load` ([`open_type`]) rather than by
/// `#[rustler::resource_impl]`: rustler finds a type's handle in a `TypeId` map on every decode (a
/// SipHash and a probe, ~8% of a hit), where [`cache_of`] reads one pointer.
pub struct CacheResource {
    pub cache: Arc<ClientCache>,
}

// ERTS aligns a resource's data to 8 bytes.
const _: () = assert!(std::mem::align_of::<CacheResource>() <= 8);

/// The handle of the resource type of [`CacheResource`], set once by [`open_type`].
static CACHE_TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(std::ptr::null_mut());

/// Opens the resource type of [`CacheResource`]; the library's `load` callback calls it.
pub fn open_type(env: Env<'_>) -> bool {
    // SAFETY: called from the load callback, with its environment; the names are C strings.
    let handle = unsafe {
        rustler::sys::enif_open_resource_type(
            env.as_c_arg(),
            std::ptr::null(),
            c"RedixRs.Cache".as_ptr(),
            Some(destruct),
            ErlNifResourceFlags::ERL_NIF_RT_CREATE,
            std::ptr::null_mut(),
        )
    };
    CACHE_TYPE.store(handle.cast_mut(), Ordering::Release);
    !handle.is_null()
}

/// Drops a [`CacheResource`] the VM no longer references.
unsafe extern "C" fn destruct(_env: *mut rustler::sys::ErlNifEnv, object: *mut c_void) {
    // SAFETY: `object` is the data of a resource of `CACHE_TYPE`, written by `make_cache`, dropped
    // once, here.
    unsafe { std::ptr::drop_in_place(object.cast::<CacheResource>()) }
}

/// A new resource holding `resource`, as a term.
fn make_cache<'a>(env: Env<'a>, resource: CacheResource) -> NifResult<Term<'a>> {
    let handle = CACHE_TYPE.load(Ordering::Acquire);
    if handle.is_null() {
        return Err(Error::BadArg);
    }
    // SAFETY: the resource's data is allocated for a `CacheResource` (aligned, see above) and
    // written before the term is made; the term then holds the only reference.
    unsafe {
        let object =
            rustler::sys::enif_alloc_resource(handle, std::mem::size_of::<CacheResource>());
        object.cast::<CacheResource>().write(resource);
        let term = rustler::sys::enif_make_resource(env.as_c_arg(), object);
        rustler::sys::enif_release_resource(object);
        Ok(Term::new(env, term))
    }
}

/// The [`CacheResource`] `term` is (`cache_new`'s result), borrowed for as long as the term lives.
pub fn cache_of<'a>(term: Term<'a>) -> NifResult<&'a CacheResource> {
    let handle = CACHE_TYPE.load(Ordering::Acquire);
    let mut object: *const c_void = std::ptr::null();
    // SAFETY: `enif_get_resource` only reads the term; on success `object` is the data of a live
    // resource of our type, which `term` keeps alive.
    let found = !handle.is_null()
        && unsafe {
            rustler::sys::enif_get_resource(
                term.get_env().as_c_arg(),
                term.as_c_arg(),
                handle,
                &mut object,
            )
        } != 0;
    if found {
        // SAFETY: see above.
        Ok(unsafe { &*object.cast::<CacheResource>() })
    } else {
        Err(Error::BadArg)
    }
}

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
    make_cache(
        env,
        CacheResource {
            cache: Arc::new(cache),
        },
    )
}

/// `%{hits:, misses:, evictions:, invalidations:, refused_fills:, entries:, bytes:}`.
#[rustler::nif]
fn cache_stats<'a>(env: Env<'a>, resource: Term<'a>) -> NifResult<Term<'a>> {
    let s = cache_of(resource)?.cache.stats();
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

/// Replies up to this size become terms with their shard's read lock held (no reference count to
/// bump on a hot entry); larger ones are cloned out first, so that no writer waits for a big copy.
const BUILD_UNDER_LOCK: usize = 4096;

/// Cache keys up to this size are encoded on the stack (no thread-local, no capacity checks);
/// longer ones in a buffer of their own.
const STACK_KEY: usize = 256;

// `cache_get/2`, registered by hand rather than by `#[rustler::nif]`: the macro's entry collects
// its arguments into a `Vec` (an allocation and a free on every hit, ~10% of one). This entry
// does what the macro's does otherwise: panics are caught and raised as `:nif_panicked`.
rustler::codegen_runtime::inventory::submit!(rustler::Nif {
    name: c"cache_get".as_ptr(),
    arity: 2,
    flags: rustler::SchedulerFlags::Normal as rustler::codegen_runtime::c_uint,
    raw_func: cache_get_entry,
});

unsafe extern "C" fn cache_get_entry(
    nif_env: *mut rustler::sys::ErlNifEnv,
    argc: rustler::codegen_runtime::c_int,
    argv: *const rustler::sys::ErlNifTerm,
) -> rustler::sys::ErlNifTerm {
    let lifetime = ();
    // SAFETY: the VM calls this with its environment and `argc` (2, the registered arity) terms
    // of that environment.
    let env = unsafe { Env::new(&lifetime, nif_env) };
    let result = std::panic::catch_unwind(move || {
        if argc != 2 {
            return Err(Error::BadArg);
        }
        // SAFETY: as above.
        let (resource, command) = unsafe { (Term::new(env, *argv), Term::new(env, *argv.add(1))) };
        cache_get(env, resource, command)
    });
    // SAFETY: the term is returned to the VM in `env`, as the macro's entry does.
    unsafe { rustler::codegen_runtime::handle_nif_result(result, env).apply(env) }
}

/// Answers a cached read from `cache` (the connection's, which its process publishes): `{:ok,
/// value}` on a hit, `:miss` (submit it with the kind `:cached`), `:normalize` when the command
/// needs Elixir's conversion first. Nothing waits: one read lock of one shard, no allocation for a
/// command of binaries and integers.
fn cache_get<'a>(env: Env<'a>, resource: Term<'a>, command: Term<'a>) -> NifResult<Term<'a>> {
    // Borrowed, not a `ResourceArc`: no reference count to bump, a cache line every scheduler
    // would otherwise write on every hit.
    let resource = cache_of(resource)?;
    let mut stack = StackKey::new();
    let found = match encode_key_stack(command, &mut stack) {
        Ok(()) => lookup(env, resource, stack.as_slice()),
        Err(Stop::TooLarge) if stack.overflowed => {
            let mut buf = BytesMut::with_capacity(4 * STACK_KEY);
            match encode_key_terms(command, &mut buf) {
                Ok(()) => lookup(env, resource, &buf),
                Err(stop) => Err(stop),
            }
        }
        Err(stop) => Err(stop),
    };
    Ok(match found {
        Ok(Some(term)) => ok_tuple(env, term),
        Ok(None) | Err(Stop::TooLarge) => ca::miss().to_term(env),
        Err(Stop::Normalize) => atoms::normalize().to_term(env),
    })
}

/// `{:ok, term}` (rustler's tuple encoders collect the elements in a `Vec` first).
fn ok_tuple<'a>(env: Env<'a>, term: Term<'a>) -> Term<'a> {
    let elements = [atoms::ok().to_term(env).as_c_arg(), term.as_c_arg()];
    // SAFETY: both elements are terms of `env`.
    unsafe {
        Term::new(
            env,
            rustler::sys::enif_make_tuple_from_array(env.as_c_arg(), elements.as_ptr(), 2),
        )
    }
}

/// The term of the cached reply to `key`, if any.
fn lookup<'a>(
    env: Env<'a>,
    resource: &CacheResource,
    key: &[u8],
) -> Result<Option<Term<'a>>, Stop> {
    let mut large = None;
    let term = resource.cache.get_with(key, |cached| {
        match cached.frame() {
            // The commonest reply (GET, HGET): its binary made here, short ones copied inline.
            Frame::Bulk(bytes) if bytes.len() <= BUILD_UNDER_LOCK => {
                let mut binary = rustler::NewBinary::new(env, bytes.len());
                copy_short(binary.as_mut_slice(), bytes);
                Some(binary.into())
            }
            _ if cached.size() <= BUILD_UNDER_LOCK => Some(reply::frame(env, cached.frame())),
            _ => {
                large = Some(cached.clone());
                None
            }
        }
    });
    Ok(match (term, large) {
        (Some(Some(term)), _) => Some(term),
        (_, Some(cached)) => Some(reply::frame(env, cached.frame())),
        _ => None,
    })
}

/// A cache key being encoded on the stack.
struct StackKey {
    bytes: [u8; STACK_KEY],
    len: usize,
    /// It did not fit: encode it again with [`encode_key_terms`].
    overflowed: bool,
}

impl StackKey {
    fn new() -> StackKey {
        StackKey {
            bytes: [0; STACK_KEY],
            len: 0,
            overflowed: false,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    #[inline]
    fn push(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let end = self.len + bytes.len();
        match self.bytes.get_mut(self.len..end) {
            Some(dst) => {
                copy_short(dst, bytes);
                self.len = end;
                Ok(())
            }
            None => {
                self.overflowed = true;
                Err(Stop::TooLarge)
            }
        }
    }

    /// `<kind><n>\r\n`, as `encode_array_header` and `encode_bulk` write it: the digits in place.
    #[inline]
    fn header(&mut self, kind: u8, n: usize) -> Result<(), Stop> {
        let mut digits = 1;
        let mut rest = n / 10;
        while rest > 0 {
            digits += 1;
            rest /= 10;
        }
        let end = self.len + 1 + digits + 2;
        let Some(dst) = self.bytes.get_mut(self.len..end) else {
            self.overflowed = true;
            return Err(Stop::TooLarge);
        };
        dst[0] = kind;
        let mut n = n;
        for at in (1..=digits).rev() {
            dst[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        dst[digits + 1] = b'\r';
        dst[digits + 2] = b'\n';
        self.len = end;
        Ok(())
    }

    #[inline]
    fn bulk(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.header(b'$', bytes.len())?;
        self.push(bytes)?;
        self.push(b"\r\n")
    }
}

/// `dst.copy_from_slice(src)` (same lengths), with short copies as a few moves of fixed size:
/// libc's `memmove` costs a call and its size dispatch, several times per hit for bytes this short.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    if src.len() > 32 || dst.len() != src.len() {
        dst.copy_from_slice(src);
        return;
    }
    let mut at = 0;
    while src.len() - at >= 8 {
        dst[at..at + 8].copy_from_slice(&src[at..at + 8]);
        at += 8;
    }
    if src.len() - at >= 4 {
        dst[at..at + 4].copy_from_slice(&src[at..at + 4]);
        at += 4;
    }
    if src.len() - at >= 2 {
        dst[at..at + 2].copy_from_slice(&src[at..at + 2]);
        at += 2;
    }
    if at < src.len() {
        dst[at] = src[at];
    }
}

/// [`encode_key_terms`] on the stack: the same bytes, or `TooLarge` with `overflowed` set when
/// they do not fit.
fn encode_key_stack(command: Term<'_>, out: &mut StackKey) -> Result<(), Stop> {
    let len = command.list_length().map_err(|_| Stop::Normalize)?;
    if len == 0 {
        return Err(Stop::Normalize);
    }
    if len > MAX_ELEMENTS {
        return Err(Stop::TooLarge);
    }
    out.header(b'*', len)?;
    let mut first = true;
    for element in command.into_list_iterator().map_err(|_| Stop::Normalize)? {
        if let Ok(bin) = Binary::from_term(element) {
            let bytes = bin.as_slice();
            if first {
                // The name, upper-cased as `encode_key` does.
                out.header(b'$', bytes.len())?;
                let start = out.len;
                out.push(bytes)?;
                out.bytes[start..out.len].make_ascii_uppercase();
                out.push(b"\r\n")?;
            } else {
                out.bulk(bytes)?;
            }
        } else if let Ok(i) = element.decode::<i64>() {
            let mut text = [0u8; 24];
            let n = format_i64(i, &mut text);
            out.bulk(&text[n..])?;
        } else if element.is_atom() {
            // Atoms (names included) take the general path.
            return encode_overflow(out);
        } else {
            return Err(Stop::Normalize);
        }
        first = false;
    }
    Ok(())
}

/// Sends a command the stack path does not handle to [`encode_key_terms`].
fn encode_overflow(out: &mut StackKey) -> Result<(), Stop> {
    out.overflowed = true;
    Err(Stop::TooLarge)
}

/// Writes `i` in decimal at the end of `out`; returns where it starts.
fn format_i64(i: i64, out: &mut [u8; 24]) -> usize {
    let mut at = out.len();
    let mut n = i.unsigned_abs();
    loop {
        at -= 1;
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        at -= 1;
        out[at] = b'-';
    }
    at
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
