//! Side connections, as the submit NIFs see them: a submission holding a blocking command
//! (`redix_rs_core::conn::side`) is not queued on a handle that has a side pool; `submit` answers
//! `{:side, pool_pid}` instead. The commands are looked at in the walks the NIFs make anyway: the
//! encoder of short submissions reads each element's bytes as it encodes them (and stops, with
//! nothing queued, at a blocking command: `args::encode_submission`), and the check of long
//! pipelines looks at them as it checks them (`args::check_submission`). So a GET pays a length
//! test, not a second walk. The caller then runs the submission on a side connection that the pool
//! process (`RedixRs.SideConnections`) lends it. Nothing else of side connections lives here: opening,
//! lending, closing when idle and watching callers are the pool process's job, since they are about
//! processes, monitors and timers, and a blocking call can afford a message round trip.

use redix_rs_core::conn::side;

/// The commands sent to side connections, and the blocking ones that stay on the shared connection:
/// `{to_side, shared}`, upper-case names (for the test that compares them with `COMMAND INFO`).
#[rustler::nif]
fn blocking_commands() -> (Vec<&'static str>, Vec<&'static str>) {
    (
        side::BLOCKING_COMMANDS.to_vec(),
        side::SHARED_BLOCKING_COMMANDS.to_vec(),
    )
}
