//! Bits of the Erlang external term format the NIF needs but the NIF API lacks: integers of any size
//! (RESP3 big numbers), built here so that they can be tested without the VM.

/// `SMALL_BIG_EXT`/`LARGE_BIG_EXT` for a decimal integer: sign, then magnitude in base 256, little-endian.
/// Numbers longer than this stay decimal binaries: the conversion is quadratic in the digits.
pub const MAX_DIGITS: usize = 1_000;

/// Returns `None` for malformed or overlong (> `MAX_DIGITS`) input.
pub fn big_integer(digits: &[u8]) -> Option<Vec<u8>> {
    if digits.len() > MAX_DIGITS + 1 {
        return None;
    }
    let (negative, digits) = match digits.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut magnitude: Vec<u8> = Vec::new(); // little-endian base 256
    for d in digits {
        let mut carry = u32::from(d - b'0');
        for byte in magnitude.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            magnitude.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut etf = vec![131];
    match u8::try_from(magnitude.len()) {
        Ok(n) => etf.extend([110, n]),
        Err(_) => {
            etf.push(111);
            etf.extend(u32::try_from(magnitude.len()).ok()?.to_be_bytes());
        }
    }
    etf.push(u8::from(negative));
    etf.extend(magnitude);
    Some(etf)
}

#[cfg(test)]
mod tests {
    use super::{big_integer, MAX_DIGITS};

    #[test]
    fn big_integers_in_external_term_format() {
        // 2^64 = 18446744073709551616: 9 bytes, 0x00 * 8 then 0x01.
        let etf = big_integer(b"18446744073709551616").unwrap();
        assert_eq!(etf, [131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let etf = big_integer(b"-256").unwrap();
        assert_eq!(etf, [131, 110, 2, 1, 0, 1]);
        assert!(big_integer(b"12a").is_none());
        assert!(big_integer(b"-").is_none());
        assert!(big_integer(&[b'7'; MAX_DIGITS + 2]).is_none());
    }
}
