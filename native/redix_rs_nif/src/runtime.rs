//! The one tokio runtime of the VM, created on first use.
//!
//! Its worker count comes from `REDIX_RS_TOKIO_WORKERS` (default 1: on small machines tokio workers
//! compete with the BEAM schedulers and with a local redis-server, and one worker measured faster).

use once_cell::sync::Lazy;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: Lazy<Result<Runtime, String>> = Lazy::new(|| {
    let workers = std::env::var("REDIX_RS_TOKIO_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("redix_rs-tokio")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
});

/// The shared runtime, or why it could not be built.
pub fn get() -> Result<&'static Runtime, String> {
    RUNTIME.as_ref().map_err(Clone::clone)
}
