//! Control-register policy: the values host mode runs with (its own, never
//! the root's) and the checks a root vCPU's state must pass before the
//! microkernel loads it onto the real CPU at promotion. Every value loaded
//! there is checked first, so nothing can fault once the CPU has started
//! to take on root state.

use microv_arch::cpuid::CpuidResult;
use microv_arch::msr::{self, efer};
use microv_arch::svm::SaveArea;
use microv_arch::xsave;

pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

pub mod cr4 {
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const MCE: u64 = 1 << 6;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const LA57: u64 = 1 << 12;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const PKE: u64 = 1 << 22;
    pub const CET: u64 = 1 << 23;
    /// VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE, OSFXSR, OSXMMEXCPT:
    /// present on every x86-64 CPU.
    pub const BASE: u64 = 0x7ff;
}

/// What this CPU supports, read once from CPUID at bring-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// CR4 bits the CPU implements (LA57 never: MicroV refuses 5-level paging).
    pub cr4: u64,
    /// EFER bits the CPU implements.
    pub efer: u64,
    /// XCR0 bits the CPU supports.
    pub xcr0: u64,
    /// Bytes of an XSAVE area with every supported component.
    pub xsave_size: u64,
    /// Physical-address bits (CPUID 0x8000_0008 EAX[7:0]; 36 if absent).
    pub phys_bits: u32,
    /// The TSC_AUX MSR exists (RDTSCP or RDPID).
    pub tsc_aux: bool,
}

const fn bit(reg: u32, n: u32, value: u64) -> u64 {
    if reg & (1 << n) != 0 {
        value
    } else {
        0
    }
}

/// Reads the limits through `cpuid(leaf, subleaf)`.
pub fn limits(cpuid: &mut dyn FnMut(u32, u32) -> CpuidResult) -> Limits {
    let max = cpuid(0, 0).eax;
    let l1 = cpuid(1, 0);
    let l7 = if max >= 7 {
        cpuid(7, 0)
    } else {
        CpuidResult::default()
    };
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let phys_bits = if max_ext >= 0x8000_0008 {
        (cpuid(0x8000_0008, 0).eax & 0xff).clamp(32, 52)
    } else {
        36
    };
    let ext1_edx = if max_ext >= 0x8000_0001 {
        cpuid(0x8000_0001, 0).edx
    } else {
        0
    };
    let xsave_leaf = if max >= xsave::LEAF_XSAVE {
        cpuid(xsave::LEAF_XSAVE, 0)
    } else {
        CpuidResult::default()
    };
    Limits {
        cr4: cr4::BASE
            | bit(l1.ecx, 17, cr4::PCIDE)
            | bit(l1.ecx, 26, cr4::OSXSAVE)
            | bit(l7.ebx, 0, cr4::FSGSBASE)
            | bit(l7.ebx, 7, cr4::SMEP)
            | bit(l7.ebx, 20, cr4::SMAP)
            | bit(l7.ecx, 2, cr4::UMIP)
            | bit(l7.ecx, 3, cr4::PKE)
            | bit(l7.ecx, 7, cr4::CET),
        efer: efer::SCE
            | efer::LME
            | efer::LMA
            | efer::NXE
            | efer::SVME
            | efer::optional_supported(cpuid),
        xcr0: xsave::supported_xcr0(xsave_leaf),
        xsave_size: xsave::max_area_size(xsave_leaf),
        phys_bits,
        tsc_aux: microv_arch::cpuid::has_tsc_aux(l7.ecx, ext1_edx),
    }
}

/// CR0 in host mode: protected mode with paging, write protection, native
/// FPU errors; never the root's TS, CD/NW or AM.
pub const HOST_CR0: u64 = cr0::PE | cr0::MP | cr0::ET | cr0::NE | cr0::WP | cr0::PG;

/// CR4 in host mode: PAE paging without global pages (so no root TLB entry
/// outlives a switch to MicroV's tables), SSE and XSAVE for the host code,
/// machine checks, and SMEP where the CPU has it (ring 0 never executes
/// extension pages). Not SMAP: the microkernel reads extension memory.
pub fn host_cr4(l: &Limits) -> u64 {
    cr4::PSE | cr4::PAE | cr4::MCE | cr4::OSFXSR | cr4::OSXMMEXCPT | cr4::OSXSAVE
        | (l.cr4 & cr4::SMEP)
}

/// EFER in host mode.
pub const HOST_EFER: u64 = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME;

/// A root value the microkernel refuses to load onto the real CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Cr0(u64),
    Cr3(u64),
    Cr4(u64),
    Efer(u64),
    Pat(u64),
    Dr7(u64),
    Xcr0(u64),
    /// After an early boot, the OS's own page tables (this CR3): they do
    /// not map the trampoline, so promotion would fault on its first
    /// instruction after the switch.
    OsTables(u64),
}

impl Refused {
    /// The refused value, for the fault record's detail.
    pub fn value(self) -> u64 {
        match self {
            Refused::Cr0(v)
            | Refused::Cr3(v)
            | Refused::Cr4(v)
            | Refused::Efer(v)
            | Refused::Pat(v)
            | Refused::Dr7(v)
            | Refused::Xcr0(v)
            | Refused::OsTables(v) => v,
        }
    }
}

/// Checks that the root state in `save` (with XCR0 `xcr0`) is a 64-bit
/// state this CPU can load without a fault: promotion loads these values in
/// host mode, where a fault would be taken with part of the root's state
/// already on the CPU.
pub fn check_promotable(save: &SaveArea, xcr0: u64, l: &Limits) -> Result<(), Refused> {
    let c0 = save.cr0;
    if c0 >> 32 != 0 || c0 & (cr0::PE | cr0::PG) != cr0::PE | cr0::PG {
        return Err(Refused::Cr0(c0));
    }
    if c0 & cr0::NW != 0 && c0 & cr0::CD == 0 {
        return Err(Refused::Cr0(c0));
    }
    let c4 = save.cr4;
    if c4 & !l.cr4 != 0 || c4 & cr4::PAE == 0 || c4 & cr4::LA57 != 0 {
        return Err(Refused::Cr4(c4));
    }
    // CET needs write protection (MOV to CR0 faults otherwise).
    if c4 & cr4::CET != 0 && c0 & cr0::WP == 0 {
        return Err(Refused::Cr4(c4));
    }
    // CR3: no bits above MAXPHYADDR (bits 62..phys_bits); bit 63 (keep the
    // PCID's TLB entries) only with PCIDE. The trampoline loads it.
    let cr3 = save.cr3;
    let above = ((1u64 << 63) - 1) & !((1u64 << l.phys_bits) - 1);
    if cr3 & above != 0 || (cr3 >> 63 != 0 && c4 & cr4::PCIDE == 0) {
        return Err(Refused::Cr3(cr3));
    }
    let e = save.efer;
    if e & !l.efer != 0 || e & (efer::LME | efer::LMA) != efer::LME | efer::LMA {
        return Err(Refused::Efer(e));
    }
    if !msr::pat_valid(save.g_pat) {
        return Err(Refused::Pat(save.g_pat));
    }
    if save.dr7 >> 32 != 0 {
        return Err(Refused::Dr7(save.dr7));
    }
    if !xsave::xcr0_valid(xcr0, l.xcr0) {
        return Err(Refused::Xcr0(xcr0));
    }
    Ok(())
}

/// CR3's address bits (not the PCID, not the no-flush bit).
const CR3_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// Whether promotion can switch to the root's page tables `cr3`: the
/// trampoline runs on across the switch, so they must map it where
/// MicroV's do. A late launch maps it in the OS's own tables (any CR3 will
/// do: `tables` is None). After an early boot only the tables the CPU
/// entered with (the firmware's, or microv.efi's for an AP) map it, at its
/// physical address; once the OS has its own, MicroV cannot hand the CPU
/// back and must stop it instead.
pub fn check_tables(cr3: u64, tables: Option<u64>) -> Result<(), Refused> {
    match tables {
        Some(t) if t & CR3_ADDRESS != cr3 & CR3_ADDRESS => Err(Refused::OsTables(cr3)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    type Change = fn(&mut SaveArea);

    /// A Zen-like CPU: leaf 7 with FSGSBASE, SMEP, SMAP, UMIP; XSAVE x87/SSE/AVX;
    /// FFXSR and RDTSCP, no RDPID.
    fn zen(leaf: u32, _sub: u32) -> CpuidResult {
        match leaf {
            0 => CpuidResult {
                eax: 0xd,
                ..Default::default()
            },
            1 => CpuidResult {
                ecx: (1 << 17) | (1 << 26),
                ..Default::default()
            },
            7 => CpuidResult {
                ebx: 1 | (1 << 7) | (1 << 20),
                ecx: 1 << 2,
                ..Default::default()
            },
            0xd => CpuidResult {
                eax: 7,
                ecx: 0x340,
                ..Default::default()
            },
            0x8000_0000 => CpuidResult {
                eax: 0x8000_0008,
                ..Default::default()
            },
            0x8000_0008 => CpuidResult {
                eax: 48,
                ..Default::default()
            },
            0x8000_0001 => CpuidResult {
                edx: (1 << 25) | (1 << 27),
                ..Default::default()
            },
            _ => CpuidResult::default(),
        }
    }

    fn zen_limits() -> Limits {
        limits(&mut zen)
    }

    fn linux() -> Box<SaveArea> {
        let mut s = Box::new(SaveArea::new_zeroed());
        s.cr0 = 0x8005_0033;
        s.cr4 = 0x3506f0 & zen_limits().cr4;
        s.efer = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::SVME;
        s.g_pat = 0x0407_0506_0007_0406;
        s.dr7 = 0x400;
        s.cr3 = 0x10_c000;
        s
    }

    #[test]
    fn limits_follow_cpuid() {
        let l = zen_limits();
        assert_eq!(l.xcr0, 7);
        assert_eq!(l.xsave_size, 0x340);
        assert_ne!(l.cr4 & cr4::SMEP, 0);
        assert_ne!(l.cr4 & cr4::UMIP, 0);
        assert_eq!(l.cr4 & (cr4::PKE | cr4::CET | cr4::LA57), 0);
        assert_ne!(l.efer & efer::FFXSR, 0);
        assert_eq!(l.efer & efer::TCE, 0);
        let old = limits(&mut |leaf, _| CpuidResult {
            eax: if leaf == 0 { 1 } else { 0 },
            ..Default::default()
        });
        assert_eq!((old.cr4, old.xcr0), (cr4::BASE, 0), "no leaf 7 or 0xD");
        assert!(!old.tsc_aux, "no RDTSCP or RDPID");
        assert!(l.tsc_aux, "RDTSCP");
        let neither = limits(&mut |leaf, subleaf| match leaf {
            0x8000_0001 => CpuidResult::default(),
            _ => zen(leaf, subleaf),
        });
        assert!(!neither.tsc_aux, "zen() without RDTSCP has no RDPID either");
        let rdpid_only = limits(&mut |leaf, subleaf| match leaf {
            7 => CpuidResult { ecx: 1 << 22, ..zen(leaf, subleaf) },
            0x8000_0001 => CpuidResult::default(),
            _ => zen(leaf, subleaf),
        });
        assert!(rdpid_only.tsc_aux, "RDPID alone");
    }

    #[test]
    fn after_an_early_boot_only_the_entry_tables_can_be_promoted_to() {
        assert_eq!(check_tables(0x1234_5000, None), Ok(()), "late launch");
        assert_eq!(check_tables(0x3fc0_1000, Some(0x3fc0_1000)), Ok(()));
        assert_eq!(check_tables(0x3fc0_1000 | (1 << 63) | 7, Some(0x3fc0_1000)), Ok(()));
        assert_eq!(
            check_tables(0x0123_4000, Some(0x3fc0_1000)),
            Err(Refused::OsTables(0x0123_4000))
        );
        assert_eq!(Refused::OsTables(5).value(), 5);
    }

    #[test]
    fn host_values_are_microvs_own() {
        let l = zen_limits();
        let h = host_cr4(&l);
        assert_ne!(h & cr4::SMEP, 0);
        assert_eq!(h & (cr4::SMAP | cr4::FSGSBASE | cr4::PCIDE | (1 << 7)), 0);
        assert_eq!(HOST_CR0 & (cr0::CD | cr0::NW | (1 << 3)), 0, "no CD/NW/TS");
        let mut s = linux();
        s.cr0 = HOST_CR0;
        s.cr4 = h;
        s.efer = HOST_EFER;
        assert_eq!(check_promotable(&s, xsave::HOST_XCR0, &l), Ok(()));
    }

    #[test]
    fn accepts_linux_and_refuses_what_would_fault() {
        let l = zen_limits();
        assert_eq!(check_promotable(&linux(), 7, &l), Ok(()));
        let cases: [(Change, Refused); 9] = [
            (|s| s.cr0 = 0x33, Refused::Cr0(0x33)),
            (|s| s.cr0 |= 1 << 40, Refused::Cr0(0x100_8005_0033)),
            (|s| s.cr0 |= cr0::NW, Refused::Cr0(0xa005_0033)),
            (|s| s.cr4 |= cr4::LA57, Refused::Cr4(0x3516f0 & 0x1f_17ff)),
            (|s| s.cr4 = cr4::OSXSAVE, Refused::Cr4(cr4::OSXSAVE)),
            (|s| s.efer &= !efer::LMA, Refused::Efer(0xd01)),
            (|s| s.efer |= efer::TCE, Refused::Efer(0x9d01)),
            (|s| s.g_pat = 0x02, Refused::Pat(2)),
            (|s| s.dr7 = 1 << 32, Refused::Dr7(1 << 32)),
        ];
        for (change, expected) in cases {
            let mut s = linux();
            change(&mut s);
            let got = check_promotable(&s, 7, &l);
            assert!(got.is_err(), "{expected:?} accepted");
            assert_eq!(
                core::mem::discriminant(&got.unwrap_err()),
                core::mem::discriminant(&expected)
            );
        }
        assert_eq!(
            check_promotable(&linux(), 5, &l),
            Err(Refused::Xcr0(5)),
            "AVX without SSE"
        );
        assert_eq!(Refused::Pat(9).value(), 9);
        let mut s = linux();
        s.cr3 = 1 << 50;
        assert_eq!(check_promotable(&s, 7, &l), Err(Refused::Cr3(1 << 50)), "above MAXPHYADDR");
        s.cr3 = (1 << 63) | 0x10_c001;
        assert_eq!(check_promotable(&s, 7, &l), Err(Refused::Cr3(s.cr3)), "no-flush bit without PCIDE");
        s.cr4 |= cr4::PCIDE;
        assert_eq!(check_promotable(&s, 7, &l), Ok(()), "PCID and no-flush with PCIDE");
        let mut s = linux();
        s.cr4 |= cr4::CET;
        s.cr0 &= !cr0::WP;
        let l_cet = Limits { cr4: l.cr4 | cr4::CET, ..l };
        assert_eq!(check_promotable(&s, 7, &l_cet), Err(Refused::Cr4(s.cr4)), "CET without WP");
        assert_eq!(zen_limits().phys_bits, 48);
    }

}
