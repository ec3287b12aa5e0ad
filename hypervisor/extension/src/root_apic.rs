//! The root's writes to its local APIC. The xAPIC page is read-only in the
//! root's nested tables and the x2APIC ICR write exits, so every IPI the
//! root sends passes the microkernel's check (`kernel::ipi_guard`: no INIT
//! or SIPI to a CPU in MicroV). An xAPIC write arrives as a nested page
//! fault: MicroV reads the instruction (`RootFetch`), decodes the store,
//! has the microkernel carry it out (`ApicWrite`) and moves past it.
//!
//! Linux writes APIC registers with a 32-bit `mov` from a register or of an
//! immediate; those are the forms decoded here. Anything else (another
//! width, a read-modify-write, a string instruction, 32-bit code) gets #GP:
//! no root MicroV supports issues one.

use microv_abi::launch::gpr;
use microv_abi::syscall::VsRegs;
use microv_arch::apic;
use microv_arch::svm::{event, vector, Vmcb};

use crate::host::{ApicOutcome, Host};

/// Longest x86 instruction.
const MAX_INSN: usize = 15;
/// CS attribute bit of a 64-bit code segment (VMCB attribute format).
const CS_L: u16 = 1 << 9;

/// A decoded 32-bit store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    pub value: u32,
    pub len: u64,
}

/// Why an instruction is not emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// Not a 32-bit `mov` to memory.
    Form,
    /// The bytes ran out before the instruction did.
    Truncated,
}

/// Decodes a 64-bit-mode `mov r/m32, r32` (0x89) or `mov r/m32, imm32`
/// (0xC7 /0) to memory; `reg(n)` is general register `n`'s value.
pub fn decode_store(bytes: &[u8], reg: &dyn Fn(usize) -> u64) -> Result<Store, Unsupported> {
    let byte = |i: usize| bytes.get(i).copied().ok_or(Unsupported::Truncated);
    let mut i = 0;
    // Segment overrides and the address-size prefix change only where the
    // store goes, which the fault already told.
    while matches!(byte(i)?, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x67) {
        i += 1;
    }
    let mut rex = 0;
    if byte(i)? & 0xf0 == 0x40 {
        rex = byte(i)?;
        i += 1;
    }
    // REX.W would make it a 64-bit store.
    if rex & 0x08 != 0 {
        return Err(Unsupported::Form);
    }
    let opcode = byte(i)?;
    let modrm = byte(i + 1)?;
    i += 2;
    let (mode, reg_field, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if mode == 3 || !(opcode == 0x89 || (opcode == 0xc7 && reg_field == 0)) {
        return Err(Unsupported::Form);
    }
    if rm == 4 {
        let sib = byte(i)?;
        i += 1;
        if mode == 0 && sib & 7 == 5 {
            i += 4;
        }
    }
    i += match (mode, rm) {
        (0, 5) => 4, // RIP-relative
        (1, _) => 1,
        (2, _) => 4,
        _ => 0,
    };
    let value = if opcode == 0xc7 {
        let imm: [u8; 4] = bytes
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or(Unsupported::Truncated)?;
        i += 4;
        u32::from_le_bytes(imm)
    } else {
        if i > bytes.len() {
            return Err(Unsupported::Truncated);
        }
        let index = usize::from(reg_field | ((rex & 0x04) << 1));
        reg(index) as u32
    };
    if i > MAX_INSN {
        return Err(Unsupported::Form);
    }
    Ok(Store { value, len: i as u64 })
}

/// Handles the root's write fault on its APIC page at `gpa`: the store is
/// carried out (or refused) and the root moves past it, or it gets #GP.
pub fn xapic_write(
    vmcb: &mut Vmcb,
    gprs: &VsRegs,
    gpa: u64,
    cpu: usize,
    host: &mut dyn Host,
) {
    let rip = vmcb.save.rip;
    if vmcb.control.exit_int_info & event::VALID != 0 {
        // Event delivery wrote to the APIC page (a stack placed there):
        // no instruction to emulate. The event is delivered again and
        // faults again; the root only stalls its own CPU, as it chose.
        host.log(format_args!(
            "cpu {cpu}: root event delivery wrote its APIC page at {gpa:#x} (rip {rip:#x}): not emulated"
        ));
        return;
    }
    let reg = |n: usize| match n {
        gpr::RAX => vmcb.save.rax,
        gpr::RSP => vmcb.save.rsp,
        _ => gprs.gprs.get(n).copied().unwrap_or(0),
    };
    // Linux's stores fit in the first 8 bytes: the next 8 are fetched (a
    // second walk of the root's tables) only for a longer instruction.
    let mut bytes = [0u8; 16];
    let mut valid = 0;
    let mut store = Err(Unsupported::Truncated);
    if vmcb.save.cs.attrib & CS_L != 0 {
        for half in 0..2 {
            let (word, n) = host.root_fetch(rip.wrapping_add(8 * half as u64));
            if let Some(dst) = bytes.get_mut(8 * half..8 * half + 8) {
                dst.copy_from_slice(&word.to_le_bytes());
            }
            valid += n;
            store = decode_store(bytes.get(..valid).unwrap_or_default(), &reg);
            if n < 8 || store != Err(Unsupported::Truncated) {
                break;
            }
        }
    }
    let offset = (gpa & (apic::PAGE_SIZE - 1)) as u32;
    let Ok(store) = store else {
        host.log(format_args!(
            "cpu {cpu}: root APIC write at {gpa:#x} by an instruction MicroV does not emulate (rip {rip:#x}): #GP"
        ));
        vmcb.control.event_inj = event::exception_with_code(vector::GP, 0);
        return;
    };
    if carry_out(host, offset, u64::from(store.value), false) {
        crate::exit::advance(vmcb, rip.wrapping_add(store.len));
    } else {
        vmcb.control.event_inj = event::exception_with_code(vector::GP, 0);
    }
}

/// Has the microkernel carry out the root's write of `value` to APIC
/// register `offset` (`x2apic`: the x2APIC ICR); false if it is no register
/// write, which gets #GP. A refused write is dropped, loudly: a root that
/// tries one is attacking MicroV.
pub fn carry_out(host: &mut dyn Host, offset: u32, value: u64, x2apic: bool) -> bool {
    match host.apic_write(offset, value, x2apic) {
        ApicOutcome::Written => true,
        ApicOutcome::Refused => {
            host.log(format_args!(
                "refused the root's write of {value:#x} to APIC register {offset:#x}{}: an INIT or SIPI to a CPU in MicroV, or an APIC ID change",
                if x2apic { " (x2APIC)" } else { "" }
            ));
            true
        }
        ApicOutcome::Invalid => {
            host.log(format_args!(
                "root APIC write to register {offset:#x}{} is not one its APIC takes: #GP",
                if x2apic { " (x2APIC)" } else { "" }
            ));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(n: usize) -> u64 {
        0x1111_0000_0000_0000 | (n as u64) << 8 | 0xaa
    }

    fn ok(bytes: &[u8]) -> Store {
        decode_store(bytes, &regs).unwrap()
    }

    #[test]
    fn decodes_linux_apic_stores() {
        // mov %esi,(%rax)  — native_apic_mem_write's usual form.
        assert_eq!(ok(&[0x89, 0x30]), Store { value: 0x6aa, len: 2 });
        // mov %r9d,0xb0(%rdx)
        assert_eq!(ok(&[0x44, 0x89, 0x8a, 0xb0, 0, 0, 0]), Store { value: 0x9aa, len: 7 });
        // mov %eax,-0xa03000(,%rcx,1) style: SIB, disp32
        assert_eq!(ok(&[0x89, 0x04, 0x0d, 0, 0xd0, 0x5f, 0xff]).len, 7);
        // SIB with disp8, and a disp8 without SIB
        assert_eq!(ok(&[0x89, 0x44, 0x24, 0x10]).len, 4);
        assert_eq!(ok(&[0x89, 0x47, 0x10]).len, 3);
        // SIB with no base and mod 0: disp32.
        assert_eq!(ok(&[0x89, 0x04, 0x25, 0xb0, 0x00, 0xe0, 0xfe]).len, 7);
        // movl $0x0,0xb0(%rax) and a RIP-relative immediate store.
        assert_eq!(
            ok(&[0xc7, 0x80, 0xb0, 0, 0, 0, 0x78, 0x56, 0x34, 0x12]),
            Store { value: 0x1234_5678, len: 10 }
        );
        assert_eq!(ok(&[0xc7, 0x05, 1, 2, 3, 4, 0xfd, 0, 0, 0]), Store { value: 0xfd, len: 10 });
        // Prefixes: GS override, address size.
        assert_eq!(ok(&[0x65, 0x67, 0x89, 0x30]).len, 4);
    }

    #[test]
    fn refuses_other_forms_and_short_bytes() {
        for bad in [
            &[0x48u8, 0x89, 0x30][..], // 64-bit store
            &[0x66, 0x89, 0x30],       // 16-bit store
            &[0x87, 0x30],             // xchg
            &[0x89, 0xc0],             // register to register
            &[0xc7, 0x48, 0, 0, 0, 0, 0], // C7 with reg field 1
            &[0xf3, 0xa5],             // rep movs
        ] {
            assert_eq!(decode_store(bad, &regs), Err(Unsupported::Form), "{bad:x?}");
        }
        for short in [&[][..], &[0x89], &[0x89, 0x80, 0xb0], &[0xc7, 0x00, 1, 2]] {
            assert_eq!(decode_store(short, &regs), Err(Unsupported::Truncated), "{short:x?}");
        }
        // Fifteen prefixes and more: no x86 instruction is that long.
        let mut long = [0x3eu8; 16];
        long[14] = 0x89;
        long[15] = 0x30;
        assert_eq!(ok(&long[1..]).len, 15);
        assert_eq!(decode_store(&long, &regs), Err(Unsupported::Form));
    }
}
