//! A reader-writer lock whose readers take one of several locks, chosen by thread, and whose
//! writers take them all: what the store's shard maps sit behind.
//!
//! Hits come from every scheduler thread at once, often for the same few hot keys. Under one
//! `RwLock`, each read would write the lock's word (a reader count), so that word's cache line
//! would travel between the cores on nearly every hit. Here a reader only writes the word of its own
//! thread's stripe, which stays in its core's cache; a writer (a fill, an eviction, an
//! invalidation: far rarer than hits) pays for taking every stripe, always in the same order.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Stripes per lock, and threads with a stripe of their own (a power of two).
pub(super) const STRIPES: usize = 16;

/// The stripe of the calling thread: threads take them in turn, the first time they ask.
pub(super) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// A lock word on a cache line of its own.
#[repr(align(128))]
struct Padded(RwLock<()>);

pub(super) struct Striped<T> {
    locks: [Padded; STRIPES],
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached through the guards below: shared (`&T`) under one stripe's read
// lock, exclusive (`&mut T`) under every stripe's write lock, so a writer excludes every reader and
// every other writer, exactly as one `RwLock<T>` would.
unsafe impl<T: Send + Sync> Sync for Striped<T> {}
unsafe impl<T: Send> Send for Striped<T> {}

pub(super) struct ReadGuard<'a, T> {
    _stripe: RwLockReadGuard<'a, ()>,
    value: &'a T,
}

pub(super) struct WriteGuard<'a, T> {
    _stripes: [RwLockWriteGuard<'a, ()>; STRIPES],
    value: &'a mut T,
}

impl<T> Striped<T> {
    pub(super) fn new(value: T) -> Striped<T> {
        Striped {
            locks: std::array::from_fn(|_| Padded(RwLock::new(()))),
            value: UnsafeCell::new(value),
        }
    }

    pub(super) fn read(&self) -> ReadGuard<'_, T> {
        self.read_at(stripe())
    }

    /// [`Striped::read`] for a caller that already knows its thread's `stripe()` (any index below
    /// `STRIPES` is correct; its own keeps the lock word in its core's cache).
    pub(super) fn read_at(&self, stripe: usize) -> ReadGuard<'_, T> {
        // The locks guard no data of their own: a poisoned one is as good as any.
        let stripe = self.locks[stripe % STRIPES]
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner());
        // SAFETY: a stripe's read lock is held: no writer holds every write lock.
        let value = unsafe { &*self.value.get() };
        ReadGuard {
            _stripe: stripe,
            value,
        }
    }

    pub(super) fn write(&self) -> WriteGuard<'_, T> {
        let stripes =
            std::array::from_fn(|i| self.locks[i].0.write().unwrap_or_else(|e| e.into_inner()));
        // SAFETY: every stripe's write lock is held: no reader and no other writer.
        let value = unsafe { &mut *self.value.get() };
        WriteGuard {
            _stripes: stripes,
            value,
        }
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn writers_exclude_readers_and_each_other() {
        let lock = Arc::new(Striped::new((0u64, 0u64)));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        if t % 2 == 0 {
                            let mut w = lock.write();
                            w.0 += 1;
                            w.1 += 1;
                        } else {
                            let r = lock.read();
                            assert_eq!(r.0, r.1, "a reader saw a half-done write");
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*lock.read(), (8_000, 8_000));
    }
}
