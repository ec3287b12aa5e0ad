//! The TSS I/O permission bitmap: which ports the extension may use from
//! ring 3. A set bit denies the port (#GP); the byte after the last one the
//! CPU may read must be all ones.

use core::ops::RangeInclusive;

/// Bytes of a bitmap that covers ports up to `last_port`, plus the
/// terminating 0xFF byte.
pub const fn bytes_for(last_port: u16) -> usize {
    last_port as usize / 8 + 2
}

/// A bitmap of `N` bytes allowing exactly the ports in `allowed`.
pub fn bitmap<const N: usize>(allowed: RangeInclusive<u16>) -> [u8; N] {
    let mut map = [0xff; N];
    // The last byte stays 0xFF: the CPU reads one byte past the port's.
    let usable = N.saturating_sub(1);
    for port in allowed {
        let byte = usize::from(port / 8);
        if byte < usable {
            if let Some(b) = map.get_mut(byte) {
                *b &= !(1 << (port % 8));
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_exactly_the_range() {
        const N: usize = bytes_for(0xcff);
        assert_eq!(N, 0xcff / 8 + 2);
        let map: [u8; N] = bitmap(0xcf8..=0xcff);
        assert_eq!(map[0xcf8 / 8], 0, "0xCF8..0xCFF allowed");
        assert_eq!(map[0xcf0 / 8], 0xff);
        assert_eq!(map[0x60 / 8], 0xff, "keyboard controller denied");
        assert_eq!(map[N - 1], 0xff, "terminator");
        assert!(map.iter().filter(|&&b| b != 0xff).count() == 1);
        let small: [u8; 2] = bitmap(0xcf8..=0xcff);
        assert_eq!(small, [0xff, 0xff], "ports past the map stay denied");
    }
}
