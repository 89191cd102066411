//! Submitting: encoded commands and their waiters go into the queue under one lock; who writes them
//! (the submitter itself or the writer task) is decided here.

use std::panic::{self, AssertUnwindSafe};
use std::sync::MutexGuard;

use bytes::BytesMut;

use super::{Confirmations, Multiplexer, Pending, State, SubmitError, Waiter};
use crate::conn::direct::{Outgoing, DIRECT_CHUNK};
use crate::conn::Reason;

/// Pre-encoded submissions up to this size are copied into the queue's tail (cheaper than a chunk of
/// their own for the writer); larger ones are queued without a copy.
pub const COPY_MAX: usize = 16 * 1024;

impl<W: Waiter> Multiplexer<W> {
    /// Queues bytes already encoded elsewhere (large submissions, encoded off the lock). Under the
    /// lock, at most [`COPY_MAX`] bytes are copied; a larger submission is queued as a chunk of its own.
    pub fn submit(&self, bytes: BytesMut, waiter: W) -> Result<(), SubmitError<W>> {
        let bytes = bytes.freeze();
        let mut st = self.lock();
        if st.closed.is_some() || st.close_requested.is_some() {
            return Err(SubmitError::Closed(waiter));
        }
        let queued = st.out.len();
        if queued > 0 && queued + bytes.len() > self.shared.max_queued_bytes {
            return Err(SubmitError::Full(waiter));
        }
        if bytes.len() <= COPY_MAX {
            st.out.push_copy(&bytes);
        } else {
            st.out.push_chunk(bytes);
        }
        st.waiters.push_back(Pending::Waiter(waiter));
        let first = queued == 0 && !st.writing;
        self.write_or_wake(st, first, true);
        Ok(())
    }

    /// Ends a submission: writes the queue to the socket now if the writer is idle and it is worth it
    /// (`direct`), and wakes the writer for whatever is left if `first`: the queue was empty and the
    /// writer idle. Otherwise the writer has been woken already, or is writing and takes the queue
    /// when it is done. Whether replies are awaited does not matter: a submission never waits for an
    /// unrelated reply before its bytes go out (on a real network that is a whole round trip). Under
    /// load, submissions made while the woken writer gets going still go out in one write.
    fn write_or_wake(&self, mut st: MutexGuard<'_, State<W>>, first: bool, direct: bool) {
        if direct {
            if let Some(fd) = st.direct_socket() {
                st.out.send_now(fd);
            }
        }
        let wake = first && !st.out.is_empty();
        drop(st);
        if wake {
            self.shared.wake_writer.notify_one();
        }
    }

    /// Queues a command whose replies nobody waits for: a pub/sub command that Redis confirms with
    /// `confirmations` frames (one per channel), which go to the out-of-band sink. Its place in the reply queue
    /// is kept all the same, so that an error Redis sends instead is never taken for a caller's reply.
    /// Not subject to the queue limit: these control commands are few, and dropping one would leave
    /// its subscribers waiting for a confirmation that never comes.
    pub fn submit_unanswered(
        &self,
        bytes: &[u8],
        confirmations: Confirmations,
    ) -> Result<(), SubmitError<()>> {
        let mut st = self.lock();
        if st.closed.is_some() || st.close_requested.is_some() {
            return Err(SubmitError::Closed(()));
        }
        let was_empty = st.out.is_empty();
        st.out.push_copy(bytes);
        st.waiters.push_back(Pending::Unanswered(confirmations));
        drop(st);
        if was_empty {
            self.shared.wake_writer.notify_one();
        }
        Ok(())
    }

    /// Encodes straight into the write queue (small submissions: no allocation, no copy). When the
    /// writer is idle, the encoder may hand large chunks to the socket as it goes
    /// ([`Outgoing::flush_large`]), and the submission is written at once if Redis has nothing else of
    /// this connection's to answer (a lone caller) or if it is large. If `encode` fails, whatever it
    /// queued is removed and nothing is queued; if it fails after writing some of it, the connection
    /// cannot stay in step and is closed.
    pub fn submit_with<E>(
        &self,
        waiter: W,
        encode: impl FnOnce(&mut Outgoing<'_>) -> Result<(), E>,
    ) -> Result<(), SubmitError<W, E>> {
        let mut st = self.lock();
        if st.closed.is_some() || st.close_requested.is_some() {
            return Err(SubmitError::Closed(waiter));
        }
        let queued = st.out.len();
        let before = st.out.tail.len();
        // Mid-encoding writes only on an empty queue: a refusal for size below must be able to take
        // every byte back, and nothing queued may be overtaken.
        let socket = if queued == 0 {
            st.direct_socket()
        } else {
            None
        };
        let idle = st.waiters.is_empty();
        let mut outgoing = Outgoing::new(&mut st.out.tail, socket);
        // A panicking encoder is undone like a failing one before the panic goes on: its partial bytes
        // must not stay queued (or, written, leave the connection open out of step).
        let encoded = panic::catch_unwind(AssertUnwindSafe(|| encode(&mut outgoing)));
        let (flushed, direct) = (outgoing.flushed(), outgoing.direct());
        let failed = match encoded {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Ok(e)),
            Err(panicked) => Some(Err(panicked)),
        };
        if let Some(failure) = failed {
            if flushed {
                // Part of it reached Redis: nothing more may (its caller is told it failed), and the
                // replies can no longer be matched. Closed before the lock is let go, so that no other
                // caller queues a waiter that would be handed the partial submission's replies.
                st.out.clear();
                self.close_locked(st, Reason::PartialSubmission);
            } else {
                st.out.tail.truncate(before);
                drop(st);
            }
            return match failure {
                Ok(e) => Err(SubmitError::Encode(waiter, e)),
                Err(panicked) => panic::resume_unwind(panicked),
            };
        }
        if queued > 0 && st.out.len() > self.shared.max_queued_bytes {
            st.out.tail.truncate(before);
            return Err(SubmitError::Full(waiter));
        }
        st.waiters.push_back(Pending::Waiter(waiter));
        // A lone caller (the last read answered one caller, and none waits now) writes at once: nobody
        // else will add to this write. Under load, the writer is woken instead, and takes whatever was
        // submitted by the time it runs.
        let lone = idle && st.last_batch <= 1;
        let write_now = direct && (flushed || lone || st.out.len() >= DIRECT_CHUNK);
        let first = queued == 0 && !st.writing;
        self.write_or_wake(st, first, write_now);
        Ok(())
    }
}
