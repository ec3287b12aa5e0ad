//! XCR0 (the XSAVE state components the OS enabled) and the size of the
//! XSAVE area: what XSETBV accepts and how much memory a vCPU's FPU state
//! needs. Shared by the microkernel (world switch, promotion) and the
//! extension (the root's XSETBV exits), so both apply the same rule.

use crate::cpuid::CpuidResult;

pub const X87: u64 = 1 << 0;
pub const SSE: u64 = 1 << 1;
pub const AVX: u64 = 1 << 2;
pub const BNDREGS: u64 = 1 << 3;
pub const BNDCSR: u64 = 1 << 4;
pub const OPMASK: u64 = 1 << 5;
pub const ZMM_HI256: u64 = 1 << 6;
pub const HI16_ZMM: u64 = 1 << 7;
pub const XTILECFG: u64 = 1 << 17;
pub const XTILEDATA: u64 = 1 << 18;
/// The three AVX-512 components, which are enabled together or not at all.
pub const AVX512: u64 = OPMASK | ZMM_HI256 | HI16_ZMM;

/// XCR0 while host code runs: x87 and SSE (the precompiled `core` uses
/// SSE). The root's and guests' values are switched in and out around them.
pub const HOST_XCR0: u64 = X87 | SSE;

/// CPUID leaf of the XSAVE features (subleaf 0: XCR0 components and sizes).
pub const LEAF_XSAVE: u32 = 0xD;

/// The XCR0 bits the CPU supports: CPUID 0xD.0 EDX:EAX.
pub fn supported_xcr0(leaf_d0: CpuidResult) -> u64 {
    (u64::from(leaf_d0.edx) << 32) | u64::from(leaf_d0.eax)
}

/// Bytes of an XSAVE area holding every supported component: CPUID 0xD.0 ECX.
pub fn max_area_size(leaf_d0: CpuidResult) -> u64 {
    u64::from(leaf_d0.ecx)
}

/// True if XSETBV would accept `value` on a CPU supporting `supported`
/// (the architectural #GP conditions): only supported bits, x87 always on,
/// AVX needs SSE, the MPX pair and the AMX pair go together, and AVX-512
/// needs all three of its components and AVX.
pub fn xcr0_valid(value: u64, supported: u64) -> bool {
    let together = |set: u64| value & set == 0 || value & set == set;
    value & !supported == 0
        && value & X87 != 0
        && (value & AVX == 0 || value & SSE != 0)
        && together(BNDREGS | BNDCSR)
        && together(XTILECFG | XTILEDATA)
        && together(AVX512)
        && (value & AVX512 == 0 || value & AVX != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEN: u64 = X87 | SSE | AVX | (1 << 9);

    #[test]
    fn reads_cpuid() {
        let r = CpuidResult {
            eax: 0x207,
            ebx: 0x340,
            ecx: 0x988,
            edx: 0x1,
        };
        assert_eq!(supported_xcr0(r), 0x1_0000_0207);
        assert_eq!(max_area_size(r), 0x988);
    }

    #[test]
    fn accepts_what_xsetbv_accepts() {
        assert!(xcr0_valid(X87 | SSE, ZEN));
        assert!(xcr0_valid(X87, ZEN));
        assert!(xcr0_valid(ZEN, ZEN));
        assert!(xcr0_valid(HOST_XCR0, ZEN));
        let all = ZEN | AVX512 | BNDREGS | BNDCSR | XTILECFG | XTILEDATA;
        assert!(xcr0_valid(all, all));
    }

    #[test]
    fn refuses_what_xsetbv_refuses() {
        assert!(!xcr0_valid(0, ZEN), "x87 must stay on");
        assert!(!xcr0_valid(SSE, ZEN));
        assert!(!xcr0_valid(X87 | AVX, ZEN), "AVX without SSE");
        assert!(!xcr0_valid(ZEN | (1 << 62), ZEN), "unsupported bit");
        let all = ZEN | AVX512 | BNDREGS | BNDCSR | XTILECFG | XTILEDATA;
        assert!(!xcr0_valid(X87 | SSE | BNDREGS, all), "MPX pair split");
        assert!(!xcr0_valid(X87 | SSE | XTILEDATA, all), "AMX pair split");
        assert!(!xcr0_valid(ZEN | OPMASK, all), "AVX-512 partly on");
        assert!(!xcr0_valid(X87 | SSE | AVX512, all), "AVX-512 without AVX");
    }
}
