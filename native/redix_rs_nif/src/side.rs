//! Side connections, as the submit NIFs see them: a submission holding a blocking command
//! (`redix_rs_core::conn::side`) is not queued on a handle that has a side pool; `submit` answers
//! `{:side, pool_pid}` instead, and the caller runs it on a side connection that the pool process
//! (`RedixRs.SideConnections`) lends it. Nothing else of side connections lives here: opening,
//! lending, closing when idle and watching callers are the pool process's job, since they are about
//! processes, monitors and timers, and a blocking call can afford a message round trip.

use redix_rs_core::conn::side::{self, Blocking, StreamArgument};
use rustler::{Binary, Term};

/// True if one of `commands` (a list of commands, already counted) blocks the connection it runs
/// on. Only binary names and arguments are looked at: anything else is converted by the Elixir
/// side first (`:normalize`), and the converted commands are looked at again when they come back.
/// Reads the head of each command (one length test for a GET); `XREAD`/`XREADGROUP` also their
/// options, up to `STREAMS`.
#[inline]
pub fn blocking(commands: Term<'_>) -> bool {
    let mut rest = commands;
    while let Ok((command, tail)) = rest.list_get_cell() {
        if let Ok((name, args)) = command.list_get_cell() {
            if let Ok(name) = name.decode::<Binary>() {
                match side::classify(name.as_slice()) {
                    Some(Blocking::Always) => return true,
                    Some(Blocking::WithBlockArgument) if stream_blocks(args) => return true,
                    _ => {}
                }
            }
        }
        rest = tail;
    }
    false
}

fn stream_blocks(args: Term<'_>) -> bool {
    let mut rest = args;
    while let Ok((arg, tail)) = rest.list_get_cell() {
        if let Ok(arg) = arg.decode::<Binary>() {
            match side::stream_argument(arg.as_slice()) {
                StreamArgument::Block => return true,
                StreamArgument::Streams => return false,
                StreamArgument::Other => {}
            }
        }
        rest = tail;
    }
    false
}

/// The commands sent to side connections, and the blocking ones that stay on the shared connection:
/// `{to_side, shared}`, upper-case names (for the test that compares them with `COMMAND INFO`).
#[rustler::nif]
fn blocking_commands() -> (Vec<&'static str>, Vec<&'static str>) {
    (
        side::BLOCKING_COMMANDS.to_vec(),
        side::SHARED_BLOCKING_COMMANDS.to_vec(),
    )
}
