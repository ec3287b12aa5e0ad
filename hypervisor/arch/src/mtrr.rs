//! Memory type range registers (SDM Vol. 3A 12.11; 11.11 in older
//! editions): which memory type the MTRRs give a physical address.
//!
//! With EPT the CPU ignores the MTRRs for a guest's accesses and takes the
//! memory type from the EPT leaf instead, so the root's EPT map carries
//! the type the MTRRs would have given (MMIO uncacheable, RAM write-back).
//! The MSRs are read by the hardware layer into [`Mtrrs`]; the decisions
//! here are pure.

use crate::msr::{MTRR_CAP, MTRR_DEF_TYPE, MTRR_FIRST};
use crate::paging::{ADDRESS_MASK, PAGE_SIZE};

/// A memory type, as MTRRs, the PAT and EPT leaves encode it (SDM Vol. 3A
/// 12.3, table 12-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MemoryType {
    Uncacheable = 0,
    WriteCombining = 1,
    WriteThrough = 4,
    WriteProtected = 5,
    WriteBack = 6,
}

impl MemoryType {
    /// The type encoded as `value`, or `None` for a reserved encoding.
    pub const fn decode(value: u64) -> Option<MemoryType> {
        match value {
            0 => Some(MemoryType::Uncacheable),
            1 => Some(MemoryType::WriteCombining),
            4 => Some(MemoryType::WriteThrough),
            5 => Some(MemoryType::WriteProtected),
            6 => Some(MemoryType::WriteBack),
            _ => None,
        }
    }

    /// The type encoded as `value`, uncacheable for a reserved encoding
    /// (the CPU refuses to load one; UC is the choice that cannot break a
    /// device).
    const fn decode_or_uc(value: u64) -> MemoryType {
        match MemoryType::decode(value) {
            Some(t) => t,
            None => MemoryType::Uncacheable,
        }
    }
}

/// IA32_MTRRCAP (0xFE).
pub mod cap {
    /// Bits 7:0: how many variable ranges the CPU has.
    pub const VCNT: u64 = 0xff;
    /// The fixed-range MTRRs exist.
    pub const FIXED: u64 = 1 << 8;
    /// The write-combining type is supported.
    pub const WC: u64 = 1 << 10;
}

/// IA32_MTRR_DEF_TYPE (0x2FF).
pub mod def_type {
    /// Bits 7:0: the type of memory no MTRR covers.
    pub const TYPE: u64 = 0xff;
    /// The fixed ranges are used (with [`ENABLE`]).
    pub const FIXED_ENABLE: u64 = 1 << 10;
    /// The MTRRs are used; clear, all memory is uncacheable.
    pub const ENABLE: u64 = 1 << 11;
}

/// IA32_MTRR_PHYSMASKn bit 11: the pair is in use.
pub const PHYS_MASK_VALID: u64 = 1 << 11;

/// The fixed-range MTRRs in [`Mtrrs::fixed`]'s order: FIX64K_00000,
/// FIX16K_80000, FIX16K_A0000, FIX4K_C0000 … FIX4K_F8000.
pub const FIXED_MSRS: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
];

/// IA32_MTRR_PHYSBASEn; IA32_MTRR_PHYSMASKn is the MSR after it.
pub const fn phys_base(n: u32) -> u32 {
    MTRR_FIRST + 2 * n
}

/// The most variable ranges [`Mtrrs`] holds (Intel CPUs have 8 or 10);
/// ranges beyond it are not considered.
pub const VARIABLE_MAX: usize = 16;

/// The fixed ranges cover the first MiB.
const FIXED_END: u64 = 0x10_0000;

/// Steps [`Mtrrs::range_type`] may take splitting a range around variable
/// ranges that cover only part of it: a few per range with the
/// contiguous masks firmware writes; a discontinuous mask (allowed, and
/// discouraged, by the SDM) may need more, and the range is then reported
/// as mixed.
const SPLIT_BUDGET: u32 = 4096;

/// One CPU's MTRRs, as read from its MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mtrrs {
    /// IA32_MTRRCAP.
    pub cap: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub def_type: u64,
    /// The fixed-range MTRRs ([`FIXED_MSRS`]), if `cap` has them.
    pub fixed: [u64; 11],
    /// (IA32_MTRR_PHYSBASEn, IA32_MTRR_PHYSMASKn) for n below `cap`'s
    /// count; the rest is not read.
    pub variable: [(u64, u64); VARIABLE_MAX],
}

impl Mtrrs {
    /// MTRRs turned off: all memory uncacheable.
    pub const DISABLED: Mtrrs = Mtrrs {
        cap: 0,
        def_type: 0,
        fixed: [0; 11],
        variable: [(0, 0); VARIABLE_MAX],
    };

    /// Reads the MTRRs with `rdmsr` (the hardware layer's RDMSR): the
    /// fixed ranges only where IA32_MTRRCAP has them, the variable pairs up
    /// to its count (at most [`VARIABLE_MAX`]). Only for a CPU with MTRRs
    /// (CPUID.01H:EDX bit 12): the MSRs do not exist elsewhere.
    pub fn read(mut rdmsr: impl FnMut(u32) -> u64) -> Mtrrs {
        let mut m = Mtrrs {
            cap: rdmsr(MTRR_CAP),
            def_type: rdmsr(MTRR_DEF_TYPE),
            ..Mtrrs::DISABLED
        };
        if m.cap & cap::FIXED != 0 {
            for (value, msr) in m.fixed.iter_mut().zip(FIXED_MSRS) {
                *value = rdmsr(msr);
            }
        }
        let count = m.variable_count();
        for (pair, n) in m.variable.iter_mut().take(count).zip(0..) {
            *pair = (rdmsr(phys_base(n)), rdmsr(phys_base(n) + 1));
        }
        m
    }

    /// How many variable ranges are considered.
    pub fn variable_count(&self) -> usize {
        usize::try_from(self.cap & cap::VCNT)
            .unwrap_or(VARIABLE_MAX)
            .min(VARIABLE_MAX)
    }

    /// The memory type of the page holding `pa`.
    pub fn type_of(&self, pa: u64) -> MemoryType {
        self.range_type(pa & !(PAGE_SIZE - 1), PAGE_SIZE)
            .unwrap_or(MemoryType::Uncacheable)
    }

    /// The memory type of every page of `[start, start + size)` (widened to
    /// whole pages), or `None` if they differ, the range is empty or it
    /// wraps (SDM 12.11.4.1: disabled MTRRs make everything UC; the fixed
    /// ranges decide the first MiB when enabled; then the variable ranges
    /// that match, UC over any other, WT over WB; the default type where
    /// none does).
    pub fn range_type(&self, start: u64, size: u64) -> Option<MemoryType> {
        let end = start
            .checked_add(size)?
            .checked_next_multiple_of(PAGE_SIZE)?;
        let mut at = start & !(PAGE_SIZE - 1);
        if at >= end {
            return None;
        }
        if self.def_type & def_type::ENABLE == 0 {
            return Some(MemoryType::Uncacheable);
        }
        let mut found = None;
        if self.def_type & def_type::FIXED_ENABLE != 0 && self.cap & cap::FIXED != 0 {
            while at < end.min(FIXED_END) {
                same(&mut found, self.fixed_type(at))?;
                at += PAGE_SIZE;
            }
        }
        let mut budget = SPLIT_BUDGET;
        while at < end {
            // The largest naturally aligned block at `at` inside the range.
            let aligned = 1u64 << at.trailing_zeros().min(63);
            let fits = 1u64 << (63 - (end - at).leading_zeros());
            let size = aligned.min(fits);
            same(&mut found, self.block_type(at, size, &mut budget)?)?;
            at += size;
        }
        found
    }

    /// The type of fixed range holding `pa` (below 1 MiB): each MSR holds
    /// eight ranges, the lowest in its low byte.
    fn fixed_type(&self, pa: u64) -> MemoryType {
        let (msr, range) = match pa {
            0..0x8_0000 => (0, pa >> 16),
            0x8_0000..0xc_0000 => (1 + ((pa - 0x8_0000) >> 17), (pa - 0x8_0000) >> 14),
            _ => (3 + ((pa - 0xc_0000) >> 15), (pa - 0xc_0000) >> 12),
        };
        let value = usize::try_from(msr)
            .ok()
            .and_then(|i| self.fixed.get(i))
            .copied()
            .unwrap_or(0);
        MemoryType::decode_or_uc(value >> ((range % 8) * 8) & 0xff)
    }

    /// The valid variable ranges: type, base and mask (address bits).
    fn ranges(&self) -> impl Iterator<Item = (MemoryType, u64, u64)> + '_ {
        self.variable
            .iter()
            .take(self.variable_count())
            .filter(|(_, mask)| mask & PHYS_MASK_VALID != 0)
            .map(|&(base, mask)| {
                let t = MemoryType::decode_or_uc(base & 0xff);
                (t, base & ADDRESS_MASK, mask & ADDRESS_MASK)
            })
    }

    /// The type the variable ranges and the default type give every page of
    /// the naturally aligned block of `size` bytes (a power of two, at
    /// least a page) at `base`, or `None` if it is not one type (or telling
    /// would exceed `budget` steps).
    fn block_type(&self, base: u64, size: u64, budget: &mut u32) -> Option<MemoryType> {
        *budget = budget.checked_sub(1)?;
        let low = size - 1;
        let mut found = None;
        for (t, range_base, mask) in self.ranges() {
            if (base ^ range_base) & mask & !low != 0 {
                continue; // No address in the block matches.
            }
            if mask & low != 0 {
                // Some addresses in the block match and some do not (mask
                // bits are page bits or above, so the block is two pages
                // or more): each half by itself.
                let half = size / 2;
                let first = self.block_type(base, half, budget)?;
                let second = self.block_type(base + half, half, budget)?;
                return (first == second).then_some(first);
            }
            found = Some(found.map_or(t, |f| overlap(f, t)));
        }
        Some(found.unwrap_or(MemoryType::decode_or_uc(self.def_type & def_type::TYPE)))
    }
}

/// The type of an address two matching variable ranges give (SDM
/// 12.11.4.1): the same type stands, UC wins, WT wins over WB. The manual
/// leaves other overlaps undefined; they are taken as UC, which cannot
/// break a device (as Linux does).
const fn overlap(a: MemoryType, b: MemoryType) -> MemoryType {
    use MemoryType::{WriteBack, WriteThrough};
    match (a, b) {
        _ if a as u8 == b as u8 => a,
        (WriteThrough, WriteBack) | (WriteBack, WriteThrough) => WriteThrough,
        _ => MemoryType::Uncacheable,
    }
}

/// Records `t` in `found`: `None` if `found` already holds another type.
fn same(found: &mut Option<MemoryType>, t: MemoryType) -> Option<()> {
    if found.is_some_and(|f| f != t) {
        return None;
    }
    *found = Some(t);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::MemoryType::*;
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const ON: u64 = def_type::ENABLE | def_type::FIXED_ENABLE;
    /// Fixed-range MSRs giving all eight ranges one type.
    const WB: u64 = 0x0606_0606_0606_0606;
    const WP: u64 = 0x0505_0505_0505_0505;

    /// A variable range of `size` bytes (a power of two) at `base`.
    fn range(base: u64, size: u64, t: MemoryType) -> (u64, u64) {
        let mask = !(size - 1) & 0xf_ffff_ffff_f000 | PHYS_MASK_VALID;
        (base | t as u64, mask)
    }

    fn mtrrs(def: u64, variable: &[(u64, u64)]) -> Mtrrs {
        let mut m = Mtrrs {
            cap: cap::FIXED | cap::WC | 10,
            def_type: def,
            // Below 640 KiB WB, the legacy video window UC, the BIOS WP.
            fixed: [WB, WB, 0, WP, WP, WP, WP, WP, WP, WP, WP],
            variable: [(0, 0); VARIABLE_MAX],
        };
        m.variable[..variable.len()].copy_from_slice(variable);
        m
    }

    /// The SDM's example (12.11.3.1): 0–64 MiB WB, 64–96 MiB WB, 96–100
    /// MiB WB, 64–68 MiB UC, 15–16 MiB UC, 0xA000_0000–0xA07F_FFFF WC;
    /// everything else UC by default.
    fn sdm_example() -> Mtrrs {
        mtrrs(
            ON,
            &[
                (0x0000_0006, 0xff_fc00_0800),
                (0x0400_0006, 0xff_fe00_0800),
                (0x0600_0006, 0xff_ffc0_0800),
                (0x0400_0000, 0xff_ffc0_0800),
                (0x00f0_0000, 0xff_fff0_0800),
                (0xa000_0001, 0xff_ff80_0800),
            ],
        )
    }

    #[test]
    fn types_decode() {
        for t in [
            Uncacheable,
            WriteCombining,
            WriteThrough,
            WriteProtected,
            WriteBack,
        ] {
            assert_eq!(MemoryType::decode(t as u64), Some(t));
        }
        for bad in [2, 3, 7, 0x106] {
            assert_eq!(MemoryType::decode(bad), None);
        }
        assert_eq!(phys_base(0), 0x200);
        assert_eq!(phys_base(9) + 1, 0x213);
    }

    #[test]
    fn reads_what_the_cpu_has() {
        let mut read = Vec::new();
        let m = Mtrrs::read(|msr| {
            read.push(msr);
            match msr {
                0xfe => cap::FIXED | 2,
                0x2ff => ON | 6,
                0x250 => WB,
                0x26f => WP,
                0x202 => 0x8000_0000,
                0x203 => 0xf_ffff_8000_0800,
                _ => 0,
            }
        });
        let mut fixed = [0; 11];
        (fixed[0], fixed[10]) = (WB, WP);
        let mut variable = [(0, 0); VARIABLE_MAX];
        variable[1] = (0x8000_0000, 0xf_ffff_8000_0800);
        let expected = Mtrrs {
            cap: cap::FIXED | 2,
            def_type: ON | 6,
            fixed,
            variable,
        };
        assert_eq!(m, expected);
        assert_eq!(read.len(), 2 + 11 + 4);
        assert_eq!(read[2..13], FIXED_MSRS);
        assert_eq!(read[13..], [0x200, 0x201, 0x202, 0x203]);
        // No fixed ranges, no variable ones: the rest is not read.
        let mut read = 0;
        let m = Mtrrs::read(|_| {
            read += 1;
            0
        });
        assert_eq!((m, read), (Mtrrs::DISABLED, 2));
    }

    #[test]
    fn disabled_mtrrs_make_everything_uncacheable() {
        let m = Mtrrs {
            def_type: def_type::FIXED_ENABLE | WriteBack as u64,
            ..sdm_example()
        };
        assert_eq!(m.type_of(0), Uncacheable);
        assert_eq!(m.type_of(0x100_0000), Uncacheable);
        assert_eq!(m.range_type(0, 1 << 40), Some(Uncacheable));
        assert_eq!(Mtrrs::DISABLED.range_type(0x1234, 1), Some(Uncacheable));
    }

    #[test]
    fn the_sdm_example_overlaps() {
        let m = sdm_example();
        for (pa, t) in [
            (MIB, WriteBack),
            (15 * MIB - 1, WriteBack),
            (15 * MIB, Uncacheable),
            (16 * MIB, WriteBack),
            (64 * MIB - 1, WriteBack),
            (64 * MIB, Uncacheable), // WB and UC: UC wins
            (68 * MIB, WriteBack),
            (99 * MIB, WriteBack),
            (100 * MIB, Uncacheable), // the default
            (0xa000_0000, WriteCombining),
            (0xa07f_ffff, WriteCombining),
            (0xa080_0000, Uncacheable),
        ] {
            assert_eq!(m.type_of(pa), t, "{pa:#x}");
        }
        assert_eq!(m.range_type(16 * MIB, 48 * MIB), Some(WriteBack));
        assert_eq!(m.range_type(60 * MIB, 8 * MIB), None);
        assert_eq!(m.range_type(64 * MIB, 4 * MIB), Some(Uncacheable));
        assert_eq!(m.range_type(68 * MIB, 32 * MIB), Some(WriteBack));
        assert_eq!(m.range_type(68 * MIB, 33 * MIB), None);
        assert_eq!(m.range_type(GIB, GIB), Some(Uncacheable));
    }

    #[test]
    fn fixed_ranges_decide_the_first_mib() {
        let mut m = sdm_example();
        // Each MSR's ranges from its low byte up.
        m.fixed[0] = 0x0001_0405_0606_0606;
        m.fixed[2] = 0x0600_0000_0000_0000;
        m.fixed[10] = 0x0400_0000_0000_0006;
        for (pa, t) in [
            (0x0, WriteBack),
            (0x3_ffff, WriteBack),
            (0x4_0000, WriteProtected),
            (0x5_0000, WriteThrough),
            (0x6_0000, WriteCombining),
            (0x7_0000, Uncacheable),
            (0x8_0000, WriteBack),
            (0xa_0000, Uncacheable),
            (0xb_c000, WriteBack),
            (0xc_0000, WriteProtected),
            (0xf_8000, WriteBack),
            (0xf_9000, Uncacheable),
            (0xf_f000, WriteThrough),
            (MIB, WriteBack), // the variable ranges again
        ] {
            assert_eq!(m.type_of(pa), t, "{pa:#x}");
        }
        assert_eq!(m.range_type(0, 0x4_0000), Some(WriteBack));
        assert_eq!(m.range_type(0x8_0000, 0x2_0000), Some(WriteBack));
        assert_eq!(m.range_type(0, 2 * MIB), None);
        assert_eq!(m.range_type(0xc_1000, 0x7000), Some(WriteProtected));
    }

    #[test]
    fn the_fixed_ranges_can_be_off() {
        let uniform = Mtrrs {
            fixed: [WB; 11],
            ..sdm_example()
        };
        assert_eq!(uniform.range_type(0, 2 * MIB), Some(WriteBack));
        for m in [
            Mtrrs {
                def_type: def_type::ENABLE,
                ..sdm_example()
            },
            Mtrrs {
                cap: 10,
                ..sdm_example()
            },
        ] {
            // The variable range 0–64 MiB decides instead.
            assert_eq!(m.type_of(0xa_0000), WriteBack);
            assert_eq!(m.range_type(0, 2 * MIB), Some(WriteBack));
        }
    }

    #[test]
    fn overlapping_variable_ranges() {
        let wt = range(0, GIB, WriteThrough);
        let wb = range(0, 2 * GIB, WriteBack);
        let wc = range(0, GIB, WriteCombining);
        let wp = range(GIB, GIB, WriteProtected);
        let wt2 = range(GIB, GIB, WriteThrough);
        let m = mtrrs(def_type::ENABLE, &[wb, wt, range(0, 2 * GIB, WriteBack)]);
        assert_eq!(m.type_of(0x1000), WriteThrough);
        assert_eq!(m.type_of(GIB), WriteBack, "two identical types");
        let m = mtrrs(def_type::ENABLE, &[wb, wc]);
        assert_eq!(m.type_of(0x1000), Uncacheable, "undefined: taken as UC");
        let m = mtrrs(def_type::ENABLE, &[wp, wt2]);
        assert_eq!(m.type_of(GIB), Uncacheable);
        let m = mtrrs(def_type::ENABLE | WriteBack as u64, &[wt2, wt2]);
        assert_eq!(m.range_type(0, 4 * GIB), None);
        assert_eq!(m.range_type(GIB, GIB), Some(WriteThrough));
        assert_eq!(m.range_type(2 * GIB, 2 * GIB), Some(WriteBack));
    }

    #[test]
    fn only_valid_ranges_within_the_count_apply() {
        let uc = range(0, 4 * GIB, Uncacheable);
        let mut m = mtrrs(def_type::ENABLE | WriteBack as u64, &[uc]);
        assert_eq!(m.type_of(GIB), Uncacheable);
        m.variable[0].1 &= !PHYS_MASK_VALID;
        assert_eq!(m.type_of(GIB), WriteBack);
        let mut m = mtrrs(def_type::ENABLE | WriteBack as u64, &[]);
        m.variable[VARIABLE_MAX - 1] = uc;
        assert_eq!(m.type_of(GIB), WriteBack);
        m.cap |= cap::VCNT;
        assert_eq!(m.variable_count(), VARIABLE_MAX);
        assert_eq!(m.type_of(GIB), Uncacheable);
    }

    #[test]
    fn reserved_encodings_are_uncacheable() {
        let mut m = mtrrs(ON | 2, &[(GIB | 7, range(GIB, GIB, WriteBack).1)]);
        m.fixed[0] = 0x0606_0606_0606_0603;
        assert_eq!(m.type_of(0), Uncacheable);
        assert_eq!(m.type_of(0x1_0000), WriteBack);
        assert_eq!(m.type_of(GIB), Uncacheable);
        assert_eq!(m.type_of(4 * GIB), Uncacheable);
    }

    #[test]
    fn ranges_are_widened_to_pages_and_must_not_be_empty() {
        let m = sdm_example();
        assert_eq!(m.range_type(15 * MIB - 1, 1), Some(WriteBack));
        assert_eq!(m.range_type(15 * MIB - 1, 2), None);
        assert_eq!(m.range_type(MIB, 0), None);
        assert_eq!(m.range_type(u64::MAX - 0xfff, 0x1000), None);
        assert_eq!(m.range_type(u64::MAX - 0x1fff, 0x1000), Some(Uncacheable));
    }

    #[test]
    fn discontinuous_ranges_and_the_split_budget() {
        // Every other page of the first 4 GiB (mask bit 12 set, bits 31:13
        // clear): UC over the WB default.
        let odd = (
            0x1000 | Uncacheable as u64,
            0xf_ffff_0000_1000 | PHYS_MASK_VALID,
        );
        let m = mtrrs(def_type::ENABLE | WriteBack as u64, &[odd]);
        assert_eq!(m.type_of(2 * MIB), WriteBack);
        assert_eq!(m.type_of(2 * MIB + 0x1000), Uncacheable);
        assert_eq!(m.range_type(2 * MIB, 0x1000), Some(WriteBack));
        assert_eq!(m.range_type(2 * MIB, 0x2000), None);
        assert_eq!(m.range_type(4 * GIB, GIB), Some(WriteBack));
        // The same pages WB: uniform, which a 2 MiB range can tell and a
        // 1 GiB range would take too many steps to.
        let odd_wb = (odd.0 | WriteBack as u64, odd.1);
        let m = mtrrs(def_type::ENABLE | WriteBack as u64, &[odd_wb]);
        assert_eq!(m.range_type(2 * MIB, 2 * MIB), Some(WriteBack));
        assert_eq!(m.range_type(0, GIB), None);
    }
}
