//! The cache as its connection's [`OutOfBandSink`]: `invalidate` pushes reach [`Store::invalidate`]
//! on the reader's thread, in wire order with the replies, and the end of the connection flushes.
//!
//! A caching connection is a command connection, where nothing else out of band is expected
//! (pub/sub commands are refused there): anything else is dropped, as it would be without a sink.

use super::store::Store;
use crate::conn::{OutOfBand, OutOfBandSink, Reason, Taken};
use crate::resp::Frame;

impl OutOfBandSink for Store {
    fn take(&self, item: OutOfBand) -> Taken {
        if let OutOfBand::Invalidation(payload) = item {
            self.invalidate(&payload);
        }
        // Invalidations are handled here and now: the cache never falls behind.
        Taken::Yes
    }

    fn rejected(&self, _error: &Frame) {}

    fn closed(&self, _reason: &Reason) {
        // Redis forgets what it tracked for a closed connection: nothing cached can be trusted.
        self.flush();
    }
}
