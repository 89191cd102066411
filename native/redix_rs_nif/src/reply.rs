//! Replies and reasons as Erlang terms, in the shapes Redix returns (RESP2 shapes for RESP2 replies).

use redix_rs_core::conn::{Reason, ReasonTerm};
use redix_rs_core::resp::Frame;
use rustler::types::binary::NewBinary;
use rustler::{Atom, Encoder, Env, Term};

use crate::atoms;

/// A binary holding a copy of `bytes` (small ones on the process heap, large ones refcounted).
pub fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut bin = NewBinary::new(env, bytes.len());
    bin.as_mut_slice().copy_from_slice(bytes);
    bin.into()
}

/// `%RedixRs.Error{message: message}`.
pub fn redis_error<'a>(env: Env<'a>, message: &[u8]) -> Term<'a> {
    let module = atom(env, "Elixir.RedixRs.Error");
    exception(env, module, atoms::message(), binary(env, message))
}

/// `%RedixRs.ConnectionError{reason: reason}`.
pub fn connection_error<'a>(env: Env<'a>, reason: &Reason) -> Term<'a> {
    let module = atom(env, "Elixir.RedixRs.ConnectionError");
    exception(env, module, atoms::reason(), self::reason(env, reason))
}

/// An exception struct with one field (hence `__exception__: true`).
fn exception<'a>(env: Env<'a>, module: Atom, field: Atom, value: Term<'a>) -> Term<'a> {
    let keys = [
        atoms::__struct__().encode(env),
        atoms::__exception__().encode(env),
        field.encode(env),
    ];
    let values = [module.encode(env), true.encode(env), value];
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or_else(|_| atoms::error().encode(env))
}

/// One reply as a term: `nil` for nulls, `%RedixRs.Error{}` for errors, lists for arrays, sets and pushes,
/// maps for maps, floats (or `:infinity`, `:negative_infinity`, `:nan`) for doubles.
pub fn frame<'a>(env: Env<'a>, frame: &Frame) -> Term<'a> {
    match frame {
        Frame::Simple(b) | Frame::Bulk(b) => binary(env, b),
        Frame::Verbatim { text, .. } => binary(env, text),
        Frame::Error(m) | Frame::BulkError(m) => redis_error(env, m),
        Frame::Integer(i) => i.encode(env),
        Frame::NullBulk | Frame::NullArray | Frame::Null => atoms::nil().encode(env),
        Frame::Boolean(b) => b.encode(env),
        Frame::Double(d) => double(env, *d),
        Frame::BigNumber(digits) => big_number(env, digits),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => list(env, items),
        Frame::Map(pairs) => map(env, pairs),
        Frame::Attribute { value, .. } => self::frame(env, value),
    }
}

/// A list of replies.
pub fn list<'a>(env: Env<'a>, frames: &[Frame]) -> Term<'a> {
    let terms: Vec<Term<'a>> = frames.iter().map(|f| frame(env, f)).collect();
    terms.encode(env)
}

fn map<'a>(env: Env<'a>, pairs: &[(Frame, Frame)]) -> Term<'a> {
    let keys: Vec<Term<'a>> = pairs.iter().map(|(k, _)| frame(env, k)).collect();
    let values: Vec<Term<'a>> = pairs.iter().map(|(_, v)| frame(env, v)).collect();
    // Duplicate keys make the map constructor fail: fall back to a list of pairs rather than lose data.
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or_else(|_| {
        let tuples: Vec<Term<'a>> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (*k, *v).encode(env))
            .collect();
        tuples.encode(env)
    })
}

fn double(env: Env<'_>, d: f64) -> Term<'_> {
    if d.is_nan() {
        atoms::nan().encode(env)
    } else if d == f64::INFINITY {
        atoms::infinity().encode(env)
    } else if d == f64::NEG_INFINITY {
        atoms::negative_infinity().encode(env)
    } else {
        d.encode(env)
    }
}

/// Big numbers become integers of any size (built through the external term format, as the NIF API
/// has no bignum constructor); malformed digits (never sent by Redis) stay a binary.
fn big_number<'a>(env: Env<'a>, digits: &[u8]) -> Term<'a> {
    if let Some(i) = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        return i.encode(env);
    }
    redix_rs_core::etf::big_integer(digits)
        .and_then(|etf| env.binary_to_term(&etf))
        .map(|(term, _)| term)
        .unwrap_or_else(|| binary(env, digits))
}

/// A disconnection reason: a bare atom, `{tag, "message"}`, or for TLS alerts `:ssl`'s shape,
/// `{:tls_alert, {alert, "message"}}`.
pub fn reason<'a>(env: Env<'a>, reason: &Reason) -> Term<'a> {
    match reason.term() {
        ReasonTerm::Atom(name) => atom(env, name).encode(env),
        ReasonTerm::Tagged(tag, msg) => (atom(env, tag), msg).encode(env),
        ReasonTerm::TaggedAtom(tag, name) => (atom(env, tag), atom(env, name)).encode(env),
        ReasonTerm::TlsAlert { alert, message } => {
            (atom(env, "tls_alert"), (atom(env, alert), message)).encode(env)
        }
    }
}

fn atom(env: Env<'_>, name: &str) -> Atom {
    Atom::from_str(env, name).unwrap_or_else(|_| atoms::error())
}
