//! The ghost of the eviction policy: which commands were recently evicted from the small queue
//! without being read again, so that one filled again soon goes straight to the main queue.
//!
//! S3-FIFO keeps these as a FIFO of ids as long as the main queue; here they are two Bloom filters
//! used in turn (the newer takes insertions; when it holds `capacity` of them the older is cleared
//! and they swap), so a ghost costs 4 bytes per entry of the cache, whatever its keys. A false
//! positive only sends one new entry to the main queue, where it must still earn its place.

/// Bits per remembered entry in each filter, and the probes per entry: about 1% false positives.
const BITS_PER_ENTRY: usize = 16;
const PROBES: u32 = 3;

pub(super) struct Ghost {
    filters: [Vec<u64>; 2],
    /// The filter that takes insertions.
    newer: usize,
    inserted: usize,
    capacity: usize,
    /// `bits - 1`, bits being a power of two.
    mask: u64,
}

impl Ghost {
    /// A ghost that remembers about the last `capacity` evictions.
    pub(super) fn new(capacity: usize) -> Ghost {
        let capacity = capacity.max(1);
        let bits = capacity
            .saturating_mul(BITS_PER_ENTRY)
            .next_power_of_two()
            .max(64);
        let words = bits / 64;
        Ghost {
            filters: [vec![0; words], vec![0; words]],
            newer: 0,
            inserted: 0,
            capacity,
            mask: bits as u64 - 1,
        }
    }

    /// Remembers `hash` (a hash of the evicted command).
    pub(super) fn insert(&mut self, hash: u64) {
        if self.inserted >= self.capacity {
            self.newer ^= 1;
            self.filters[self.newer].fill(0);
            self.inserted = 0;
        }
        let mask = self.mask;
        let filter = &mut self.filters[self.newer];
        for bit in probes(hash, mask) {
            set(filter, bit);
        }
        self.inserted += 1;
    }

    /// True if `hash` was probably inserted recently.
    pub(super) fn contains(&self, hash: u64) -> bool {
        self.filters
            .iter()
            .any(|filter| probes(hash, self.mask).all(|bit| get(filter, bit)))
    }

    pub(super) fn clear(&mut self) {
        self.filters.iter_mut().for_each(|f| f.fill(0));
        self.inserted = 0;
    }
}

/// The bits `hash` sets: double hashing from its two halves.
fn probes(hash: u64, mask: u64) -> impl Iterator<Item = u64> {
    let (low, high) = (hash, (hash >> 32) | 1);
    (0..PROBES).map(move |i| low.wrapping_add(high.wrapping_mul(u64::from(i))) & mask)
}

fn set(filter: &mut [u64], bit: u64) {
    if let Some(word) = filter.get_mut((bit / 64) as usize) {
        *word |= 1 << (bit % 64);
    }
}

fn get(filter: &[u64], bit: u64) -> bool {
    filter
        .get((bit / 64) as usize)
        .is_some_and(|word| word & (1 << (bit % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, RandomState};

    #[test]
    fn remembers_recent_and_forgets_old() {
        let state = RandomState::new();
        let h = |i: u64| state.hash_one(i);
        let mut ghost = Ghost::new(1000);
        (0..1000).for_each(|i| ghost.insert(h(i)));
        assert!((0..1000).all(|i| ghost.contains(h(i))));
        let false_positives = (1000..11_000).filter(|&i| ghost.contains(h(i))).count();
        assert!(false_positives < 300, "{false_positives} false positives");
        // Two more generations later, the first thousand are gone (up to false positives).
        (2000..4001).for_each(|i| ghost.insert(h(i)));
        let kept = (0..1000).filter(|&i| ghost.contains(h(i))).count();
        assert!(kept < 100, "{kept} still remembered");
        ghost.clear();
        assert!(!ghost.contains(h(3000)));
    }
}
