//! Exit counters, per kind, summed over every vCPU of a VM.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::ExitKind;

#[derive(Debug, Default)]
pub struct ExitStats {
    by_kind: [AtomicU64; ExitKind::ALL.len()],
    /// Port or MMIO accesses no device claimed.
    unclaimed: AtomicU64,
}

/// A snapshot of [`ExitStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    pub by_kind: Vec<(ExitKind, u64)>,
    pub unclaimed: u64,
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
        }
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
    }
}
