//! The commands sent before a connection is shared: AUTH, SELECT, CLIENT SETNAME, or, for RESP3,
//! HELLO 3 with AUTH and SETNAME folded in, then SELECT; then READONLY when asked for; then, for a
//! client-side cache, COMMAND and CLIENT TRACKING.
//!
//! They run one at a time (as in Redix) so that the first error is the one reported and so that the
//! Redis < 6 fallback (AUTH with a username is a wrong-arity error there) can retry without it.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ConnectError, ConnectOptions, Protocol};
use crate::cache::ClientCache;
use crate::resp::{encode_command, Frame, Limits, Parsed, Parser};

const OLD_AUTH_ERROR: &[u8] = b"ERR wrong number of arguments for 'auth' command";

/// Runs the handshake on `stream`; returns bytes read past the last reply.
pub async fn handshake<S>(stream: &mut S, opts: &ConnectOptions) -> Result<BytesMut, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = Exchange::new(stream, BytesMut::with_capacity(4096));
    match opts.protocol {
        Protocol::Resp3 => io.hello3(opts).await?,
        Protocol::Resp2 => {
            if let Some(password) = &opts.password {
                io.auth(opts.username.as_deref(), password).await?;
            }
        }
    }
    if let Some(db) = &opts.database {
        io.expect_ok(&[b"SELECT".as_slice(), db]).await?;
    }
    if let (Some(name), Protocol::Resp2) = (&opts.client_name, opts.protocol) {
        io.expect_ok(&[b"CLIENT".as_slice(), b"SETNAME", name])
            .await?;
    }
    // Last, as in Redix: an error (a server without cluster support says "ERR This instance has
    // cluster support disabled") is fatal like one to AUTH or SELECT.
    if opts.readonly {
        io.expect_ok(&[b"READONLY".as_slice()]).await?;
    }
    // Tracking last: once it is on, in BCAST mode, invalidations may arrive between replies.
    if let Some(tracking) = &opts.tracking {
        io.track(&tracking.0).await?;
    }
    Ok(io.into_leftover())
}

/// One request/reply at a time over a stream that is not multiplexed yet.
pub(crate) struct Exchange<'a, S> {
    stream: &'a mut S,
    buf: BytesMut,
    parser: Parser,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Exchange<'a, S> {
    /// An exchange over `stream`, with `buf` holding bytes already read from it.
    pub(crate) fn new(stream: &'a mut S, buf: BytesMut) -> Self {
        Exchange {
            stream,
            buf,
            parser: Parser::new(Limits::default()),
        }
    }

    /// The bytes read past the last reply.
    pub(crate) fn into_leftover(self) -> BytesMut {
        self.buf
    }

    pub(crate) async fn auth(
        &mut self,
        username: Option<&[u8]>,
        password: &[u8],
    ) -> Result<(), ConnectError> {
        let Some(user) = username else {
            return self.expect_ok(&[b"AUTH".as_slice(), password]).await;
        };
        match self.request(&[b"AUTH".as_slice(), user, password]).await? {
            Frame::Error(msg) if msg.as_ref() == OLD_AUTH_ERROR => {
                self.expect_ok(&[b"AUTH".as_slice(), password]).await
            }
            reply => ok_or_error(reply),
        }
    }

    /// `HELLO 3 [AUTH user pass] [SETNAME name]`; a password alone authenticates the `default` user.
    async fn hello3(&mut self, opts: &ConnectOptions) -> Result<(), ConnectError> {
        let mut args: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &opts.password {
            let user = opts.username.as_deref().unwrap_or(b"default");
            args.extend([b"AUTH".as_slice(), user, password]);
        }
        if let Some(name) = &opts.client_name {
            args.extend([b"SETNAME".as_slice(), name]);
        }
        match self.request(&args).await? {
            Frame::Error(msg) | Frame::BulkError(msg) if msg.starts_with(b"ERR unknown command") => {
                Err(ConnectError::Redis(format!(
                    "protocol: :resp3 needs a server that knows HELLO (Redis 6 or later); the server said: {}",
                    String::from_utf8_lossy(&msg)
                )))
            }
            reply => ok_or_error(reply),
        }
    }

    /// For a client-side cache: `COMMAND` (what may be cached), then `CLIENT TRACKING on ...`; the
    /// cache is flushed once tracking is on.
    async fn track(&mut self, cache: &ClientCache) -> Result<(), ConnectError> {
        let commands = self.request(&[b"COMMAND".as_slice()]).await?;
        cache
            .learn_commands(&commands)
            .map_err(|e| ConnectError::Redis(format!("client_cache needs COMMAND: {e}")))?;
        let tracking = cache.tracking_command();
        let args: Vec<&[u8]> = tracking.iter().map(|a| &a[..]).collect();
        self.expect_ok(&args).await?;
        cache.tracking_on();
        Ok(())
    }

    async fn expect_ok(&mut self, args: &[&[u8]]) -> Result<(), ConnectError> {
        let reply = self.request(args).await?;
        ok_or_error(reply)
    }

    pub(crate) async fn request(&mut self, args: &[&[u8]]) -> Result<Frame, ConnectError> {
        let mut out = BytesMut::new();
        encode_command(args, &mut out);
        self.stream.write_all(&out).await?;
        loop {
            if let Parsed::Complete(frame) = self.parser.parse(&mut self.buf)? {
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnectError::Closed);
            }
        }
    }
}

/// Any error reply is fatal; any other reply counts as success (servers differ on +OK details).
fn ok_or_error(reply: Frame) -> Result<(), ConnectError> {
    match reply {
        Frame::Error(msg) | Frame::BulkError(msg) => Err(ConnectError::Redis(
            String::from_utf8_lossy(&msg).into_owned(),
        )),
        _ => Ok(()),
    }
}
