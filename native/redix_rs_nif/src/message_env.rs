//! Process-independent environments in which a caller's answer is built and sent, reused from a pool.
//!
//! One call used to cost an `enif_alloc_env` on the submitting scheduler and an `enif_free_env` on the
//! tokio thread, plus an `Arc` allocation for each of rustler's `OwnedEnv` clears: for many small calls
//! that malloc/free traffic across threads showed in the profile. An environment here is cleared after
//! its message is sent and goes back to the pool.

use std::marker::PhantomData;

use crossbeam_queue::ArrayQueue;
use once_cell::sync::Lazy;
use rustler::sys::{
    enif_alloc_env, enif_clear_env, enif_free_env, enif_make_copy, enif_send, ErlNifEnv, ErlNifTerm,
};
use rustler::{Env, LocalPid, Term};

/// How many idle environments are kept (those held by waiting calls do not count); beyond it,
/// returned environments are freed.
const POOLED: usize = 1024;

static POOL: Lazy<ArrayQueue<MessageEnv>> = Lazy::new(|| ArrayQueue::new(POOLED));

/// A term kept in a [`MessageEnv`]: valid until that environment is sent or recycled, which only its
/// owner can do, so a `Kept` never outlives what it points into while its owner holds both. It may
/// only be loaded through the `MessageEnv` that made it (the type does not enforce it).
#[derive(Clone, Copy)]
pub struct Kept(ErlNifTerm);

/// Proof that the current thread is not one of the VM's (a tokio worker): only such a thread may
/// send from a process-independent environment. Neither `Send` nor `Sync`, so it cannot be carried
/// to another thread.
pub struct OffVmThread(PhantomData<*const ()>);

impl OffVmThread {
    /// The proof, on a thread the VM does not manage; `None` on a scheduler thread.
    pub fn here() -> Option<OffVmThread> {
        if rustler::thread::is_scheduler_thread() {
            None
        } else {
            Some(OffVmThread(PhantomData))
        }
    }
}

/// An environment owned by one waiter at a time.
pub struct MessageEnv {
    raw: *mut ErlNifEnv,
}

// SAFETY: a process-independent environment may be used from any thread, by one thread at a time;
// `MessageEnv` is not `Sync` and moves between threads only whole.
unsafe impl Send for MessageEnv {}

impl MessageEnv {
    /// An empty environment, from the pool when it has one.
    pub fn take() -> MessageEnv {
        POOL.pop().unwrap_or_else(|| MessageEnv {
            // SAFETY: allocating an environment has no precondition.
            raw: unsafe { enif_alloc_env() },
        })
    }

    /// Runs `build` in this environment; the term it returns is kept until the next send or recycle.
    pub fn keep(&self, build: impl for<'a> FnOnce(Env<'a>) -> Term<'a>) -> Kept {
        let marker = ();
        // SAFETY: `raw` is a live environment owned by `self`; the `Env` does not escape `build`.
        let env = unsafe { Env::new(&marker, self.raw) };
        Kept(build(env).as_c_arg())
    }

    /// Copies `term` (from the caller's environment) into this one.
    pub fn copy(&self, term: Term<'_>) -> Kept {
        // SAFETY: both environments are live; `enif_make_copy` reads `term` and writes into `raw`.
        Kept(unsafe { enif_make_copy(self.raw, term.as_c_arg()) })
    }

    /// A kept term, for use while building.
    pub fn load<'a>(&self, env: Env<'a>, kept: Kept) -> Term<'a> {
        debug_assert_eq!(env.as_c_arg(), self.raw);
        // SAFETY: `kept` was made in this environment, which has not been cleared since (only `send`
        // and `recycle`, which consume `self`, clear it).
        unsafe { Term::new(env, kept.0) }
    }

    /// Sends the term `build` returns to `pid`, then returns the environment to the pool. Sending a
    /// process-independent environment needs a thread the VM does not manage: `_off_vm` proves it,
    /// so a send can neither be attempted on a scheduler thread nor be dropped there silently. A dead
    /// recipient is not an error: its answer has nowhere to go (the message stays in the environment
    /// and is cleared with it). `build` gets this environment back, to load its kept terms.
    pub fn send(
        self,
        _off_vm: &OffVmThread,
        pid: &LocalPid,
        build: impl for<'a> FnOnce(Env<'a>, &MessageEnv) -> Term<'a>,
    ) {
        let message = self.keep(|env| build(env, &self));
        // SAFETY: called off the VM's threads (proved by `_off_vm`) with a null caller environment, as
        // `enif_send` requires; the message lives in `raw`, which `enif_send` takes over until it is
        // cleared below.
        unsafe {
            enif_send(std::ptr::null_mut(), pid.as_c_arg(), self.raw, message.0);
        }
        self.recycle();
    }

    /// Clears the environment and returns it to the pool (or frees it when the pool is full).
    pub fn recycle(self) {
        // SAFETY: the environment is live and owned by `self`; every `Kept` of it dies with its owner.
        unsafe { enif_clear_env(self.raw) };
        let _ = POOL.push(self);
    }
}

impl Drop for MessageEnv {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `enif_alloc_env` and is freed once, here.
        unsafe { enif_free_env(self.raw) };
    }
}
