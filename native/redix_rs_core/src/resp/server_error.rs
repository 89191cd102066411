//! Error replies typed by their first word (`MOVED`, `ASK`, `WRONGTYPE`, ...), so that redirects and
//! retries are decided by matching a type, never by comparing strings at each use.
//!
//! Elixir still sees the whole message (`%RedixRs.Error{message: "MOVED 3999 127.0.0.1:6381"}`); the
//! type is for the core's own decisions (Cluster routing, handshake failures).

use bytes::Bytes;

use super::Frame;

/// What an error reply is, by its first word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerErrorKind {
    /// `MOVED <slot> <host:port>`: the slot lives on another node, for good.
    Moved { slot: u16, address: Bytes },
    /// `ASK <slot> <host:port>`: this one command goes to another node, after `ASKING`.
    Ask { slot: u16, address: Bytes },
    /// `TRYAGAIN`: a multi-key command during resharding; the same command may be sent again.
    TryAgain,
    /// `CLUSTERDOWN`: the cluster cannot serve the slot now.
    ClusterDown,
    /// `CROSSSLOT`: a multi-key command over keys in different slots.
    CrossSlot,
    /// `LOADING`: the server is loading its dataset.
    Loading,
    /// `BUSY`: a script or function is running.
    Busy,
    /// `NOSCRIPT`: `EVALSHA` of an unknown script.
    NoScript,
    /// `READONLY`: a write sent to a replica.
    ReadOnly,
    /// `MASTERDOWN`: a replica whose link to its primary is down.
    MasterDown,
    /// `WRONGTYPE`: the key holds another kind of value.
    WrongType,
    /// `NOAUTH`: authentication required.
    NoAuth,
    /// `WRONGPASS`: bad credentials.
    WrongPass,
    /// `NOPERM`: the ACL user may not run this.
    NoPerm,
    /// `OOM`: the server is out of memory (`maxmemory`).
    OutOfMemory,
    /// `EXECABORT`: a transaction discarded because a command in it was refused.
    ExecAbort,
    /// `ERR` and any other first word.
    Other,
}

/// An error reply: its kind and its whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub kind: ServerErrorKind,
    pub message: Bytes,
}

impl ServerError {
    /// Types the message of an error reply (the text after `-`, or a bulk error's bytes).
    pub fn parse(message: &Bytes) -> ServerError {
        let mut words = message.split(|b| *b == b' ');
        let first = words.next().unwrap_or_default();
        let kind = match first {
            b"MOVED" | b"ASK" => redirect(first, words.next(), words.next(), message),
            b"TRYAGAIN" => ServerErrorKind::TryAgain,
            b"CLUSTERDOWN" => ServerErrorKind::ClusterDown,
            b"CROSSSLOT" => ServerErrorKind::CrossSlot,
            b"LOADING" => ServerErrorKind::Loading,
            b"BUSY" => ServerErrorKind::Busy,
            b"NOSCRIPT" => ServerErrorKind::NoScript,
            b"READONLY" => ServerErrorKind::ReadOnly,
            b"MASTERDOWN" => ServerErrorKind::MasterDown,
            b"WRONGTYPE" => ServerErrorKind::WrongType,
            b"NOAUTH" => ServerErrorKind::NoAuth,
            b"WRONGPASS" => ServerErrorKind::WrongPass,
            b"NOPERM" => ServerErrorKind::NoPerm,
            b"OOM" => ServerErrorKind::OutOfMemory,
            b"EXECABORT" => ServerErrorKind::ExecAbort,
            _ => ServerErrorKind::Other,
        };
        ServerError {
            kind,
            message: message.clone(),
        }
    }
}

/// `MOVED`/`ASK` with a valid slot and an address; anything malformed is `Other` (never followed).
fn redirect(
    word: &[u8],
    slot: Option<&[u8]>,
    address: Option<&[u8]>,
    message: &Bytes,
) -> ServerErrorKind {
    let slot = slot
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|slot| *slot < 16384);
    let (Some(slot), Some(address)) = (slot, address.filter(|a| !a.is_empty())) else {
        return ServerErrorKind::Other;
    };
    // A slice of the message, not a copy.
    let start = address.as_ptr() as usize - message.as_ptr() as usize;
    let address = message.slice(start..start + address.len());
    if word == b"MOVED" {
        ServerErrorKind::Moved { slot, address }
    } else {
        ServerErrorKind::Ask { slot, address }
    }
}

impl Frame {
    /// The typed error of an error reply (`-` or `!`); `None` for any other frame.
    pub fn server_error(&self) -> Option<ServerError> {
        match self {
            Frame::Error(message) | Frame::BulkError(message) => Some(ServerError::parse(message)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(message: &str) -> ServerErrorKind {
        ServerError::parse(&Bytes::copy_from_slice(message.as_bytes())).kind
    }

    #[test]
    fn redirects_carry_slot_and_address() {
        assert_eq!(
            kind("MOVED 3999 127.0.0.1:6381"),
            ServerErrorKind::Moved {
                slot: 3999,
                address: Bytes::from_static(b"127.0.0.1:6381")
            }
        );
        assert_eq!(
            kind("ASK 0 :7000"),
            ServerErrorKind::Ask {
                slot: 0,
                address: Bytes::from_static(b":7000")
            }
        );
    }

    #[test]
    fn malformed_redirects_are_not_followed() {
        for message in [
            "MOVED",
            "MOVED 3999",
            "MOVED x 1.2.3.4:1",
            "MOVED 16384 1.2.3.4:1",
            "MOVED -1 a:1",
            "ASK 12 ",
        ] {
            assert_eq!(kind(message), ServerErrorKind::Other, "{message}");
        }
    }

    #[test]
    fn first_words() {
        assert_eq!(
            kind("TRYAGAIN Multiple keys request"),
            ServerErrorKind::TryAgain
        );
        assert_eq!(
            kind("CLUSTERDOWN The cluster is down"),
            ServerErrorKind::ClusterDown
        );
        assert_eq!(
            kind("CROSSSLOT Keys in request"),
            ServerErrorKind::CrossSlot
        );
        assert_eq!(kind("LOADING Redis is loading"), ServerErrorKind::Loading);
        assert_eq!(
            kind("NOSCRIPT No matching script"),
            ServerErrorKind::NoScript
        );
        assert_eq!(kind("READONLY You can't write"), ServerErrorKind::ReadOnly);
        assert_eq!(
            kind("WRONGTYPE Operation against"),
            ServerErrorKind::WrongType
        );
        assert_eq!(
            kind("NOAUTH Authentication required."),
            ServerErrorKind::NoAuth
        );
        assert_eq!(
            kind("WRONGPASS invalid username"),
            ServerErrorKind::WrongPass
        );
        assert_eq!(
            kind("NOPERM User has no permissions"),
            ServerErrorKind::NoPerm
        );
        assert_eq!(
            kind("OOM command not allowed"),
            ServerErrorKind::OutOfMemory
        );
        assert_eq!(
            kind("EXECABORT Transaction discarded"),
            ServerErrorKind::ExecAbort
        );
        assert_eq!(kind("BUSY Redis is busy"), ServerErrorKind::Busy);
        assert_eq!(kind("MASTERDOWN Link down"), ServerErrorKind::MasterDown);
        assert_eq!(kind("ERR unknown command"), ServerErrorKind::Other);
        assert_eq!(kind("moved 1 a:1"), ServerErrorKind::Other, "case matters");
        assert_eq!(kind(""), ServerErrorKind::Other);
    }

    #[test]
    fn only_error_frames_have_one() {
        let moved = Frame::Error(Bytes::from_static(b"MOVED 1 h:1"));
        assert!(matches!(
            moved.server_error().map(|e| e.kind),
            Some(ServerErrorKind::Moved { slot: 1, .. })
        ));
        let bulk = Frame::BulkError(Bytes::from_static(b"WRONGTYPE x"));
        assert_eq!(
            bulk.server_error().unwrap().kind,
            ServerErrorKind::WrongType
        );
        assert_eq!(
            Frame::Simple(Bytes::from_static(b"MOVED 1 h:1")).server_error(),
            None
        );
    }
}
