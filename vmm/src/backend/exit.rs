//! The vendor-neutral description of why a vCPU stopped running guest code.
//!
//! Every backend translates its own exit (KVM's `kvm_run`, MicroV's
//! run page, filled by the extension from the VMCB or VMCS) into this enum,
//! so the run loop and the device models never see a vendor's field.

/// Why [`super::Vcpu::run`] returned.
///
/// Data slices borrow the backend's exit buffer: for the `*In`/`*Read`
/// variants the VMM fills `data`, and the backend hands it to the guest on
/// the next `run`.
#[derive(Debug, PartialEq, Eq)]
pub enum VmExit<'a> {
    /// `in` from `port`: `data` holds `data.len() / size` accesses of
    /// `size` bytes (1, 2 or 4) in the order the guest makes them. One for
    /// `in`; string I/O (`ins`) may hand several, or none (a `rep` with a
    /// count of 0).
    IoIn {
        port: u16,
        size: usize,
        data: &'a mut [u8],
    },
    /// `out` to `port` of `data`: accesses of `size` bytes, as for `IoIn`.
    IoOut {
        port: u16,
        size: usize,
        data: &'a [u8],
    },
    /// A decoded read of `data.len()` bytes at guest-physical `gpa`, outside
    /// guest RAM.
    MmioRead { gpa: u64, data: &'a mut [u8] },
    /// A decoded write of `data` at guest-physical `gpa`, outside guest RAM.
    MmioWrite { gpa: u64, data: &'a [u8] },
    /// The guest halted and the backend has nothing to wake it with; the
    /// next `run` waits for an interrupt.
    Hlt,
    /// The guest triple-faulted: a real CPU would reset.
    Shutdown,
    /// The backend saw the guest ask for a reset (for example through a
    /// device it emulates itself).
    Reset,
    /// The backend saw the guest ask to power off.
    PowerOff,
    /// The run was cut short (a signal, a kick, a host interrupt with a
    /// signal pending); nothing to handle.
    Interrupted,
    /// The CPU refused to enter the guest; `reason` is the backend's code.
    FailEntry { reason: u64 },
    /// An exit the backend could not translate; for logs only.
    Unhandled { backend: &'static str, reason: u64 },
}

/// The kind of an exit, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    IoIn,
    IoOut,
    MmioRead,
    MmioWrite,
    Hlt,
    Shutdown,
    Reset,
    PowerOff,
    Interrupted,
    FailEntry,
    Unhandled,
}

impl ExitKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [ExitKind; 11] = [
        ExitKind::IoIn,
        ExitKind::IoOut,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::Reset,
        ExitKind::PowerOff,
        ExitKind::Interrupted,
        ExitKind::FailEntry,
        ExitKind::Unhandled,
    ];

    /// The name reports use (snake_case, stable).
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::IoIn => "io_in",
            ExitKind::IoOut => "io_out",
            ExitKind::MmioRead => "mmio_read",
            ExitKind::MmioWrite => "mmio_write",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::Reset => "reset",
            ExitKind::PowerOff => "power_off",
            ExitKind::Interrupted => "interrupted",
            ExitKind::FailEntry => "fail_entry",
            ExitKind::Unhandled => "unhandled",
        }
    }

    /// Position in [`ExitKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl VmExit<'_> {
    /// This exit's kind.
    pub fn kind(&self) -> ExitKind {
        match self {
            VmExit::IoIn { .. } => ExitKind::IoIn,
            VmExit::IoOut { .. } => ExitKind::IoOut,
            VmExit::MmioRead { .. } => ExitKind::MmioRead,
            VmExit::MmioWrite { .. } => ExitKind::MmioWrite,
            VmExit::Hlt => ExitKind::Hlt,
            VmExit::Shutdown => ExitKind::Shutdown,
            VmExit::Reset => ExitKind::Reset,
            VmExit::PowerOff => ExitKind::PowerOff,
            VmExit::Interrupted => ExitKind::Interrupted,
            VmExit::FailEntry { .. } => ExitKind::FailEntry,
            VmExit::Unhandled { .. } => ExitKind::Unhandled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_index_their_table() {
        for (i, k) in ExitKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        let mut names: Vec<_> = ExitKind::ALL.iter().map(|k| k.name()).collect();
        names.dedup();
        assert_eq!(names.len(), ExitKind::ALL.len());
        let mut b = [0u8; 1];
        assert_eq!(
            VmExit::IoIn {
                port: 1,
                size: 1,
                data: &mut b
            }
            .kind(),
            ExitKind::IoIn
        );
        assert_eq!(VmExit::Hlt.kind(), ExitKind::Hlt);
    }
}
