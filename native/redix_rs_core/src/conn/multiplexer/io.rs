//! Serving a connection: the writer loop, the reader loop that hands replies to waiters in order,
//! and the end of a connection, which fails every waiter still queued exactly once.

use std::os::fd::{AsRawFd, RawFd};

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Confirmations, Current, Multiplexer, Pending, Taken, Waiter, KEEP_BUFFER, READ_CHUNK};
use crate::conn::out_of_band::{self, Classified, OutOfBand};
use crate::conn::{Reason, Stream};
use crate::pubsub::Event;
use crate::resp::{Frame, Parsed, Parser};

impl<W: Waiter> Multiplexer<W> {
    /// Serves the connection until the socket fails or `close` is called; returns why it ended.
    /// Every waiter still queued is failed with that reason before this returns.
    pub async fn run(&self, stream: Stream, leftover: BytesMut) -> Reason {
        let mut current: Current<W> = None;
        let reason = match stream {
            Stream::Tcp(mut s) => {
                let _direct = DirectWrites::allow(self, s.as_raw_fd());
                let (r, w) = s.split();
                self.drive(r, w, leftover, &mut current).await
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                match self.drive(r, w, leftover, &mut current).await {
                    // The end of a TLS stream, with or without close_notify: `:ssl`'s name for it.
                    Reason::TcpClosed => Reason::SslClosed,
                    reason => reason,
                }
            }
            Stream::Unix(mut s) => {
                let _direct = DirectWrites::allow(self, s.as_raw_fd());
                let (r, w) = s.split();
                self.drive(r, w, leftover, &mut current).await
            }
        };
        self.fail_all(current, &reason);
        reason
    }

    async fn drive<R, Wr>(&self, r: R, w: Wr, buf: BytesMut, current: &mut Current<W>) -> Reason
    where
        R: AsyncRead + Unpin,
        Wr: AsyncWrite + Unpin,
    {
        tokio::select! {
            reason = self.read_loop(r, buf, current) => reason,
            reason = self.write_loop(w) => reason,
            reason = self.closed_by_owner() => reason,
        }
    }

    /// Resolves once `close` has been called (with its reason): also used to abandon a connection
    /// attempt whose owner has gone.
    pub async fn closed_by_owner(&self) -> Reason {
        loop {
            if let Some(reason) = self.lock().close_requested.clone() {
                return reason;
            }
            self.shared.wake_closer.notified().await;
        }
    }

    async fn write_loop<Wr: AsyncWrite + Unpin>(&self, mut w: Wr) -> Reason {
        let mut chunks: VecDeque<Bytes> = VecDeque::new();
        let mut tail = BytesMut::with_capacity(READ_CHUNK);
        loop {
            {
                let mut st = self.lock();
                st.out.take(&mut chunks, &mut tail);
                st.writing = !chunks.is_empty() || !tail.is_empty();
            }
            if chunks.is_empty() && tail.is_empty() {
                self.shared.wake_writer.notified().await;
                continue;
            }
            if let Err(e) = write_all_vectored(&mut w, &mut chunks, &mut tail).await {
                return Reason::from_io(&e);
            }
            tail.clear();
            if tail.capacity() > KEEP_BUFFER {
                tail = BytesMut::with_capacity(READ_CHUNK);
            }
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        mut r: R,
        mut buf: BytesMut,
        current: &mut Current<W>,
    ) -> Reason {
        let limits = self.lock().limits;
        let mut parser = Parser::new(limits);
        let mut done: Vec<W> = Vec::new();
        loop {
            let parsed = self.dispatch_available(&mut parser, &mut buf, current, &mut done);
            // Completions go out per read, not per frame, and always before an error ends the loop, so a
            // waiter already answered is never failed as well.
            let answered = done.len();
            done.drain(..).for_each(Waiter::complete);
            if let Err(reason) = parsed {
                return reason;
            }
            self.after_read(answered);
            let want = read_ahead(parser.pending_bulk_remaining(&buf), buf.len());
            buf.reserve(want);
            trim_read_buffer(&mut buf, want);
            match r.read_buf(&mut buf).await {
                Ok(0) => return Reason::TcpClosed,
                Ok(_) => {}
                Err(e) => return Reason::from_io(&e),
            }
        }
    }

    /// After a read that answered `answered` callers: remembered, to tell a lone caller (who writes
    /// its command itself) from callers under load. A submission wakes the writer itself when it
    /// needs to; should one ever leave bytes queued with the writer idle, they go out now rather
    /// than never (a wake-up of this same task, not of another thread).
    fn after_read(&self, answered: usize) {
        let queued = {
            let mut st = self.lock();
            st.last_batch = answered;
            !st.writing && !st.out.is_empty()
        };
        if queued {
            self.shared.wake_writer.notify_one();
        }
    }

    /// Parses every complete frame in `buf` and dispatches it.
    fn dispatch_available(
        &self,
        parser: &mut Parser,
        buf: &mut BytesMut,
        current: &mut Current<W>,
        done: &mut Vec<W>,
    ) -> Result<(), Reason> {
        loop {
            match parser.parse(buf) {
                Ok(Parsed::Complete(frame)) => self.dispatch(frame, current, done)?,
                Ok(Parsed::Incomplete) => return Ok(()),
                Err(e) => {
                    // A push past a limit is nobody's reply: then every caller just gets the
                    // connection's reason. (A RESP2 pub/sub message past one, on a subscribed
                    // connection, cannot be told from a reply before it is parsed: the head caller,
                    // a `ping`, is told the limit.)
                    let push = parser.top_level_tag() == Some(b'>');
                    if let (Some(limit), false) = (e.limit(), push) {
                        self.fail_head(current, &Reason::ReplyLimit(limit));
                    }
                    return Err(Reason::Protocol(e.to_string()));
                }
            }
        }
    }

    /// Gives `frame` to the out-of-band sink or to the waiter at the head of the queue.
    fn dispatch(
        &self,
        frame: Frame,
        current: &mut Current<W>,
        done: &mut Vec<W>,
    ) -> Result<(), Reason> {
        if let Some(classified) = out_of_band::classify(&frame, self.shared.mode) {
            return self.out_of_band(classified);
        }
        let mut waiter = match current.take() {
            Some(w) => w,
            None => {
                // Taken out of the lock first: the sink hears of a rejection with no lock held.
                let head = self.lock().waiters.pop_front();
                match head {
                    Some(Pending::Waiter(w)) => w,
                    Some(Pending::Unanswered(refused)) if frame.is_error() => {
                        self.refused(&frame, &refused);
                        return Ok(());
                    }
                    _ => return Err(Reason::UnexpectedReply),
                }
            }
        };
        if matches!(&frame, Frame::Error(msg) if msg.starts_with(b"READONLY")) {
            self.shared.readonly_reply.notify_one();
        }
        if waiter.reply(frame) {
            done.push(waiter);
        } else {
            *current = Some(waiter);
        }
        Ok(())
    }

    /// Fails the caller whose reply was being read (the one mid-reply, or the next in line) with
    /// `reason`, ahead of everyone else's `fail`.
    fn fail_head(&self, current: &mut Current<W>, reason: &Reason) {
        let head = current.take().or_else(|| {
            let mut st = self.lock();
            match st.waiters.front() {
                Some(Pending::Waiter(_)) => match st.waiters.pop_front() {
                    Some(Pending::Waiter(w)) => Some(w),
                    _ => None,
                },
                _ => None,
            }
        });
        if let Some(waiter) = head {
            waiter.fail(reason);
        }
    }

    /// Hands an out-of-band frame to the sink, telling a confirmation of this connection's command
    /// from a subscription Redis ended on its own.
    fn out_of_band(&self, classified: Classified) -> Result<(), Reason> {
        let item = match classified {
            Classified::Message(event) => OutOfBand::Message(event),
            Classified::Invalidation(keys) => OutOfBand::Invalidation(keys),
            Classified::Subscription(event) if self.confirmed(&event)? => {
                OutOfBand::Confirmation(event)
            }
            Classified::Subscription(event) => OutOfBand::Ended(event),
            Classified::Other => return Ok(()),
        };
        match &self.shared.sink {
            Some(sink) if sink.take(item) == Taken::Overloaded => Err(Reason::PubsubBacklog),
            _ => Ok(()),
        }
    }

    /// Counts `event` against the unanswered command at the head of the queue if it confirms it.
    /// An unsubscription that confirms nothing was Redis's own doing (`false`); a subscription that
    /// confirms nothing means replies and commands are out of step.
    fn confirmed(&self, event: &Event) -> Result<bool, Reason> {
        let mut st = self.lock();
        let counted = match st.waiters.front_mut() {
            Some(Pending::Unanswered(expected)) => expected.take(event).then(|| expected.done()),
            _ => None,
        };
        match counted {
            Some(done) => {
                if done {
                    st.waiters.pop_front();
                }
                Ok(true)
            }
            None if matches!(event, Event::Unsubscribed { .. }) => Ok(false),
            None => Err(Reason::UnexpectedReply),
        }
    }

    fn refused(&self, error: &Frame, refused: &Confirmations) {
        if let Some(sink) = &self.shared.sink {
            sink.refused(error, refused);
        }
    }

    /// Marks the connection closed and fails every waiter, the one mid-reply first (it was oldest).
    pub(super) fn fail_all(&self, current: Current<W>, reason: &Reason) {
        let waiters = {
            let mut st = self.lock();
            st.socket = None;
            st.closed = Some(reason.clone());
            st.out.clear();
            std::mem::take(&mut st.waiters)
        };
        let queued = waiters.into_iter().filter_map(|p| match p {
            Pending::Waiter(w) => Some(w),
            Pending::Unanswered(_) => None,
        });
        current
            .into_iter()
            .chain(queued)
            .for_each(|w| w.fail(reason));
        if let Some(sink) = &self.shared.sink {
            sink.closed(reason);
        }
    }
}

/// Room reserved ahead of the data for a bulk whose header declared more: a peer that declares
/// 512 MiB and sends nothing costs this, not 512 MiB. Values up to this size are still read into
/// one buffer reserved once (512 KiB measured: 1 MiB GETs ~35% slower, from the second reservation
/// and its copy and page faults).
const RESERVE_AHEAD: usize = 4 * 1024 * 1024;

/// How much room to reserve before the next read: a chunk, or, while a large bulk is arriving, as much
/// again as the buffer holds (geometric growth, so a large value is moved a bounded number of times),
/// at least [`RESERVE_AHEAD`], never more than the bulk still needs.
fn read_ahead(bulk_remaining: Option<usize>, held: usize) -> usize {
    match bulk_remaining {
        Some(remaining) => remaining.min(held.max(RESERVE_AHEAD)).max(READ_CHUNK),
        None => READ_CHUNK,
    }
}

/// At most this many chunks go into one vectored write (Linux's `IOV_MAX` is 1024).
const MAX_IOV: usize = 64;

/// Writes `chunks` (front first), then `tail`, with as few system calls as the socket allows. The
/// common case, a tail alone, is one plain write.
async fn write_all_vectored<Wr: AsyncWrite + Unpin>(
    w: &mut Wr,
    chunks: &mut VecDeque<Bytes>,
    tail: &mut BytesMut,
) -> std::io::Result<()> {
    while !chunks.is_empty() {
        let written = {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_IOV.min(chunks.len() + 1));
            slices.extend(chunks.iter().take(MAX_IOV - 1).map(|c| IoSlice::new(c)));
            if chunks.len() < MAX_IOV && !tail.is_empty() {
                slices.push(IoSlice::new(tail));
            }
            w.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let rest = advance_chunks(chunks, written);
        tail.advance(rest);
    }
    w.write_all(tail).await
}

/// Drops `n` written bytes from the front of `chunks`; returns how many of them lay beyond the
/// chunks (in the tail).
fn advance_chunks(chunks: &mut VecDeque<Bytes>, mut n: usize) -> usize {
    while n > 0 {
        let Some(front) = chunks.front_mut() else {
            return n;
        };
        if n < front.len() {
            front.advance(n);
            return 0;
        }
        n -= front.len();
        chunks.pop_front();
    }
    0
}

/// Replaces a read buffer that an earlier large reply grew past [`KEEP_BUFFER`] with a fresh one, once
/// it holds little and no large reply is pending (`want` is what the next read needs room for): one
/// 100 MiB value must not keep 100 MiB allocated for the rest of the connection's life.
fn trim_read_buffer(buf: &mut BytesMut, want: usize) {
    if buf.capacity() > KEEP_BUFFER && buf.len() <= READ_CHUNK && want <= READ_CHUNK {
        let mut fresh = BytesMut::with_capacity(buf.len() + want);
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

/// Lets submitters write to the socket while it is open: dropped (before the socket closes) when the
/// connection stops running, so no submitter ever writes to a closed, or reused, descriptor.
struct DirectWrites<'a, W: Waiter> {
    mux: &'a Multiplexer<W>,
}

impl<'a, W: Waiter> DirectWrites<'a, W> {
    fn allow(mux: &'a Multiplexer<W>, fd: RawFd) -> Self {
        mux.lock().socket = Some(fd);
        DirectWrites { mux }
    }
}

impl<W: Waiter> Drop for DirectWrites<'_, W> {
    fn drop(&mut self) {
        self.mux.lock().socket = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LARGE: usize = 16 * 1024 * 1024;

    #[test]
    fn a_read_buffer_grown_for_a_large_reply_is_given_back() {
        let mut buf = BytesMut::with_capacity(LARGE);
        buf.extend_from_slice(b"+OK\r\n:1");
        trim_read_buffer(&mut buf, READ_CHUNK);
        assert!(
            buf.capacity() < 2 * READ_CHUNK,
            "capacity {}",
            buf.capacity()
        );
        assert_eq!(&buf[..], b"+OK\r\n:1", "what it held is kept");
    }

    #[test]
    fn not_while_a_large_reply_is_pending_or_held() {
        let mut pending = BytesMut::with_capacity(LARGE);
        pending.extend_from_slice(b"$10000000\r\n");
        trim_read_buffer(&mut pending, 10_000_000);
        assert!(pending.capacity() >= LARGE - 16);

        let mut holding = BytesMut::with_capacity(LARGE);
        holding.resize(READ_CHUNK + 1, b'x');
        trim_read_buffer(&mut holding, READ_CHUNK);
        assert!(holding.capacity() >= LARGE - 16);
    }

    #[test]
    fn room_is_reserved_as_the_data_arrives() {
        assert_eq!(read_ahead(None, 0), READ_CHUNK);
        assert_eq!(read_ahead(Some(10), 0), READ_CHUNK);
        // A 512 MiB header with nothing behind it: no more than RESERVE_AHEAD.
        assert_eq!(read_ahead(Some(512 << 20), 20), RESERVE_AHEAD);
        // Once data has arrived, as much again, up to what the bulk still needs.
        assert_eq!(read_ahead(Some(512 << 20), 8 << 20), 8 << 20);
        assert_eq!(read_ahead(Some(3 << 20), 8 << 20), 3 << 20);
    }

    #[test]
    fn advancing_past_the_chunks_reaches_into_the_tail() {
        let mut chunks: VecDeque<Bytes> =
            [Bytes::from_static(b"abc"), Bytes::from_static(b"de")].into();
        assert_eq!(advance_chunks(&mut chunks, 2), 0);
        assert_eq!(
            chunks,
            [Bytes::from_static(b"c"), Bytes::from_static(b"de")]
        );
        assert_eq!(advance_chunks(&mut chunks, 3), 0);
        assert!(chunks.is_empty());
        let mut chunks: VecDeque<Bytes> = [Bytes::from_static(b"abc")].into();
        assert_eq!(
            advance_chunks(&mut chunks, 7),
            4,
            "4 bytes of the tail were written"
        );
    }

    #[tokio::test]
    async fn vectored_writes_keep_wire_order() {
        let chunks: Vec<Bytes> = (0..200u8)
            .map(|i| Bytes::from(vec![i; 1000 + i as usize]))
            .collect();
        let mut expected: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        expected.extend_from_slice(b"tail");
        let mut queue: VecDeque<Bytes> = chunks.into();
        let mut tail = BytesMut::from(&b"tail"[..]);
        // A writer that takes at most 777 bytes per call, splitting chunks anywhere.
        let (client, mut server) = tokio::io::duplex(777);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut client = client;
        write_all_vectored(&mut client, &mut queue, &mut tail)
            .await
            .unwrap();
        drop(client);
        assert_eq!(reader.await.unwrap(), expected);
    }

    #[test]
    fn a_buffer_of_ordinary_size_is_left_alone() {
        let mut buf = BytesMut::with_capacity(KEEP_BUFFER);
        buf.extend_from_slice(b"+OK\r\n");
        let before = buf.as_ptr();
        trim_read_buffer(&mut buf, READ_CHUNK);
        assert_eq!(buf.as_ptr(), before);
    }
}
