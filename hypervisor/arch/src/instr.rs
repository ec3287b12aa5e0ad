//! Thin wrappers around the x86 instructions MicroV's images execute.
//!
//! Each privileged wrapper is `unsafe`: the caller must run at the privilege
//! level the instruction needs and must know that the effect (changing CR3,
//! loading a VMCB, …) is sound at that point. None of this code runs in host
//! unit tests.

use core::arch::asm;

use crate::cpuid::CpuidResult;

/// CPUID (usable at any privilege level).
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads an MSR.
///
/// # Safety
/// Ring 0 only; the MSR must exist on this CPU (else #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees ring 0 and an existing MSR.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
            options(nostack, preserves_flags, nomem))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// Ring 0 only; the MSR must exist and the value must be valid for it, and
/// the caller must own the effect.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees ring 0 and a valid MSR/value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags))
    };
}

macro_rules! read_control_register {
    ($read:ident, $reg:literal) => {
        /// Reads the control register.
        ///
        /// # Safety
        /// Ring 0 only.
        pub unsafe fn $read() -> u64 {
            let v: u64;
            // SAFETY: the caller guarantees ring 0.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
}
macro_rules! write_control_register {
    ($write:ident, $reg:literal) => {
        /// Writes the control register.
        ///
        /// # Safety
        /// Ring 0 only; the new value must keep the running code mapped and valid.
        pub unsafe fn $write(v: u64) {
            // SAFETY: the caller guarantees ring 0 and a valid value.
            unsafe { asm!(concat!("mov ", $reg, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
        }
    };
}
read_control_register!(read_cr2, "cr2");
read_control_register!(read_cr3, "cr3");
write_control_register!(write_cr0, "cr0");
write_control_register!(write_cr3, "cr3");
write_control_register!(write_cr4, "cr4");

/// Writes XCR0.
///
/// # Safety
/// Ring 0 with CR4.OSXSAVE set; `value` must pass
/// [`crate::xsave::xcr0_valid`] for this CPU, and no live register state may
/// depend on a component being switched off.
pub unsafe fn xsetbv0(value: u64) {
    // SAFETY: the caller guarantees the conditions above.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack, preserves_flags))
    };
}

/// Writes DR7.
///
/// # Safety
/// Ring 0; bits 63:32 clear. Armed breakpoints fire on the code they name.
pub unsafe fn write_dr7(value: u64) {
    // SAFETY: the caller guarantees the conditions above.
    unsafe { asm!("mov dr7, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// Drops the TLB entry of the page holding `va` on this CPU.
///
/// # Safety
/// Ring 0.
pub unsafe fn invlpg(va: u64) {
    // SAFETY: the caller guarantees ring 0; INVLPG only drops a TLB entry.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects; CR4.TSD is never set by MicroV.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Saves FS, GS, TR, LDTR and the syscall MSRs into the VMCB at `vmcb_pa`.
///
/// # Safety
/// EFER.SVME set, ring 0, `vmcb_pa` a page MicroV owns.
pub unsafe fn vmsave(vmcb_pa: u64) {
    // SAFETY: see the function's contract.
    unsafe { asm!("vmsave rax", in("rax") vmcb_pa, options(nostack, preserves_flags)) };
}

/// The VMX instructions. Each returns RFLAGS as the instruction left it:
/// `vmx::instruction_error::outcome` tells success, VMfailInvalid (CF) and
/// VMfailValid (ZF, with the error in the current VMCS).
pub mod vmx {
    use core::arch::asm;

    /// An instruction whose one operand is a physical address in memory
    /// (VMXON, VMCLEAR, VMPTRLD): the address goes on the stack.
    macro_rules! address_operand {
        ($(#[$doc:meta])* $name:ident, $insn:literal) => {
            $(#[$doc])*
            pub unsafe fn $name(pa: u64) -> u64 {
                let rflags: u64;
                // SAFETY: see the function's contract; the instruction
                // reads its 8-byte operand (the address) from the stack slot.
                unsafe {
                    asm!("push {pa}", concat!($insn, " [rsp]"), "pushfq", "pop {fl}", "add rsp, 8",
                        pa = in(reg) pa, fl = lateout(reg) rflags)
                };
                rflags
            }
        };
    }

    address_operand!(
        /// VMXON with the VMXON region at `pa`.
        ///
        /// # Safety
        /// Ring 0, CR4.VMXE set and CR0/CR4 within the fixed bits,
        /// IA32_FEATURE_CONTROL allowing VMX; the region is a page MicroV
        /// owns with the VMCS revision in its first word.
        vmxon, "vmxon"
    );
    address_operand!(
        /// VMCLEAR of the VMCS at `pa`: written back to memory, inactive.
        ///
        /// # Safety
        /// Ring 0 in VMX root operation; `pa` is a VMCS region MicroV owns.
        vmclear, "vmclear"
    );
    address_operand!(
        /// VMPTRLD: makes the VMCS at `pa` this CPU's current one.
        ///
        /// # Safety
        /// Ring 0 in VMX root operation; `pa` is a VMCS region MicroV owns
        /// with the revision in its first word, not current on another CPU.
        vmptrld, "vmptrld"
    );

    /// VMXOFF: leaves VMX operation.
    ///
    /// # Safety
    /// Ring 0 in VMX root operation; no VMCS of this CPU is needed again
    /// before the next VMXON (clear them first).
    pub unsafe fn vmxoff() -> u64 {
        let rflags: u64;
        // SAFETY: see the function's contract.
        unsafe { asm!("vmxoff", "pushfq", "pop {}", out(reg) rflags) };
        rflags
    }

    /// VMREAD of field `encoding` from the current VMCS: (value, RFLAGS).
    ///
    /// # Safety
    /// Ring 0 in VMX root operation.
    pub unsafe fn vmread(encoding: u32) -> (u64, u64) {
        let (value, rflags): (u64, u64);
        // SAFETY: see the function's contract; VMREAD only reads the VMCS.
        unsafe {
            asm!("vmread {v}, {e}", "pushfq", "pop {fl}",
                e = in(reg) u64::from(encoding), v = lateout(reg) value, fl = lateout(reg) rflags)
        };
        (value, rflags)
    }

    /// VMWRITE of `value` into field `encoding` of the current VMCS.
    ///
    /// # Safety
    /// Ring 0 in VMX root operation; the value is one the caller means the
    /// CPU to use at the next VM entry.
    pub unsafe fn vmwrite(encoding: u32, value: u64) -> u64 {
        let rflags: u64;
        // SAFETY: see the function's contract.
        unsafe {
            asm!("vmwrite {e}, {v}", "pushfq", "pop {fl}",
                e = in(reg) u64::from(encoding), v = in(reg) value, fl = lateout(reg) rflags)
        };
        rflags
    }
}

/// Writes one byte to an I/O port.
///
/// # Safety
/// Ring 0 (or IOPL); the port write must be harmless.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: see the function's contract.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Halts until the next interrupt (forever with interrupts and GIF off).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: HLT with interrupts masked only stops this CPU; used when
        // nothing safer is left to do.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only the unprivileged instructions can run in a host test.
    #[test]
    fn cpuid_reports_a_vendor_and_rdtsc_moves_forward() {
        let leaf0 = cpuid(0, 0);
        assert!(leaf0.eax >= 1, "highest basic leaf");
        assert_ne!((leaf0.ebx, leaf0.ecx, leaf0.edx), (0, 0, 0));
        let t0 = rdtsc();
        let t1 = rdtsc();
        assert!(t1 >= t0);
    }
}
