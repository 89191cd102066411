//! Whether a call's answer was sent or its caller gave up first, kept in a slot of one process-wide
//! table rather than in a resource allocated per call.
//!
//! `enif_send` cannot target a process alias, so this is how a caller that timed out makes sure no late
//! reply lands in its mailbox: the reader sends only if it wins pending → sent; the caller cancels only
//! if it wins pending → cancelled. A resource per call (allocated on the submitting scheduler, released
//! by garbage collection through the VM's deferred cleanup) cost ~10% of many-caller throughput;
//! a slot is reused instead.
//!
//! A slot's word holds a generation and a status. The caller's token names the slot and the
//! generation it was issued in. Only the waiter frees a slot, when it is dropped (after it sent the
//! answer or found the call cancelled, or unused when its submission was refused and no token was
//! handed out), by moving it to the next generation: a caller cancelling later with the old
//! generation then loses the race, which is right, since its answer was sent. So a waiter whose
//! caller holds a token must not be dropped without answering (the multiplexer fails every waiter
//! it holds when a connection ends, on a tokio thread, where sending is allowed).
//!
//! Tokens are trusted: they come from `submit` and go back to `cancel` through `RedixRs.Call` only.
//! The table never shrinks: 8 bytes per slot, as many slots as calls were ever waiting at once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_queue::SegQueue;
use once_cell::sync::{Lazy, OnceCell};

const PENDING: u64 = 0;
const SENT: u64 = 1;
const CANCELLED: u64 = 2;
const STATUS_BITS: u32 = 2;
const STATUS_MASK: u64 = (1 << STATUS_BITS) - 1;

/// Slots are allocated in chunks that are never freed, so a token can always be checked safely.
const CHUNK: usize = 4096;
const CHUNKS: usize = 4096;

struct Table {
    chunks: Vec<OnceCell<Box<[AtomicU64]>>>,
    /// The next slot never issued.
    next: AtomicUsize,
    free: SegQueue<usize>,
}

static TABLE: Lazy<Table> = Lazy::new(|| Table {
    chunks: (0..CHUNKS).map(|_| OnceCell::new()).collect(),
    next: AtomicUsize::new(0),
    free: SegQueue::new(),
});

impl Table {
    /// The slot `index`, if its chunk exists.
    fn slot(&self, index: usize) -> Option<&AtomicU64> {
        let chunk = self.chunks.get(index / CHUNK)?.get()?;
        chunk.get(index % CHUNK)
    }

    /// A free slot: a released one, or a new one (`None` once every chunk is in use).
    fn issue(&self) -> Option<usize> {
        if let Some(index) = self.free.pop() {
            return Some(index);
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let chunk = self.chunks.get(index / CHUNK)?;
        chunk.get_or_init(|| (0..CHUNK).map(|_| AtomicU64::new(PENDING)).collect());
        Some(index)
    }
}

/// A caller's handle on its call's state: the slot and the generation it was issued in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub index: usize,
    pub generation: u64,
}

/// The waiter's side of a call's state; frees the slot when dropped.
pub struct CallState {
    token: Token,
    /// The table is static and its chunks are never freed.
    slot: &'static AtomicU64,
}

impl CallState {
    /// A pending call, or `None` when every slot is in use (millions of calls waiting at once).
    pub fn new() -> Option<CallState> {
        let index = TABLE.issue()?;
        let slot = TABLE.slot(index)?;
        let mut word = slot.load(Ordering::Acquire);
        if word & STATUS_MASK != PENDING {
            // Only a token made up by hand can touch a slot nobody holds: start it afresh.
            word = ((word >> STATUS_BITS) + 1) << STATUS_BITS;
            slot.store(word, Ordering::Release);
        }
        let generation = word >> STATUS_BITS;
        Some(CallState {
            token: Token { index, generation },
            slot,
        })
    }

    /// What the caller keeps, to cancel with.
    pub fn token(&self) -> Token {
        self.token
    }

    fn word(&self, status: u64) -> u64 {
        (self.token.generation << STATUS_BITS) | status
    }

    /// True if the answer may be sent (pending → sent won); false if the caller cancelled first.
    pub fn claim_sent(&self) -> bool {
        self.slot
            .compare_exchange(
                self.word(PENDING),
                self.word(SENT),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Sends the answer through `send` if the caller still waits for it, and only if `sender` can send
    /// it (the proof that this thread may): the proof is taken before the slot is claimed, so an answer
    /// is never claimed and then dropped. Without a proof nothing is claimed, and the caller's own
    /// timeout answers it. Returns whether `send` ran.
    pub fn answer<P>(&self, sender: Option<P>, send: impl FnOnce(P)) -> bool {
        let Some(proof) = sender else {
            return false;
        };
        if !self.claim_sent() {
            return false;
        }
        send(proof);
        true
    }

    /// True once the caller gave up (its replies need not be built).
    pub fn cancelled(&self) -> bool {
        self.slot.load(Ordering::Relaxed) == self.word(CANCELLED)
    }
}

impl Drop for CallState {
    fn drop(&mut self) {
        // The next generation, pending: a late cancel with this generation now fails ("sent").
        self.slot.store(
            (self.token.generation + 1) << STATUS_BITS,
            Ordering::Release,
        );
        TABLE.free.push(self.token.index);
    }
}

/// Called by a caller that timed out: true when its answer will never be sent, false when it was
/// (or is being) sent. `None` for a token that names no slot.
pub fn cancel(token: Token) -> Option<bool> {
    if token.generation > u64::MAX >> STATUS_BITS {
        return None;
    }
    let slot = TABLE.slot(token.index)?;
    let pending = token.generation << STATUS_BITS;
    let cancelled = pending | CANCELLED;
    Some(
        slot.compare_exchange(pending, cancelled, Ordering::AcqRel, Ordering::Acquire)
            .is_ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_answer_is_never_claimed_and_then_dropped() {
        // No proof that this thread may send: nothing is claimed, so the caller's cancel wins and
        // it answers itself (`:timeout`), rather than waiting for a claimed answer that never comes.
        let state = CallState::new().expect("a slot");
        let mut sent = false;
        assert!(!state.answer(None::<()>, |_| sent = true));
        assert!(!sent);
        assert_eq!(
            cancel(state.token()),
            Some(true),
            "still pending, so cancellable"
        );

        // With a proof, a pending call is claimed and sent.
        let state = CallState::new().expect("a slot");
        assert!(state.answer(Some(()), |()| sent = true));
        assert!(sent);
        assert_eq!(
            cancel(state.token()),
            Some(false),
            "sent: the caller takes it"
        );

        // A cancelled call is not sent.
        let state = CallState::new().expect("a slot");
        assert_eq!(cancel(state.token()), Some(true));
        let mut sent_late = false;
        assert!(!state.answer(Some(()), |()| sent_late = true));
        assert!(!sent_late);
    }

    #[test]
    fn a_sent_answer_cannot_be_cancelled_even_after_its_slot_is_reused() {
        let state = CallState::new().expect("a slot");
        let token = state.token();
        assert!(state.claim_sent());
        assert_eq!(cancel(token), Some(false), "sent, not yet released");
        drop(state);
        assert_eq!(cancel(token), Some(false), "released: still sent");
        // Whoever gets the slot next starts a new generation, untouched by the old token.
        let reused: Vec<CallState> = (0..64).filter_map(|_| CallState::new()).collect();
        assert!(cancel(token) == Some(false));
        for s in &reused {
            assert!(!s.cancelled());
        }
        assert!(reused.iter().all(|s| s.token() != token));
    }

    #[test]
    fn a_cancelled_call_is_never_sent_and_its_slot_comes_back_pending() {
        let state = CallState::new().expect("a slot");
        let token = state.token();
        assert_eq!(cancel(token), Some(true));
        assert!(state.cancelled());
        assert!(!state.claim_sent(), "the caller gave up first");
        assert_eq!(cancel(token), Some(false), "only one cancel wins");
        drop(state);
        let next = CallState::new().expect("a slot");
        assert!(!next.cancelled());
        assert!(next.claim_sent());
    }

    #[test]
    fn a_made_up_token_is_refused_or_harmless() {
        assert_eq!(
            cancel(Token {
                index: CHUNK * CHUNKS + 1,
                generation: 0
            }),
            None
        );
        let state = CallState::new().expect("a slot");
        let too_far = Token {
            generation: u64::MAX,
            ..state.token()
        };
        assert_eq!(cancel(too_far), None, "a generation no slot can hold");
        let wrong = Token {
            generation: state.token().generation + 7,
            ..state.token()
        };
        assert_eq!(cancel(wrong), Some(false));
        assert!(state.claim_sent(), "a wrong generation changes nothing");
    }

    #[test]
    fn cancel_and_send_race_with_exactly_one_winner() {
        for _ in 0..2_000 {
            let state = CallState::new().expect("a slot");
            let token = state.token();
            let sender = std::thread::spawn(move || {
                let sent = state.claim_sent();
                drop(state);
                sent
            });
            let cancelled = cancel(token) == Some(true);
            let sent = sender.join().expect("sender");
            assert!(sent != cancelled, "sent {sent}, cancelled {cancelled}");
        }
    }

    #[test]
    fn slots_are_shared_safely_by_many_threads() {
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut held = Vec::new();
                    for i in 0..5_000 {
                        let state = CallState::new().expect("a slot");
                        assert!(!state.cancelled());
                        if i % 3 == 0 {
                            held.push(state);
                        } else {
                            assert!(state.claim_sent());
                        }
                    }
                    let tokens: std::collections::HashSet<_> =
                        held.iter().map(|s| s.token().index).collect();
                    assert_eq!(tokens.len(), held.len(), "a slot held twice");
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
    }
}
