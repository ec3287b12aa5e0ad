//! The hypervisor log: a byte ring in memory shared with the loader (which
//! copies it out for `microv log`). The ring lies in the root's memory, so
//! MicroV keeps its own position and only ever writes there: the root can
//! scribble over the ring, never steer where MicroV writes.

use core::fmt;

/// Where the bytes go: the ring's storage and its header.
pub trait LogSink {
    /// Bytes of ring storage (after the header).
    fn capacity(&self) -> u64;
    /// Stores `byte` at ring position `index` (< capacity).
    fn put(&mut self, index: u64, byte: u8);
    /// Publishes the header: bytes ever written, and bytes overwritten.
    fn publish(&mut self, written: u64, lost: u64);
}

/// MicroV's own position in the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCursor {
    pub written: u64,
    pub lost: u64,
}

impl LogCursor {
    pub const fn new() -> Self {
        LogCursor {
            written: 0,
            lost: 0,
        }
    }

    /// Appends bytes, overwriting the oldest when full, then publishes.
    pub fn write_bytes(&mut self, sink: &mut dyn LogSink, bytes: &[u8]) {
        let len = sink.capacity();
        if len == 0 {
            return;
        }
        for &b in bytes {
            if self.written >= len {
                self.lost = self.written + 1 - len;
            }
            sink.put(self.written % len, b);
            self.written += 1;
        }
        sink.publish(self.written, self.lost);
    }
}

/// A `fmt::Write` over a cursor and its sink.
pub struct LogWriter<'a> {
    pub cursor: &'a mut LogCursor,
    pub sink: &'a mut dyn LogSink,
}

impl fmt::Write for LogWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.cursor.write_bytes(self.sink, s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[derive(Default)]
    struct Fake {
        data: Vec<u8>,
        header: (u64, u64),
    }

    impl LogSink for Fake {
        fn capacity(&self) -> u64 {
            self.data.len() as u64
        }
        fn put(&mut self, index: u64, byte: u8) {
            self.data[index as usize] = byte;
        }
        fn publish(&mut self, written: u64, lost: u64) {
            self.header = (written, lost);
        }
    }

    #[test]
    fn wraps_and_counts_lost_bytes() {
        let mut sink = Fake {
            data: vec![0; 8],
            ..Fake::default()
        };
        let mut cursor = LogCursor::new();
        write!(LogWriter { cursor: &mut cursor, sink: &mut sink }, "hello").unwrap();
        assert_eq!(sink.header, (5, 0));
        cursor.write_bytes(&mut sink, b"world");
        assert_eq!(sink.header, (10, 2));
        // "hello" fills 0..5, "wor" 5..8, then "ld" wraps over "he".
        assert_eq!(&sink.data, b"ldllowor");
    }

    #[test]
    fn the_roots_header_never_steers_the_writes() {
        let mut sink = Fake {
            data: vec![0; 4],
            ..Fake::default()
        };
        let mut cursor = LogCursor::new();
        cursor.write_bytes(&mut sink, b"ab");
        sink.header = (u64::MAX, u64::MAX); // the root scribbles on it
        cursor.write_bytes(&mut sink, b"c");
        assert_eq!(&sink.data, b"abc\0");
        assert_eq!(sink.header, (3, 0));
    }

    #[test]
    fn empty_ring_ignores_writes() {
        let mut sink = Fake::default();
        let mut cursor = LogCursor::new();
        cursor.write_bytes(&mut sink, b"x");
        assert_eq!(cursor.written, 0);
    }
}
