//! Exit counters, per kind and per I/O port, summed over every vCPU of a
//! VM: the ports tell where a guest's port exits go (a boot that polls an
//! absent device shows up at once).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::ExitKind;

/// How many of the busiest ports a snapshot lists.
pub const BUSIEST_PORTS: usize = 4;

#[derive(Debug)]
pub struct ExitStats {
    by_kind: [AtomicU64; ExitKind::ALL.len()],
    /// Port exits (in and out) by port.
    by_port: Box<[AtomicU64]>,
    /// Port or MMIO accesses no device claimed.
    unclaimed: AtomicU64,
}

impl Default for ExitStats {
    fn default() -> Self {
        ExitStats {
            by_kind: Default::default(),
            by_port: (0..=u16::MAX).map(|_| AtomicU64::new(0)).collect(),
            unclaimed: AtomicU64::new(0),
        }
    }
}

/// A snapshot of [`ExitStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    pub by_kind: Vec<(ExitKind, u64)>,
    pub unclaimed: u64,
    /// The ports with the most exits, most first (ties: lower port first).
    pub busiest_ports: Vec<(u16, u64)>,
}

impl ExitCounts {
    pub fn total(&self) -> u64 {
        self.by_kind.iter().map(|(_, n)| n).sum()
    }

    pub fn get(&self, kind: ExitKind) -> u64 {
        self.by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// `io_in 12, io_out 3400, …` listing only kinds that happened.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .by_kind
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    /// `0x3f8 2300, 0x70 12` (empty without port exits).
    pub fn ports_summary(&self) -> String {
        let parts: Vec<String> = self
            .busiest_ports
            .iter()
            .map(|(p, n)| format!("{p:#x} {n}"))
            .collect();
        parts.join(", ")
    }
}

impl ExitStats {
    pub fn new() -> Self {
        ExitStats::default()
    }

    pub fn count(&self, kind: ExitKind) {
        if let Some(c) = self.by_kind.get(kind.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An exit for port I/O at `port`.
    pub fn count_port(&self, port: u16) {
        if let Some(c) = self.by_port.get(usize::from(port)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count_unclaimed(&self) {
        self.unclaimed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ExitCounts {
        ExitCounts {
            by_kind: ExitKind::ALL
                .iter()
                .zip(&self.by_kind)
                .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
                .collect(),
            unclaimed: self.unclaimed.load(Ordering::Relaxed),
            busiest_ports: self.busiest_ports(),
        }
    }

    fn busiest_ports(&self) -> Vec<(u16, u64)> {
        let mut ports: Vec<(u16, u64)> = (0..=u16::MAX)
            .zip(self.by_port.iter())
            .map(|(p, c)| (p, c.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        ports.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ports.truncate(BUSIEST_PORTS);
        ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_summarises() {
        let s = ExitStats::new();
        assert_eq!(s.snapshot().summary(), "none");
        s.count(ExitKind::IoOut);
        s.count(ExitKind::IoOut);
        s.count(ExitKind::Hlt);
        s.count_unclaimed();
        let c = s.snapshot();
        assert_eq!(c.total(), 3);
        assert_eq!(c.get(ExitKind::IoOut), 2);
        assert_eq!(c.get(ExitKind::MmioRead), 0);
        assert_eq!(c.unclaimed, 1);
        assert_eq!(c.summary(), "io_out 2, hlt 1");
        assert_eq!(c.ports_summary(), "");
    }

    #[test]
    fn lists_the_busiest_ports() {
        let s = ExitStats::new();
        for (port, n) in [(0x3f8, 3), (0x70, 5), (0x71, 5), (0x61, 1), (0x80, 2), (0xffff, 4)] {
            (0..n).for_each(|_| s.count_port(port));
        }
        let c = s.snapshot();
        assert_eq!(c.busiest_ports, vec![(0x70, 5), (0x71, 5), (0xffff, 4), (0x3f8, 3)]);
        assert_eq!(c.ports_summary(), "0x70 5, 0x71 5, 0xffff 4, 0x3f8 3");
    }
}
