//! Extended page tables (SDM Vol. 3C 29.3): entry bits, the mapper format
//! that builds them, the EPT pointer, what IA32_VMX_EPT_VPID_CAP allows
//! (Vol. 3D A.10) and the exit qualification of an EPT violation (Vol. 3C
//! 28.2.1, table 28-7).
//!
//! EPT tables are 4-level tables like x86 paging's: 512 entries a page,
//! the address in bits 51:12 and a large page at bit 7 of level-2 and
//! level-3 entries, so [`crate::mapper`] builds them through
//! [`crate::mapper::WithFormat`] and [`FORMAT`]. They differ in the low
//! bits: no P bit, an entry is present when it allows any access.

use super::bit;
use super::caps::MEMORY_TYPE_WB;
use crate::mapper::Format;
use crate::paging::{ADDRESS_MASK, HUGE};

/// Reads allowed.
pub const READ: u64 = 1 << 0;
/// Writes allowed (only with [`READ`]: write-only is a misconfiguration).
pub const WRITE: u64 = 1 << 1;
/// Instruction fetches allowed (supervisor-mode ones only, with
/// mode-based execute control).
pub const EXECUTE: u64 = 1 << 2;
/// Leaf entries: the memory type of the page (bits 5:3).
pub const MEMORY_TYPE_SHIFT: u32 = 3;
pub const MEMORY_TYPE_MASK: u64 = 7 << MEMORY_TYPE_SHIFT;
/// Leaf entries: ignore the guest's PAT, use the EPT memory type alone.
pub const IGNORE_PAT: u64 = 1 << 6;
/// Level-2 and level-3 entries: maps a 2 MiB or 1 GiB page.
pub const LARGE: u64 = 1 << 7;
/// Set by the CPU when the entry is used (with A/D enabled in the EPTP).
pub const ACCESSED: u64 = 1 << 8;
/// Leaf entries: set by the CPU at a write (with A/D enabled).
pub const DIRTY: u64 = 1 << 9;
/// User-mode instruction fetches allowed (mode-based execute control).
pub const USER_EXECUTE: u64 = 1 << 10;
/// An EPT violation here is not turned into a #VE.
pub const SUPPRESS_VE: u64 = 1 << 63;

/// Every access: what table entries grant (the leaf decides).
pub const ALL_ACCESS: u64 = READ | WRITE | EXECUTE;

const _: () = assert!(LARGE == HUGE);

/// EPT entries for [`crate::mapper`]: present when any of bits 2:0 is set
/// (SDM 29.3.2; MicroV does not enable mode-based execute control, under
/// which bit 10 also counts), nothing added to what the caller gives.
pub const FORMAT: Format = Format {
    present: ALL_ACCESS,
    implied: 0,
};

/// Why an EPT entry, EPT pointer or the CPU's EPT cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// Access without read but with write: an EPT misconfiguration.
    WriteWithoutRead,
    /// Execute-only, which this CPU does not support.
    ExecuteOnly,
    /// No access at all: the entry would not be present.
    NoAccess,
    /// A reserved memory type (2, 3, or 7 and above).
    MemoryType(u8),
    /// The PML4 table's address is not page aligned or too wide.
    TableAddress(u64),
    /// Accessed and dirty flags asked for, and not supported.
    AccessedDirty,
    /// The CPU lacks EPT write-back structures, 4-level walks, 2 MiB
    /// pages or INVEPT with a usable type (the capability bit missing).
    Unsupported(u64),
}

/// The flags of a leaf entry granting `access` (of [`READ`], [`WRITE`],
/// [`EXECUTE`]) with memory type `memory_type`, checked against the EPT
/// misconfiguration rules (SDM 29.3.3.1) and `caps`.
pub const fn leaf(access: u64, memory_type: u8, caps: &EptCaps) -> Result<u64, EptError> {
    let access = access & ALL_ACCESS;
    if access == 0 {
        Err(EptError::NoAccess)
    } else if access & (READ | WRITE) == WRITE {
        Err(EptError::WriteWithoutRead)
    } else if access == EXECUTE && !caps.execute_only {
        Err(EptError::ExecuteOnly)
    } else if !matches!(memory_type, 0 | 1 | 4 | 5 | 6) {
        Err(EptError::MemoryType(memory_type))
    } else {
        Ok(access | (memory_type as u64) << MEMORY_TYPE_SHIFT)
    }
}

/// IA32_VMX_EPT_VPID_CAP, decoded (SDM Vol. 3D A.10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EptCaps {
    /// Bit 0: entries may be execute-only.
    pub execute_only: bool,
    /// Bit 6: 4-level walks.
    pub walk_4_levels: bool,
    /// Bit 7: 5-level walks.
    pub walk_5_levels: bool,
    /// Bit 8: the EPT structures may be uncacheable.
    pub uncacheable: bool,
    /// Bit 14: the EPT structures may be write-back.
    pub write_back: bool,
    /// Bit 16: 2 MiB pages.
    pub pages_2m: bool,
    /// Bit 17: 1 GiB pages.
    pub pages_1g: bool,
    /// Bit 20: INVEPT.
    pub invept: bool,
    /// Bit 21: accessed and dirty flags.
    pub accessed_dirty: bool,
    /// Bit 22: EPT violations report the guest's page bits (qualification
    /// bits 11:9).
    pub advanced_exit_info: bool,
    /// Bit 25: single-context INVEPT.
    pub invept_single_context: bool,
    /// Bit 26: all-context INVEPT.
    pub invept_all_contexts: bool,
    /// Bit 32: INVVPID.
    pub invvpid: bool,
    /// Bit 40: individual-address INVVPID.
    pub invvpid_address: bool,
    /// Bit 41: single-context INVVPID.
    pub invvpid_single_context: bool,
    /// Bit 42: all-context INVVPID.
    pub invvpid_all_contexts: bool,
    /// Bit 43: single-context INVVPID keeping global translations.
    pub invvpid_single_context_globals: bool,
}

/// The capability bits [`EptCaps::check`] requires.
const REQUIRED: [(u32, &str); 4] = [(14, "WB"), (6, "4-level"), (16, "2 MiB"), (20, "INVEPT")];

impl EptCaps {
    pub const fn decode(msr: u64) -> EptCaps {
        EptCaps {
            execute_only: bit(msr, 0),
            walk_4_levels: bit(msr, 6),
            walk_5_levels: bit(msr, 7),
            uncacheable: bit(msr, 8),
            write_back: bit(msr, 14),
            pages_2m: bit(msr, 16),
            pages_1g: bit(msr, 17),
            invept: bit(msr, 20),
            accessed_dirty: bit(msr, 21),
            advanced_exit_info: bit(msr, 22),
            invept_single_context: bit(msr, 25),
            invept_all_contexts: bit(msr, 26),
            invvpid: bit(msr, 32),
            invvpid_address: bit(msr, 40),
            invvpid_single_context: bit(msr, 41),
            invvpid_all_contexts: bit(msr, 42),
            invvpid_single_context_globals: bit(msr, 43),
        }
    }

    /// Checks what MicroV's EPT needs: write-back tables with 4-level walks
    /// (its tables are the mapper's), 2 MiB pages (the root's map uses
    /// them), and INVEPT of some type. 1 GiB pages are used where present.
    /// The error names the first missing capability bit (as a mask).
    pub fn check(&self) -> Result<(), EptError> {
        let present = [
            self.write_back,
            self.walk_4_levels,
            self.pages_2m,
            self.invept,
        ];
        for ((bit, _), have) in REQUIRED.iter().zip(present) {
            if !have {
                return Err(EptError::Unsupported(1 << *bit));
            }
        }
        if !self.invept_single_context && !self.invept_all_contexts {
            return Err(EptError::Unsupported(1 << 25 | 1 << 26));
        }
        Ok(())
    }
}

/// An EPT pointer (SDM 25.6.11): the PML4 table and how to walk it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eptp(pub u64);

impl Eptp {
    /// Page-walk length 4, encoded as 3 in bits 5:3.
    const WALK_4_LEVELS: u64 = 3 << 3;
    /// Bit 6: the CPU sets accessed and dirty flags.
    pub const ACCESSED_DIRTY: u64 = 1 << 6;

    /// The pointer to the 4-level tables at `pml4`, walked write-back,
    /// with accessed/dirty flags if `accessed_dirty` (and `caps` has them).
    pub const fn new(pml4: u64, accessed_dirty: bool, caps: &EptCaps) -> Result<Eptp, EptError> {
        if pml4 & !ADDRESS_MASK != 0 {
            Err(EptError::TableAddress(pml4))
        } else if accessed_dirty && !caps.accessed_dirty {
            Err(EptError::AccessedDirty)
        } else {
            let ad = if accessed_dirty {
                Self::ACCESSED_DIRTY
            } else {
                0
            };
            Ok(Eptp(
                pml4 | MEMORY_TYPE_WB as u64 | Self::WALK_4_LEVELS | ad,
            ))
        }
    }

    /// The PML4 table's physical address.
    pub const fn pml4(self) -> u64 {
        self.0 & ADDRESS_MASK
    }
}

/// Which access an EPT violation with a valid guest-linear address was:
/// qualification bit 8 when bit 7 is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearAccess {
    /// To the page the linear address translates to.
    Translated,
    /// To a guest paging-structure entry while translating it.
    PagingStructure,
}

/// The guest's own page bits for the access (qualification bits 11:9),
/// reported with advanced VM-exit information for translated accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPage {
    pub user: bool,
    pub writable: bool,
    pub execute_disable: bool,
}

/// The exit qualification of an EPT violation (SDM 28.2.1, table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// Bits 0–2: the access was a data read, a data write, a fetch.
    pub read: bool,
    pub write: bool,
    pub fetch: bool,
    /// Bits 3–5 (and 6 with mode-based execute control): what the EPT
    /// entries allowed, ANDed over the walk. All clear: not present.
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub user_executable: bool,
    /// Bits 7–8: whether the guest-linear address field is valid, and for
    /// which access.
    pub linear: Option<LinearAccess>,
    /// Bits 9–11, when reported.
    pub guest_page: Option<GuestPage>,
    /// Bit 12: the access was part of an IRET that unblocked NMIs, which
    /// must be blocked again before the guest resumes (undefined when the
    /// exit interrupted event delivery).
    pub nmi_unblocking: bool,
}

impl EptViolation {
    /// Decodes `qualification`; `advanced_exit_info` is
    /// [`EptCaps::advanced_exit_info`] (bits 11:9 are undefined without it).
    pub const fn decode(qualification: u64, advanced_exit_info: bool) -> EptViolation {
        let q = qualification;
        let linear = match (bit(q, 7), bit(q, 8)) {
            (false, _) => None,
            (true, true) => Some(LinearAccess::Translated),
            (true, false) => Some(LinearAccess::PagingStructure),
        };
        let guest_page = if advanced_exit_info && bit(q, 7) && bit(q, 8) {
            Some(GuestPage {
                user: bit(q, 9),
                writable: bit(q, 10),
                execute_disable: bit(q, 11),
            })
        } else {
            None
        };
        EptViolation {
            read: bit(q, 0),
            write: bit(q, 1),
            fetch: bit(q, 2),
            readable: bit(q, 3),
            writable: bit(q, 4),
            executable: bit(q, 5),
            user_executable: bit(q, 6),
            linear,
            guest_page,
            nmi_unblocking: bit(q, 12),
        }
    }

    /// True if the walk met an entry that was not present, as opposed to
    /// one whose permissions forbade the access.
    pub const fn not_present(&self) -> bool {
        !(self.readable || self.writable || self.executable || self.user_executable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapper::{self, fake::FakeTables, MapError, TableMemory, WithFormat};

    /// A Skylake-era IA32_VMX_EPT_VPID_CAP: execute-only, 4-level, UC and
    /// WB, 2 MiB and 1 GiB pages, INVEPT (both types), A/D, INVVPID (all
    /// four types).
    const CAP: u64 = 0x0f01_0633_4141;

    #[test]
    fn capabilities_decode_and_check() {
        let caps = EptCaps::decode(CAP);
        assert_eq!(
            caps,
            EptCaps {
                execute_only: true,
                walk_4_levels: true,
                walk_5_levels: false,
                uncacheable: true,
                write_back: true,
                pages_2m: true,
                pages_1g: true,
                invept: true,
                accessed_dirty: true,
                advanced_exit_info: false,
                invept_single_context: true,
                invept_all_contexts: true,
                invvpid: true,
                invvpid_address: true,
                invvpid_single_context: true,
                invvpid_all_contexts: true,
                invvpid_single_context_globals: true,
            }
        );
        assert_eq!(caps.check(), Ok(()));
        assert!(EptCaps::decode(1 << 7 | 1 << 22).walk_5_levels);
        assert!(EptCaps::decode(1 << 22).advanced_exit_info);
        for (bit, what) in REQUIRED {
            assert_eq!(
                EptCaps::decode(CAP & !(1 << bit)).check(),
                Err(EptError::Unsupported(1 << bit)),
                "{what}"
            );
        }
        assert_eq!(
            EptCaps::decode(CAP & !(1 << 25 | 1 << 26)).check(),
            Err(EptError::Unsupported(1 << 25 | 1 << 26))
        );
        assert_eq!(EptCaps::decode(CAP & !(1 << 25)).check(), Ok(()));
        assert_eq!(EptCaps::decode(CAP & !(1 << 26)).check(), Ok(()));
    }

    #[test]
    fn eptp_is_write_back_four_levels() {
        let caps = EptCaps::decode(CAP);
        let eptp = Eptp::new(0x1234_5000, false, &caps).unwrap();
        assert_eq!(eptp, Eptp(0x1234_501e));
        assert_eq!(eptp.pml4(), 0x1234_5000);
        assert_eq!(Eptp::new(0x1234_5000, true, &caps), Ok(Eptp(0x1234_505e)));
        assert_eq!(
            Eptp::new(0x1234_5000, true, &EptCaps::default()),
            Err(EptError::AccessedDirty)
        );
        assert_eq!(
            Eptp::new(0x1234_5800, false, &caps),
            Err(EptError::TableAddress(0x1234_5800))
        );
        assert_eq!(
            Eptp::new(1 << 52, false, &caps),
            Err(EptError::TableAddress(1 << 52))
        );
    }

    #[test]
    fn leaves_follow_the_misconfiguration_rules() {
        let caps = EptCaps::decode(CAP);
        assert_eq!(leaf(ALL_ACCESS, MEMORY_TYPE_WB, &caps), Ok(0x37));
        assert_eq!(leaf(READ, 0, &caps), Ok(READ));
        assert_eq!(
            leaf(READ | WRITE | IGNORE_PAT, 4, &caps),
            Ok(0x23),
            "only access bits kept"
        );
        assert_eq!(leaf(EXECUTE, MEMORY_TYPE_WB, &caps), Ok(0x34));
        assert_eq!(
            leaf(EXECUTE, MEMORY_TYPE_WB, &EptCaps::default()),
            Err(EptError::ExecuteOnly)
        );
        assert_eq!(
            leaf(WRITE | EXECUTE, 6, &caps),
            Err(EptError::WriteWithoutRead)
        );
        assert_eq!(leaf(0, 6, &caps), Err(EptError::NoAccess));
        for bad in [2, 3, 7, 8, 0xff] {
            assert_eq!(leaf(READ, bad, &caps), Err(EptError::MemoryType(bad)));
        }
    }

    #[test]
    fn the_mapper_builds_ept_tables() {
        let caps = EptCaps::decode(CAP);
        let (mut fake, root) = FakeTables::new(16);
        let mut ept = WithFormat::new(&mut fake, FORMAT);
        assert_eq!(ept.format(), FORMAT);
        let ram = leaf(ALL_ACCESS, MEMORY_TYPE_WB, &caps).unwrap();
        mapper::map(&mut ept, root, 0x20_0000, 0x4000_0000, 2, ram, ALL_ACCESS).unwrap();
        let rom = leaf(READ | EXECUTE, MEMORY_TYPE_WB, &caps).unwrap();
        mapper::map(&mut ept, root, 0xf_f000, 0x9_f000, 1, rom, ALL_ACCESS).unwrap();
        assert_eq!(
            mapper::translate(&mut ept, root, 0x20_1234),
            Some((0x4000_1234, ram | LARGE))
        );
        assert_eq!(
            mapper::translate(&mut ept, root, 0xf_f008),
            Some((0x9_f008, rom))
        );
        // Table entries carry only the permissions: no P bit, no memory type.
        assert_eq!(
            mapper::entry(&mut ept, root, 0, 4).map(|e| e & 0xfff),
            Ok(ALL_ACCESS)
        );
        // Execute-only leaves are present to the walk.
        let x = leaf(EXECUTE, 0, &caps).unwrap();
        mapper::map(&mut ept, root, 0x1000, 0x5000, 1, x, ALL_ACCESS).unwrap();
        assert_eq!(
            mapper::map(&mut ept, root, 0x1000, 0x6000, 1, x, ALL_ACCESS),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            mapper::map(&mut ept, root, 0x2000, 0x6000, 1, 0, ALL_ACCESS),
            Err(MapError::Misaligned)
        );
        let eptp = Eptp::new(root, false, &caps).unwrap();
        assert_eq!(eptp.pml4(), root);
    }

    #[test]
    fn violations_decode() {
        // A write to a read-only page, linear address valid, translated
        // access, NMI unblocking.
        let v = EptViolation::decode(0x1000 | 0x180 | 0x8 | 0x2, false);
        assert_eq!(
            v,
            EptViolation {
                read: false,
                write: true,
                fetch: false,
                readable: true,
                writable: false,
                executable: false,
                user_executable: false,
                linear: Some(LinearAccess::Translated),
                guest_page: None,
                nmi_unblocking: true,
            }
        );
        assert!(!v.not_present());
        // A fetch from an unmapped page while walking the guest's tables.
        let v = EptViolation::decode(0x80 | 0x4 | 0xe00, true);
        assert!(v.fetch && v.not_present());
        assert_eq!(v.linear, Some(LinearAccess::PagingStructure));
        assert_eq!(v.guest_page, None, "only for translated accesses");
        // Advanced information for a translated read.
        let v = EptViolation::decode(0x180 | 0x1 | 0xa00, true);
        assert_eq!(
            v.guest_page,
            Some(GuestPage {
                user: true,
                writable: false,
                execute_disable: true,
            })
        );
        let v = EptViolation::decode(0x1 | 0x40, true);
        assert_eq!((v.linear, v.guest_page), (None, None));
        assert!(v.user_executable && !v.not_present());
    }
}
