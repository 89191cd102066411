//! Writes from the submitting thread: when the writer task is idle, a submission is handed to the socket
//! at once with one non-blocking `send`, instead of waking the writer (a cross-thread wake-up and a
//! context switch per command for a lone caller), and a large pipeline starts reaching Redis while the
//! rest of it is still being encoded. Whatever the socket does not take at once is left to the writer.

use std::os::fd::RawFd;

use bytes::{Buf, BytesMut};

/// Below this, a submission waits for the end of its encoding before being written.
pub(crate) const DIRECT_CHUNK: usize = 16 * 1024;

/// A streamed pipeline's first chunk is smaller: Redis starts executing sooner, and the rest of the
/// encoding overlaps with its work (one more system call per pipeline).
pub(crate) const FIRST_CHUNK: usize = 4 * 1024;

/// At most this much is written per submission by the submitting thread, which holds the queue's lock
/// meanwhile: the rest of a large value goes through the writer task, off the lock.
pub(crate) const DIRECT_MAX: usize = 256 * 1024;

/// Writes as much of `buf` (up to [`DIRECT_MAX`]) as the socket takes without waiting, and removes it
/// from `buf`. Returns false when the socket took less than everything (full, or failing: the writer
/// task then reports why), or the cap was reached.
pub(crate) fn send_now(fd: RawFd, buf: &mut BytesMut) -> bool {
    let mut budget = DIRECT_MAX;
    send_within(fd, buf, &mut budget)
}

/// [`send_now`] for any contiguous buffer (`BytesMut` or a queued `Bytes` chunk), within a `budget`
/// of bytes shared by the calls of one submission, which it reduces by what it sent.
pub(crate) fn send_within<B: Buf>(fd: RawFd, buf: &mut B, budget: &mut usize) -> bool {
    while buf.has_remaining() {
        if *budget == 0 {
            return false;
        }
        let chunk = buf.chunk();
        // SAFETY: `chunk` is valid for `chunk.len()` bytes; `fd` is the connection's socket, which stays open
        // while the multiplexer's lock (held by every caller of this function) says it is usable.
        let n = unsafe {
            libc::send(
                fd,
                chunk.as_ptr().cast(),
                chunk.len().min(*budget),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n <= 0 {
            return false; // would block, interrupted or failed
        }
        buf.advance(n as usize);
        *budget -= n as usize;
    }
    true
}

/// The write queue as an encoder sees it: the buffer to encode into, and the socket to hand it to when
/// the writer task is idle.
pub struct Outgoing<'a> {
    buf: &'a mut BytesMut,
    fd: Option<RawFd>,
    flushed: bool,
}

impl<'a> Outgoing<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut, fd: Option<RawFd>) -> Self {
        Outgoing {
            buf,
            fd,
            flushed: false,
        }
    }

    /// A buffer that is not a connection's queue (encoding off the lock): flushing does nothing.
    pub fn detached(buf: &'a mut BytesMut) -> Self {
        Outgoing::new(buf, None)
    }

    /// The queue's buffer, to encode into.
    pub fn buf(&mut self) -> &mut BytesMut {
        self.buf
    }

    /// Writes the buffer to the socket if it holds a chunk worth a system call and the writer is idle
    /// (each call writes at most [`DIRECT_MAX`], and a refusal ends direct writes for this submission).
    /// Call it only where the submission can no longer fail: what is written cannot be taken back.
    pub fn flush_large(&mut self) {
        let chunk = if self.flushed {
            DIRECT_CHUNK
        } else {
            FIRST_CHUNK
        };
        if self.buf.len() >= chunk {
            self.flush();
        }
    }

    /// Writes whatever the socket takes now; once it refuses, the writer task takes over.
    pub(crate) fn flush(&mut self) {
        if let Some(fd) = self.fd {
            let before = self.buf.len();
            if !send_now(fd, self.buf) {
                self.fd = None;
            }
            self.flushed |= self.buf.len() < before;
        }
    }

    /// True if some of this submission already went to the socket.
    pub(crate) fn flushed(&self) -> bool {
        self.flushed
    }

    /// True while the socket may still be written directly.
    pub(crate) fn direct(&self) -> bool {
        self.fd.is_some()
    }
}
