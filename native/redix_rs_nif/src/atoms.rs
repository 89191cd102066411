//! Atoms the NIFs return or send.

rustler::atoms! {
    ok,
    error,
    nil,
    closed,
    full,
    dirty,
    normalize,
    connected,
    connect_failed,
    disconnected,
    infinity,
    negative_infinity,
    nan,
    message,
    redix_rs_native,
    __struct__,
    __exception__,
    panic,
    cancelled,
    sent,
}

/// `RedixRs.Error`, the struct a Redis error reply becomes.
pub fn error_module(env: rustler::Env<'_>) -> rustler::Atom {
    // Creating an atom that exists is a lookup; it cannot fail for a valid name.
    rustler::Atom::from_str(env, "Elixir.RedixRs.Error").unwrap_or_else(|_| error())
}
