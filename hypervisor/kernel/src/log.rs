//! The hypervisor log: a byte ring in memory shared with the loader (which
//! copies it out for `microv log`).

use core::fmt;

use microv_abi::launch::LogHeader;

/// A writer into the ring. `data` is the ring's storage after its header.
pub struct LogRing<'a> {
    pub header: &'a mut LogHeader,
    pub data: &'a mut [u8],
}

impl LogRing<'_> {
    /// Appends bytes, overwriting the oldest when full.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let len = self.data.len() as u64;
        if len == 0 {
            return;
        }
        for &b in bytes {
            if self.header.written >= len {
                self.header.lost = self.header.written + 1 - len;
            }
            let index = (self.header.written % len) as usize;
            if let Some(slot) = self.data.get_mut(index) {
                *slot = b;
            }
            self.header.written += 1;
        }
    }
}

impl fmt::Write for LogRing<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn wraps_and_counts_lost_bytes() {
        let mut header = LogHeader {
            written: 0,
            lost: 0,
        };
        let mut data = [0u8; 8];
        let mut ring = LogRing {
            header: &mut header,
            data: &mut data,
        };
        write!(ring, "hello").unwrap();
        assert_eq!(ring.header.lost, 0);
        ring.write_bytes(b"world");
        assert_eq!(ring.header.written, 10);
        assert_eq!(ring.header.lost, 2);
        // "hello" fills 0..5, "wor" 5..8, then "ld" wraps over "he".
        assert_eq!(&data, b"ldllowor");
    }

    #[test]
    fn empty_ring_ignores_writes() {
        let mut header = LogHeader {
            written: 0,
            lost: 0,
        };
        let mut ring = LogRing {
            header: &mut header,
            data: &mut [],
        };
        ring.write_bytes(b"x");
        assert_eq!(header.written, 0);
    }
}
