//! What a submission is, as policy with no terms in it: its kind (a pipeline, a `noreply_pipeline`, a
//! `transaction_pipeline`) and the commands that wrap it, how many replies its caller waits for, and
//! which commands a plain connection refuses to send. The NIF crate decodes terms and encodes; the
//! decisions are made here, where they can be tested.

/// A submission's kind: its commands alone, or wrapped by the commands that make it a
/// `noreply_pipeline` (`CLIENT REPLY OFF` … `ON`) or a `transaction_pipeline` (`MULTI` … `EXEC`). The
/// wrappers are written by the encoder, so the check that refuses a user's `CLIENT REPLY` never sees
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionKind {
    Pipeline,
    NoReply,
    Transaction,
}

const REPLY_OFF: &[u8] = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n";
const REPLY_ON: &[u8] = b"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n";
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

impl SubmissionKind {
    /// The encoded commands written before and after the user's.
    pub fn wrappers(self) -> (&'static [u8], &'static [u8]) {
        match self {
            SubmissionKind::Pipeline => (b"", b""),
            SubmissionKind::NoReply => (REPLY_OFF, REPLY_ON),
            SubmissionKind::Transaction => (MULTI, EXEC),
        }
    }

    /// The replies the caller of a submission of `commands` commands waits for.
    pub fn expect(self, commands: usize) -> Expect {
        match self {
            SubmissionKind::Pipeline => Expect::Replies(commands),
            SubmissionKind::NoReply => Expect::NoReply { commands },
            SubmissionKind::Transaction => Expect::Replies(commands + 2),
        }
    }
}

/// The replies a caller waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Exactly this many.
    Replies(usize),
    /// `CLIENT REPLY OFF` … `ON` around `commands` commands: one reply (the `OK` of `ON`), unless Redis
    /// refuses `CLIENT REPLY OFF` (an older server, or an ACL), which then answers every command.
    NoReply { commands: usize },
}

impl Expect {
    /// Takes note of reply number `received` (counting from 1), which `is_error` or not; returns
    /// true when it was the last one expected.
    pub fn is_last(&mut self, received: usize, is_error: bool) -> bool {
        match *self {
            Expect::Replies(n) => received == n,
            Expect::NoReply { commands } if received == 1 && is_error => {
                *self = Expect::Replies(commands + 2);
                false
            }
            Expect::NoReply { .. } => true,
        }
    }
}

/// Why a command is refused on a plain connection (the caller raises Redix's `ArgumentError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `SUBSCRIBE` and its siblings: a bare `UNSUBSCRIBE` is answered with a RESP3 push only, which
    /// would leave its caller with the next caller's reply; use `RedixRs.PubSub`.
    PubSub,
    /// `CLIENT REPLY`: would leave callers out of step with their replies; use `noreply_pipeline`.
    ClientReply,
}

/// Decides, from a command's first two elements as they are encoded, whether a plain connection
/// refuses it. No allocation: the name is kept upper-cased in a small buffer.
#[derive(Debug, Default)]
pub struct Refusal {
    /// The command name, upper-cased (left empty when longer than any name refused).
    name: [u8; 12],
    name_len: usize,
    seen: usize,
}

impl Refusal {
    /// Takes the text of the command's next element.
    pub fn element(&mut self, text: &[u8]) -> Result<(), Refused> {
        match self.seen {
            0 if text.len() <= self.name.len() => {
                for (dst, src) in self.name.iter_mut().zip(text) {
                    *dst = src.to_ascii_uppercase();
                }
                self.name_len = text.len();
            }
            1 if self.name() == b"CLIENT" && text.eq_ignore_ascii_case(b"REPLY") => {
                return Err(Refused::ClientReply)
            }
            _ => {}
        }
        self.seen += 1;
        Ok(())
    }

    /// After the last element.
    pub fn finish(&self) -> Result<(), Refused> {
        match self.name() {
            b"SUBSCRIBE" | b"PSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE" | b"SSUBSCRIBE"
            | b"SUNSUBSCRIBE" => Err(Refused::PubSub),
            _ => Ok(()),
        }
    }

    fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(command: &[&str]) -> Result<(), Refused> {
        let mut refusal = Refusal::default();
        for element in command {
            refusal.element(element.as_bytes())?;
        }
        refusal.finish()
    }

    #[test]
    fn pubsub_commands_and_client_reply_are_refused_in_any_case() {
        for name in [
            "SUBSCRIBE",
            "psubscribe",
            "Unsubscribe",
            "PUNSUBSCRIBE",
            "ssubscribe",
        ] {
            assert_eq!(refusal(&[name, "ch"]), Err(Refused::PubSub), "{name}");
            assert_eq!(refusal(&[name]), Err(Refused::PubSub), "a bare {name}");
        }
        assert_eq!(refusal(&["SUNSUBSCRIBE"]), Err(Refused::PubSub));
        assert_eq!(
            refusal(&["client", "reply", "off"]),
            Err(Refused::ClientReply)
        );
        assert_eq!(refusal(&["CLIENT", "Reply"]), Err(Refused::ClientReply));
    }

    #[test]
    fn everything_else_goes() {
        assert_eq!(refusal(&["GET", "subscribe"]), Ok(()));
        assert_eq!(refusal(&["CLIENT", "SETNAME", "reply"]), Ok(()));
        assert_eq!(refusal(&["PUBLISH", "ch", "m"]), Ok(()));
        assert_eq!(refusal(&["SUBSCRIBERS"]), Ok(()), "not a prefix match");
        assert_eq!(refusal(&["A_VERY_LONG_COMMAND_NAME"]), Ok(()));
    }

    #[test]
    fn replies_expected_per_kind() {
        assert_eq!(SubmissionKind::Pipeline.expect(3), Expect::Replies(3));
        assert_eq!(SubmissionKind::Transaction.expect(3), Expect::Replies(5));
        let mut expect = SubmissionKind::NoReply.expect(3);
        assert!(expect.is_last(1, false), "the OK of CLIENT REPLY ON alone");
        // Redis refused CLIENT REPLY OFF: every command, and ON, answer.
        let mut expect_all = SubmissionKind::NoReply.expect(3);
        assert!(!expect_all.is_last(1, true));
        assert_eq!(expect_all, Expect::Replies(5));
        assert!(!expect_all.is_last(4, false));
        assert!(expect_all.is_last(5, false));
    }

    #[test]
    fn wrappers_are_encoded_commands() {
        assert_eq!(SubmissionKind::Pipeline.wrappers(), (&b""[..], &b""[..]));
        let (off, on) = SubmissionKind::NoReply.wrappers();
        assert!(off.ends_with(b"$3\r\nOFF\r\n") && on.ends_with(b"$2\r\nON\r\n"));
        let (multi, exec) = SubmissionKind::Transaction.wrappers();
        assert_eq!((multi, exec), (MULTI, EXEC));
    }
}
