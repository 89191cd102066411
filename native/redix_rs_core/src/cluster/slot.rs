//! Hash slots: which of Redis Cluster's 16384 slots a key belongs to.
//!
//! The slot is CRC16 (the XMODEM variant: polynomial 0x1021, initial value 0, no reflection, no final
//! XOR) of the key modulo 16384. A *hash tag* lets keys share a slot on purpose: when the key holds a
//! `{` and, after it, a `}` with at least one byte between them, only those bytes are hashed. Only the
//! first `{` counts, and only the first `}` after it, so `foo{}{bar}` hashes the whole key (the first
//! braces are empty) and `foo{{bar}}` hashes `{bar`.

/// How many hash slots a Redis Cluster has.
pub const SLOT_COUNT: u16 = 16384;

/// The CRC16/XMODEM lookup table, one entry per value of the byte being shifted in, built at compile
/// time so hashing costs one table read and a shift per byte.
const CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// CRC16/XMODEM of `bytes` (`crc16(b"123456789") == 0x31C3`, the variant's check value).
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        let index = usize::from((crc >> 8) as u8 ^ b);
        (crc << 8) ^ CRC16_TABLE[index]
    })
}

/// The part of `key` that decides its slot: the content of its hash tag when it has a non-empty one,
/// otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let after = &key[open + 1..];
    match after.iter().position(|&b| b == b'}') {
        // `{}`: an empty tag does not count, and Redis does not look for a later one.
        Some(0) | None => key,
        Some(close) => &after[..close],
    }
}

/// The hash slot of `key`, in `0..16384`.
pub fn slot(key: &[u8]) -> u16 {
    // 16384 is a power of two, so the modulo is a mask of the low 14 bits.
    crc16(hash_tag(key)) & (SLOT_COUNT - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc16_matches_the_xmodem_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    // Every value below was checked with CLUSTER KEYSLOT on redis-server 7.0.15 (the integration test
    // tests/cluster_slot.rs asks a real server for the same keys).
    #[test]
    fn known_slots() {
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b""), 0);
        assert_eq!(slot(b"123456789"), 12739);
    }

    #[test]
    fn hash_tags_follow_the_redis_rule() {
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"foo}bar{"), b"foo}bar{");
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"{a}"), b"a");
    }

    proptest! {
        #[test]
        fn slots_are_in_range(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert!(slot(&key) < SLOT_COUNT);
        }

        #[test]
        fn a_non_empty_tag_decides_the_slot(
            prefix in "[a-z}]{0,8}",
            tag in "[a-z{]{1,8}",
            suffix in "[a-z{}]{0,8}",
        ) {
            let key = format!("{prefix}{{{tag}}}{suffix}");
            prop_assert_eq!(slot(key.as_bytes()), slot(tag.as_bytes()));
        }
    }
}
