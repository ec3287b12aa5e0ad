//! Hypercall encoding: how a caller in a VM asks MicroV for something.
//!
//! A hypercall is the `vmmcall` instruction (AMD) or `vmcall` (Intel) with:
//!
//! | register | in | out |
//! |---|---|---|
//! | RAX | [`SIGNATURE`] in bits 63:48, flags (zero) in 47:32, group in 31:16, index in 15:0 | [`Status`] |
//! | R10 | the handle from `handle.open` (except `id.*` and `handle.open`) | result 0 |
//! | R11 | argument 1 | result 1 |
//! | R12 | argument 2 | result 2 |
//! | R13 | argument 3 | result 3 |
//!
//! Every other register is preserved. A `vmmcall` whose RAX does not carry the
//! signature raises #UD in the caller, exactly as on a machine without MicroV.
//! `docs/hypercall-abi.md` documents every call; this module is its source of
//! truth and the documentation is checked against it by a unit test.

/// "vM": the top 16 bits of RAX for every MicroV hypercall.
pub const SIGNATURE: u64 = 0x764D;
/// Version of this ABI: major in bits 63:32, minor in bits 31:0. A caller
/// passes the version it was built for to `handle.open`; the major numbers
/// must match.
pub const ABI_VERSION: u64 = 1 << 32;

/// MicroV's own (software) version, as `id.version` returns it in R11:
/// major in bits 47:32, minor in 31:16, patch in 15:0.
pub const fn encode_version(major: u16, minor: u16, patch: u16) -> u64 {
    (major as u64) << 32 | (minor as u64) << 16 | patch as u64
}

/// Reads a version made by [`encode_version`].
pub const fn decode_version(v: u64) -> (u16, u16, u16) {
    ((v >> 32) as u16, (v >> 16) as u16, v as u16)
}

/// Major part of an ABI version.
pub const fn abi_major(version: u64) -> u32 {
    (version >> 32) as u32
}

/// Who may make a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Any code in any VM, any privilege level (discovery calls).
    Anyone,
    /// Ring 0 of the root VM only, with a valid handle.
    RootKernel,
}

macro_rules! hypercalls {
    ($( $variant:ident = ($group:literal, $index:literal, $name:literal, $caller:ident, $implemented:literal) ),* $(,)?) => {
        /// Every hypercall MicroV knows, implemented or reserved.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Hypercall {
            $( #[doc = $name] $variant, )*
        }

        impl Hypercall {
            /// All calls, in numbering order.
            pub const ALL: &'static [Hypercall] = &[$( Hypercall::$variant, )*];

            /// The opcode group (bits 31:16 of RAX).
            pub const fn group(self) -> u16 {
                match self { $( Hypercall::$variant => $group, )* }
            }
            /// The index within the group (bits 15:0 of RAX).
            pub const fn index(self) -> u16 {
                match self { $( Hypercall::$variant => $index, )* }
            }
            /// The documented name, `group.call`.
            pub const fn name(self) -> &'static str {
                match self { $( Hypercall::$variant => $name, )* }
            }
            /// Who may make this call.
            pub const fn caller(self) -> Caller {
                match self { $( Hypercall::$variant => Caller::$caller, )* }
            }
            /// False for calls whose numbers are reserved but not yet served;
            /// they return [`Status::NotImplemented`].
            pub const fn implemented(self) -> bool {
                match self { $( Hypercall::$variant => $implemented, )* }
            }
            /// Looks a call up by group and index.
            pub const fn from_parts(group: u16, index: u16) -> Option<Hypercall> {
                match (group, index) {
                    $( ($group, $index) => Some(Hypercall::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

hypercalls! {
    IdVersion = (0x0000, 0x0000, "id.version", Anyone, true),
    IdCapabilities = (0x0000, 0x0001, "id.capabilities", Anyone, true),
    HandleOpen = (0x0001, 0x0000, "handle.open", RootKernel, true),
    HandleClose = (0x0001, 0x0001, "handle.close", RootKernel, true),
    DebugOut = (0x0002, 0x0000, "debug.out", RootKernel, true),
    PpId = (0x0003, 0x0000, "pp.id", RootKernel, true),
    PpCount = (0x0003, 0x0001, "pp.count", RootKernel, true),
    PpExitCount = (0x0003, 0x0002, "pp.exit_count", RootKernel, true),
    HvMemory = (0x0004, 0x0000, "hv.memory", RootKernel, true),
    HvStopPp = (0x0004, 0x0001, "hv.stop_pp", RootKernel, true),
    HvTestFault = (0x0004, 0x0002, "hv.test_fault", RootKernel, true),
    HvLog = (0x0004, 0x0003, "hv.log", RootKernel, true),
    VmCreate = (0x0005, 0x0000, "vm.create", RootKernel, true),
    VmDestroy = (0x0005, 0x0001, "vm.destroy", RootKernel, true),
    VmMapMemory = (0x0005, 0x0002, "vm.map_memory", RootKernel, true),
    VmUnmapMemory = (0x0005, 0x0003, "vm.unmap_memory", RootKernel, true),
    VcpuCreate = (0x0006, 0x0000, "vcpu.create", RootKernel, true),
    VcpuDestroy = (0x0006, 0x0001, "vcpu.destroy", RootKernel, true),
    VcpuRun = (0x0007, 0x0000, "run.run", RootKernel, true),
    VcpuGetRegisters = (0x0007, 0x0001, "run.get_registers", RootKernel, true),
    VcpuSetRegisters = (0x0007, 0x0002, "run.set_registers", RootKernel, true),
}

/// The RAX value that selects `call`.
pub const fn encode(call: Hypercall) -> u64 {
    (SIGNATURE << 48) | ((call.group() as u64) << 16) | call.index() as u64
}

/// What a RAX value asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not a MicroV hypercall at all: the caller gets #UD, as without MicroV.
    NotMicroV,
    /// The signature is right but the reserved flag bits are not zero.
    BadFlags,
    /// The signature is right but no call has this group and index.
    Unknown { group: u16, index: u16 },
    /// A known call.
    Call(Hypercall),
}

/// Decodes RAX of a hypercall.
pub const fn decode(rax: u64) -> Decoded {
    if rax >> 48 != SIGNATURE {
        return Decoded::NotMicroV;
    }
    if (rax >> 32) & 0xffff != 0 {
        return Decoded::BadFlags;
    }
    let group = (rax >> 16) as u16;
    let index = rax as u16;
    match Hypercall::from_parts(group, index) {
        Some(call) => Decoded::Call(call),
        None => Decoded::Unknown { group, index },
    }
}

macro_rules! statuses {
    ($( $variant:ident = $value:literal : $doc:literal ),* $(,)?) => {
        /// The status a hypercall returns in RAX.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u64)]
        pub enum Status {
            $( #[doc = $doc] $variant = $value, )*
        }

        impl Status {
            /// All statuses, in numbering order.
            pub const ALL: &'static [Status] = &[$( Status::$variant, )*];
            /// Reads a status returned in RAX.
            pub const fn from_u64(v: u64) -> Option<Status> {
                match v { $( $value => Some(Status::$variant), )* _ => None }
            }
            /// One sentence saying what the status means.
            pub const fn description(self) -> &'static str {
                match self { $( Status::$variant => $doc, )* }
            }
        }
    };
}

statuses! {
    Success = 0 : "The call did what it was asked.",
    UnknownCall = 1 : "No hypercall has this group and index, or reserved flag bits were set.",
    NotImplemented = 2 : "The call is reserved in the ABI but this MicroV does not serve it yet.",
    PermissionDenied = 3 : "The caller may not make this call (only ring 0 of the root VM may make management calls).",
    InvalidHandle = 4 : "The handle in R10 is not the one handle.open returned, or it was closed.",
    InvalidArgument = 5 : "An argument is out of range or names something that does not exist.",
    VersionMismatch = 6 : "The caller was built for an ABI major version this MicroV does not speak.",
    Busy = 7 : "The resource is in use (for example a handle is already open).",
    OutOfMemory = 8 : "The hypervisor's memory pool is exhausted.",
    MemoryRefused = 9 : "A root-physical range given to a VM is not ordinary root RAM, or overlaps MicroV's own memory.",
}

impl Status {
    /// The raw RAX value.
    pub const fn as_u64(self) -> u64 {
        self as u64
    }
}

/// Capability bits returned by `id.capabilities` in R10.
pub mod capability {
    /// MicroV was started beneath a running OS.
    pub const LATE_LAUNCH: u64 = 1 << 0;
    /// MicroV was started by the UEFI loader before the OS.
    pub const EARLY_BOOT: u64 = 1 << 1;
    /// The CPU vendor support is AMD SVM with nested paging.
    pub const AMD_SVM: u64 = 1 << 8;
    /// The CPU vendor support is Intel VMX with EPT.
    pub const INTEL_VMX: u64 = 1 << 9;
    /// `hv.test_fault` is served (test builds of the extension only).
    pub const TEST_HOOKS: u64 = 1 << 63;
}

/// What `hv.test_fault` makes the extension do (test builds only).
pub mod test_fault {
    /// Read an unmapped address in the extension (a page fault in ring 3).
    pub const EXTENSION_PAGE_FAULT: u64 = 1;
    /// Execute `ud2` in the extension.
    pub const EXTENSION_INVALID_OPCODE: u64 = 2;
    /// Play a compromised extension: turn nested paging and the VMRUN
    /// intercept off in the root's VMCB and ask the microkernel to run it.
    /// The microkernel must refuse (`vmcb_check`), and MicroV stops.
    pub const EXTENSION_LOOSEN_VMCB: u64 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_gives_every_call_back() {
        for &call in Hypercall::ALL {
            assert_eq!(decode(encode(call)), Decoded::Call(call), "{}", call.name());
        }
    }

    #[test]
    fn numbers_and_names_are_unique() {
        for (i, a) in Hypercall::ALL.iter().enumerate() {
            for b in Hypercall::ALL.iter().skip(i + 1) {
                assert!(
                    (a.group(), a.index()) != (b.group(), b.index()),
                    "{a:?} and {b:?}"
                );
                assert_ne!(a.name(), b.name());
            }
        }
    }

    #[test]
    fn foreign_values_are_not_microv() {
        assert_eq!(decode(0), Decoded::NotMicroV);
        assert_eq!(decode(0x764C_0000_0000_0000), Decoded::NotMicroV);
        assert_eq!(decode(u64::MAX), Decoded::NotMicroV);
    }

    #[test]
    fn flags_must_be_zero() {
        assert_eq!(
            decode(encode(Hypercall::IdVersion) | 1 << 32),
            Decoded::BadFlags
        );
    }

    #[test]
    fn unknown_group_and_index_are_reported() {
        let rax = (SIGNATURE << 48) | (0x00ff << 16) | 7;
        assert_eq!(
            decode(rax),
            Decoded::Unknown {
                group: 0xff,
                index: 7
            }
        );
    }

    #[test]
    fn statuses_round_trip_and_are_described() {
        for &s in Status::ALL {
            assert_eq!(Status::from_u64(s.as_u64()), Some(s));
            assert!(!s.description().is_empty());
        }
        assert_eq!(Status::from_u64(999), None);
    }

    #[test]
    fn software_versions_round_trip() {
        assert_eq!(decode_version(encode_version(1, 22, 333)), (1, 22, 333));
        assert_eq!(encode_version(0, 1, 0), 0x1_0000);
    }

    #[test]
    fn major_version() {
        assert_eq!(abi_major(ABI_VERSION), 1);
    }
}
