//! Helpers shared by the unit tests of this crate (compiled in tests only).

/// Hex string (spaces and `|` ignored) to bytes, for golden vectors copied
/// from captures.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect()
}
