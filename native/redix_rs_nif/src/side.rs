//! Side connections, as the submit NIFs see them: a submission holding a blocking command
//! (`redix_rs_core::conn::side`) is not queued on a handle that has a side pool; `submit` answers
//! `{:side, pool_pid}` instead, and the caller runs it on a side connection that the pool process
//! (`RedixRs.SideConnections`) lends it. Nothing else of side connections lives here: opening,
//! lending, closing when idle and watching callers are the pool process's job, since they are about
//! processes, monitors and timers, and a blocking call can afford a message round trip.

use redix_rs_core::conn::side::{self, Scan};
use rustler::{Binary, Term};

/// True if one of `commands` (a list of commands, already counted) blocks the connection it runs
/// on. Binary and atom elements are read (atoms are encoded as their names, as the encoder does);
/// anything else counts as neither a blocking name nor `BLOCK` (integers), or is converted by the
/// Elixir side first (`:normalize`), and the converted commands are looked at again when they come
/// back. Reads the head of each command (one length test for a GET); `XREAD`/`XREADGROUP` also
/// their options, up to `STREAMS`. Long pipelines are looked at by `args::check_submission`
/// instead, in the walk it makes anyway.
#[inline]
pub fn blocking(commands: Term<'_>) -> bool {
    let mut rest = commands;
    while let Ok((command, tail)) = rest.list_get_cell() {
        if command_blocks(command) {
            return true;
        }
        rest = tail;
    }
    false
}

fn command_blocks(command: Term<'_>) -> bool {
    let mut scan = Scan::default();
    let mut rest = command;
    while let Ok((element, tail)) = rest.list_get_cell() {
        if !scan_element(&mut scan, element) {
            break;
        }
        rest = tail;
    }
    scan.blocks()
}

/// Feeds one element to `scan`; returns whether it wants more.
#[inline]
pub fn scan_element(scan: &mut Scan, element: Term<'_>) -> bool {
    if let Ok(bin) = element.decode::<Binary>() {
        scan.element(bin.as_slice())
    } else if element.is_atom() {
        match element.atom_to_string() {
            Ok(name) => scan.element(name.as_bytes()),
            Err(_) => scan.element(b""),
        }
    } else {
        scan.element(b"")
    }
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
