//! MMIO exits arrive undecoded (RIP at the instruction, no decode assists),
//! so the VMM decodes the instruction from guest memory (`iced-x86`) to
//! learn the access's size and value, and completes it through the
//! registers: a read's value goes into the destination register, RIP moves
//! past the instruction, and MicroV loads the registers at the next run.
//!
//! Emulated: `mov` loads and stores of 8, 16, 32 and 64 bits (registers,
//! including AH–BH, and immediates; the `moffs` forms too) and `movzx`,
//! `movsx` and `movsxd` loads: what Linux's `readb`…`writeq` compile to.
//! Anything else touching MMIO is refused with the instruction's name.
//!
//! Accesses to the xAPIC page (`run::APIC_MMIO_BASE`) are not the VMM's
//! devices' but MicroV's local APIC's: [`decode_apic`] turns them into the
//! run page's `RunApic` (32-bit `mov` loads and stores only).

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use microv_abi::run::{RunApic, RunRegs};

use super::guest::GuestPhys;
use super::insn::Fetched;
pub use super::insn::Refusal;

/// How a register is written (x86-64 rules): 32-bit writes zero the upper
/// half, 8- and 16-bit writes keep the other bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Low8,
    /// AH, CH, DH, BH.
    High8,
    Low16,
    Low32,
    Full,
}

impl Part {
    fn get(self, r: u64) -> u64 {
        match self {
            Part::Low8 => r & 0xff,
            Part::High8 => (r >> 8) & 0xff,
            Part::Low16 => r & 0xffff,
            Part::Low32 => r & 0xffff_ffff,
            Part::Full => r,
        }
    }

    fn put(self, old: u64, v: u64) -> u64 {
        match self {
            Part::Low8 => (old & !0xff) | (v & 0xff),
            Part::High8 => (old & !0xff00) | ((v & 0xff) << 8),
            Part::Low16 => (old & !0xffff) | (v & 0xffff),
            Part::Low32 => v & 0xffff_ffff,
            Part::Full => v,
        }
    }
}

/// A general register: its index in `RunRegs::gprs` and the part named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gpr {
    index: usize,
    part: Part,
}

fn gpr(r: Register) -> Option<Gpr> {
    if !r.is_gpr() {
        return None;
    }
    let part = match (r.size(), r) {
        (1, Register::AH | Register::CH | Register::DH | Register::BH) => Part::High8,
        (1, _) => Part::Low8,
        (2, _) => Part::Low16,
        (4, _) => Part::Low32,
        _ => Part::Full,
    };
    let index = (r.full_register() as usize).checked_sub(Register::RAX as usize)?;
    (index < 16).then_some(Gpr { index, part })
}

/// How a loaded value reaches its register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Extend {
    Zero,
    Sign,
}

/// What finishing the instruction takes, at the next run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// A read's destination register and how the value is extended.
    dest: Option<(Gpr, Extend)>,
    /// The instruction's length.
    len: u64,
    /// RIP wraps at the code size.
    ip_mask: u64,
}

impl Completion {
    /// Completes the instruction in `regs`: for a read, `data` (the value
    /// read, little-endian, the access's size) goes into the destination
    /// register; RIP moves past the instruction.
    pub fn apply(&self, regs: &mut RunRegs, data: &[u8]) {
        if let Some((reg, extend)) = self.dest {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(data) {
                *d = *s;
            }
            let mut v = u64::from_le_bytes(b);
            let bits = (data.len().min(8) * 8) as u32;
            if extend == Extend::Sign && bits > 0 && bits < 64 {
                let shift = 64 - bits;
                v = (((v << shift) as i64) >> shift) as u64;
            }
            if let Some(r) = regs.gprs.get_mut(reg.index) {
                *r = reg.part.put(*r, v);
            }
        }
        regs.rip = regs.rip.wrapping_add(self.len) & self.ip_mask;
    }
}

/// A decoded MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read of `size` bytes.
    Read { size: usize, completion: Completion },
    /// A write of `data[..size]`.
    Write {
        data: [u8; 8],
        size: usize,
        completion: Completion,
    },
}

impl Access {
    pub fn is_write(&self) -> bool {
        matches!(self, Access::Write { .. })
    }
}

impl Fetched {
    /// RIP past the instruction and, for a read, the register the VMM loads.
    fn completion(&self, dest: Option<(Gpr, Extend)>) -> Completion {
        Completion {
            dest,
            len: self.len(),
            ip_mask: self.ip_mask(),
        }
    }
}

/// Decodes the instruction at the guest's CS:RIP that touched MMIO.
pub fn decode<M: GuestPhys + ?Sized>(mem: &M, regs: &RunRegs) -> Result<Access, Refusal> {
    let f = Fetched::at(mem, regs)?;
    let insn = &f.insn;
    let completion = |dest| f.completion(dest);
    let refuse = || {
        format!(
            "MMIO by {} is not emulated (only mov, movzx, movsx, movsxd)",
            f.describe()
        )
    };
    let size = insn.memory_size().size();
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(refuse());
    }
    let kinds = (insn.op_count(), insn.op0_kind(), op1_kind(insn));
    match (insn.mnemonic(), kinds) {
        (Mnemonic::Mov, (2, OpKind::Memory, OpKind::Register)) => {
            let src = gpr(insn.op1_register()).ok_or_else(refuse)?;
            let value = src.part.get(regs.gprs.get(src.index).copied().unwrap_or(0));
            Ok(write(value, size, completion(None)))
        }
        (Mnemonic::Mov, (2, OpKind::Memory, k)) if is_immediate(k) => {
            Ok(write(insn.immediate(1), size, completion(None)))
        }
        (Mnemonic::Mov, (2, OpKind::Register, OpKind::Memory)) => load(insn, Extend::Zero)
            .map(|d| Access::Read {
                size,
                completion: completion(Some(d)),
            })
            .ok_or_else(refuse),
        (
            m @ (Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd),
            (2, OpKind::Register, OpKind::Memory),
        ) => {
            let extend = if m == Mnemonic::Movzx {
                Extend::Zero
            } else {
                Extend::Sign
            };
            load(insn, extend)
                .map(|d| Access::Read {
                    size,
                    completion: completion(Some(d)),
                })
                .ok_or_else(refuse)
        }
        _ => Err(refuse()),
    }
}

/// An access to the xAPIC page, decoded for MicroV's local APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicAccess {
    /// What `request::APIC_ACCESS` hands MicroV.
    pub apic: RunApic,
    /// RIP past the instruction; a read's register is MicroV's to load
    /// (after `request::SET_REGS`), so the completion loads none.
    pub completion: Completion,
}

/// Decodes the instruction at the guest's CS:RIP that touched the xAPIC
/// page at `offset` (its gpa − `run::APIC_MMIO_BASE`).
pub fn decode_apic<M: GuestPhys + ?Sized>(
    mem: &M,
    regs: &RunRegs,
    offset: u32,
) -> Result<ApicAccess, Refusal> {
    apic_access(&Fetched::at(mem, regs)?, regs, offset)
}

/// MicroV's local APIC takes 32-bit accesses only, as the xAPIC
/// architecture defines its registers and as Linux reaches them
/// (`native_apic_mem_read`/`_write`): `mov r32, [mem]`, `mov [mem], r32`,
/// `mov dword [mem], imm32` and the `moffs` forms with EAX. Anything else
/// (other widths, `movzx`/`movsxd`, read-modify-write, string instructions)
/// is refused by name.
fn apic_access(f: &Fetched, regs: &RunRegs, offset: u32) -> Result<ApicAccess, Refusal> {
    let insn = &f.insn;
    let refuse = || {
        format!(
            "{} touched the xAPIC page at offset {offset:#x}; MicroV's local APIC takes \
             32-bit mov loads and stores only",
            f.describe()
        )
    };
    let memory_op = |n: u32| insn.op_count() == 2 && insn.op_kind(n) == OpKind::Memory;
    let mut apic = RunApic {
        offset,
        ..RunApic::zeroed()
    };
    match insn.code() {
        Code::Mov_rm32_r32 | Code::Mov_moffs32_EAX if memory_op(0) => {
            let src = gpr(insn.op1_register()).ok_or_else(refuse)?;
            let value = regs.gprs.get(src.index).copied().unwrap_or(0);
            apic.write = 1;
            apic.value = Part::Low32.get(value) as u32;
        }
        Code::Mov_rm32_imm32 if memory_op(0) => {
            apic.write = 1;
            apic.value = insn.immediate32();
        }
        Code::Mov_r32_rm32 | Code::Mov_EAX_moffs32 if memory_op(1) => {
            let dest = gpr(insn.op0_register()).ok_or_else(refuse)?;
            apic.gpr = u32::try_from(dest.index).map_err(|_| refuse())?;
        }
        _ => return Err(refuse()),
    }
    Ok(ApicAccess {
        apic,
        completion: f.completion(None),
    })
}

fn op1_kind(insn: &Instruction) -> OpKind {
    if insn.op_count() > 1 {
        insn.op1_kind()
    } else {
        OpKind::Register
    }
}

fn is_immediate(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate32 | OpKind::Immediate32to64
    )
}

fn load(insn: &Instruction, extend: Extend) -> Option<(Gpr, Extend)> {
    gpr(insn.op0_register()).map(|g| (g, extend))
}

fn write(value: u64, size: usize, completion: Completion) -> Access {
    Access::Write {
        data: value.to_le_bytes(),
        size,
        completion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::microv::guest::tests::{long_mode, memory, paged, put, real_mode};
    use crate::backend::microv::regs::gpr::{RAX, RBX, RCX, RDX};
    use microv_abi::run::RunApic;

    const RIP: u64 = 0xffff_8000_0040_1000;
    const R8: usize = 8;
    const R15: usize = 15;

    /// Decodes `code` at RIP in 64-bit mode with paging.
    fn decode64(code: &[u8], gprs: &[(usize, u64)]) -> (Result<Access, Refusal>, RunRegs) {
        let mem = memory(1 << 22);
        let mut regs = long_mode(paged(&mem), RIP);
        put(&mem, 0x5000, code);
        for &(i, v) in gprs {
            regs.gprs[i] = v;
        }
        (decode(&mem, &regs), regs)
    }

    fn read_then_complete(code: &[u8], data: &[u8], before: u64, reg: usize) -> u64 {
        let (access, mut regs) = decode64(code, &[(reg, before)]);
        let Ok(Access::Read { size, completion }) = access else {
            panic!("{access:?}");
        };
        assert_eq!(size, data.len(), "{code:02x?}");
        completion.apply(&mut regs, data);
        assert_eq!(regs.rip, RIP + code.len() as u64, "{code:02x?}");
        regs.gprs[reg]
    }

    fn written(code: &[u8], gprs: &[(usize, u64)]) -> Vec<u8> {
        let (access, mut regs) = decode64(code, gprs);
        let Ok(Access::Write {
            data,
            size,
            completion,
        }) = access
        else {
            panic!("{access:?}");
        };
        let before = regs.gprs;
        completion.apply(&mut regs, &[]);
        assert_eq!(regs.gprs, before, "a write changes no register");
        assert_eq!(regs.rip, RIP + code.len() as u64);
        data[..size].to_vec()
    }

    const OLD: u64 = 0x1122_3344_5566_7788;

    #[test]
    fn mov_loads_follow_the_register_rules() {
        // mov al, [rdi]
        assert_eq!(
            read_then_complete(&[0x8a, 0x07], &[0xab], OLD, RAX),
            0x1122_3344_5566_77ab
        );
        // mov ah, [rdi]
        assert_eq!(
            read_then_complete(&[0x8a, 0x27], &[0xab], OLD, RAX),
            0x1122_3344_5566_ab88
        );
        // mov r15b, [rdi]
        assert_eq!(
            read_then_complete(&[0x44, 0x8a, 0x3f], &[0xab], OLD, R15),
            0x1122_3344_5566_77ab
        );
        // mov cx, [rdi]
        assert_eq!(
            read_then_complete(&[0x66, 0x8b, 0x0f], &[0xcd, 0xab], OLD, RCX),
            0x1122_3344_5566_abcd
        );
        // mov edx, [rdi+0x10]: zero-extends
        assert_eq!(
            read_then_complete(&[0x8b, 0x57, 0x10], &[1, 2, 3, 4], OLD, RDX),
            0x0403_0201
        );
        // mov r8, [rdi]
        assert_eq!(
            read_then_complete(&[0x4c, 0x8b, 0x07], &[1, 2, 3, 4, 5, 6, 7, 8], OLD, R8),
            0x0807_0605_0403_0201
        );
        // mov eax, [moffs64]
        let moffs = [0xa1, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0];
        assert_eq!(
            read_then_complete(&moffs, &[0xff; 4], OLD, RAX),
            0xffff_ffff
        );
    }

    #[test]
    fn movzx_and_movsx_extend() {
        // movzx eax, byte [rdi]
        assert_eq!(
            read_then_complete(&[0x0f, 0xb6, 0x07], &[0x80], OLD, RAX),
            0x80
        );
        // movzx ax, byte [rdi]: keeps bits 16-63
        assert_eq!(
            read_then_complete(&[0x66, 0x0f, 0xb6, 0x07], &[0x80], OLD, RAX),
            0x1122_3344_5566_0080
        );
        // movzx rbx, word [rdi]
        assert_eq!(
            read_then_complete(&[0x48, 0x0f, 0xb7, 0x1f], &[0, 0x80], OLD, RBX),
            0x8000
        );
        // movsx eax, byte [rdi]
        assert_eq!(
            read_then_complete(&[0x0f, 0xbe, 0x07], &[0x80], OLD, RAX),
            0xffff_ff80
        );
        // movsx rax, word [rdi]
        assert_eq!(
            read_then_complete(&[0x48, 0x0f, 0xbf, 0x07], &[0, 0x80], OLD, RAX),
            0xffff_ffff_ffff_8000
        );
        // movsx ax, byte [rdi]
        assert_eq!(
            read_then_complete(&[0x66, 0x0f, 0xbe, 0x07], &[0x7f], OLD, RAX),
            0x1122_3344_5566_007f
        );
        // movsxd rax, dword [rdi]
        assert_eq!(
            read_then_complete(&[0x48, 0x63, 0x07], &[0, 0, 0, 0x80], OLD, RAX),
            0xffff_ffff_8000_0000
        );
    }

    #[test]
    fn mov_stores_take_registers_and_immediates() {
        // mov [rdi], al / ah / bx / ecx / r8
        assert_eq!(written(&[0x88, 0x07], &[(RAX, OLD)]), [0x88]);
        assert_eq!(written(&[0x88, 0x27], &[(RAX, OLD)]), [0x77]);
        assert_eq!(written(&[0x66, 0x89, 0x1f], &[(RBX, OLD)]), [0x88, 0x77]);
        assert_eq!(
            written(&[0x89, 0x0f], &[(RCX, OLD)]),
            [0x88, 0x77, 0x66, 0x55]
        );
        assert_eq!(
            written(&[0x4c, 0x89, 0x07], &[(R8, OLD)]),
            OLD.to_le_bytes()
        );
        // mov byte [rdi], 0x12 / word [rdi], 0x1234 / dword [rdi], 0x12345678
        assert_eq!(written(&[0xc6, 0x07, 0x12], &[]), [0x12]);
        assert_eq!(written(&[0x66, 0xc7, 0x07, 0x34, 0x12], &[]), [0x34, 0x12]);
        assert_eq!(
            written(&[0xc7, 0x07, 0x78, 0x56, 0x34, 0x12], &[]),
            [0x78, 0x56, 0x34, 0x12]
        );
        // mov qword [rdi], -1 (imm32 sign-extended)
        assert_eq!(
            written(&[0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff], &[]),
            [0xff; 8]
        );
        // mov [moffs64], al
        assert_eq!(
            written(&[0xa2, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0], &[(RAX, OLD)]),
            [0x88]
        );
    }

    #[test]
    fn real_mode_stores_and_loads_wrap_ip() {
        let mem = memory(1 << 20);
        // At 1000:fffd: mov [bx], al (88 07)
        put(&mem, 0x1fffd, &[0x88, 0x07]);
        let mut regs = real_mode(0x1000, 0xfffd);
        regs.gprs[RAX] = 0x42;
        let Ok(Access::Write {
            data,
            size,
            completion,
        }) = decode(&mem, &regs)
        else {
            panic!();
        };
        assert_eq!((data[0], size), (0x42, 1));
        completion.apply(&mut regs, &[]);
        assert_eq!(regs.rip, 0xffff);
        // mov eax, [bx] with an operand-size prefix, at the top of the segment.
        put(&mem, 0x1fffc, &[0x66, 0x8b, 0x07]);
        let mut regs = real_mode(0x1000, 0xfffc);
        let Ok(Access::Read { size, completion }) = decode(&mem, &regs) else {
            panic!();
        };
        assert_eq!(size, 4);
        completion.apply(&mut regs, &[1, 0, 0, 0]);
        assert_eq!((regs.rip, regs.gprs[RAX]), (0xffff, 1));
    }

    #[test]
    fn protected_mode_wraps_at_4_gib() {
        let mem = memory(1 << 20);
        put(&mem, 0x3000, &[0x8b, 0x07]); // mov eax, [edi]
        let mut regs = real_mode(0, 0x3000);
        regs.cr0 = 1;
        regs.cs.attributes |= 1 << 10; // D/B: 32-bit code
        let Ok(Access::Read { size, completion }) = decode(&mem, &regs) else {
            panic!();
        };
        assert_eq!(size, 4);
        regs.rip = 0xffff_ffff;
        completion.apply(&mut regs, &[9, 0, 0, 0]);
        assert_eq!((regs.rip, regs.gprs[RAX]), (1, 9));
    }

    fn refusal(code: &[u8]) -> String {
        match decode64(code, &[]).0 {
            Err(r) => r,
            Ok(a) => panic!("{code:02x?} decoded as {a:?}"),
        }
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        let r = refusal(&[0x01, 0x07]); // add [rdi], eax
        assert!(r.contains("Add_rm32_r32") && r.contains("01 07"), "{r}");
        assert!(refusal(&[0xf3, 0xa4]).contains("Movsb"), "rep movsb");
        assert!(refusal(&[0x87, 0x07]).contains("Xchg"));
        assert!(
            refusal(&[0x8c, 0x1f]).contains("Mov_r32m16_Sreg"),
            "mov [rdi], ds"
        );
        assert!(
            refusal(&[0x8e, 0x1f]).contains("Mov_Sreg_r32m16"),
            "mov ds, [rdi]"
        );
        assert!(
            refusal(&[0x0f, 0xb6, 0xc3]).contains("Movzx"),
            "movzx eax, bl"
        );
        assert!(refusal(&[0xf4]).contains("Hlt"), "no operands");
        assert!(refusal(&[0x0f, 0x0b]).contains("Ud2"));
        assert!(refusal(&[0x0f, 0x10, 0x07]).contains("Movups"), "16 bytes");
        assert!(
            refusal(&[0x0f, 0x18, 0x07]).contains("Prefetch"),
            "one memory operand"
        );
        // Truncated by the end of the mapping.
        let mem = memory(1 << 22);
        put(&mem, 0x5fff, &[0x8b]);
        let regs = long_mode(paged(&mem), RIP + 0xfff);
        let r = decode(&mem, &regs).unwrap_err();
        assert!(r.contains("(8b) are no valid 64-bit instruction"), "{r}");
        // Nothing to read at RIP.
        let regs = long_mode(paged(&mem), 0x1000);
        let r = decode(&mem, &regs).unwrap_err();
        assert!(
            r.contains("cannot read the instruction at rip 0x1000"),
            "{r}"
        );
    }

    /// Decodes `code` at RIP (64-bit, paged) as an access at xAPIC `offset`
    /// and completes it.
    fn apic64(code: &[u8], gprs: &[(usize, u64)], offset: u32) -> Result<RunApic, Refusal> {
        let mem = memory(1 << 22);
        let mut regs = long_mode(paged(&mem), RIP);
        put(&mem, 0x5000, code);
        for &(i, v) in gprs {
            regs.gprs[i] = v;
        }
        let a = decode_apic(&mem, &regs, offset)?;
        let before = regs.gprs;
        a.completion.apply(&mut regs, &[]);
        assert_eq!(regs.rip, RIP + code.len() as u64, "{code:02x?}");
        assert_eq!(regs.gprs, before, "MicroV loads a read's register");
        Ok(a.apic)
    }

    fn apic_read(offset: u32, gpr: u32) -> RunApic {
        RunApic {
            offset,
            write: 0,
            value: 0,
            gpr,
        }
    }

    fn apic_write(offset: u32, value: u32) -> RunApic {
        RunApic {
            offset,
            write: 1,
            value,
            gpr: 0,
        }
    }

    #[test]
    fn apic_loads_name_their_register() {
        let junk = [(RAX, OLD), (R8, OLD), (R15, OLD)];
        for (code, gpr) in [
            (&[0x8b, 0x07][..], 0),                        // mov eax, [rdi]
            (&[0x8b, 0x0f], 1),                            // mov ecx, [rdi]
            (&[0x8b, 0x57, 0x20], 2),                      // mov edx, [rdi+0x20]
            (&[0x8b, 0x1f], 3),                            // mov ebx, [rdi]
            (&[0x8b, 0x27], 4),                            // mov esp, [rdi]
            (&[0x8b, 0x2f], 5),                            // mov ebp, [rdi]
            (&[0x8b, 0x37], 6),                            // mov esi, [rdi]
            (&[0x8b, 0x38], 7),                            // mov edi, [rax]
            (&[0x44, 0x8b, 0x07], 8),                      // mov r8d, [rdi]
            (&[0x44, 0x8b, 0x0f], 9),                      // mov r9d, [rdi]
            (&[0x45, 0x8b, 0x58, 0x30], 11),               // mov r11d, [r8+0x30]
            (&[0x44, 0x8b, 0x7f, 0x30], 15),               // mov r15d, [rdi+0x30]
            (&[0x8b, 0x04, 0x25, 0x30, 0, 0xe0, 0xfe], 0), // mov eax, [0xfee00030]
            (&[0xa1, 0x30, 0, 0xe0, 0xfe, 0, 0, 0, 0], 0), // mov eax, [moffs64]
        ] {
            assert_eq!(
                apic64(code, &junk, 0x30),
                Ok(apic_read(0x30, gpr)),
                "{code:02x?}"
            );
        }
    }

    #[test]
    fn apic_stores_take_32_bits_of_a_register_or_an_immediate() {
        let regs = [
            (RDX, 0xdead_beef_0000_00ef),
            (R8, 0x1_0000_0020),
            (RAX, OLD),
        ];
        // mov [rdi+0xb0], edx: the low half only
        assert_eq!(
            apic64(&[0x89, 0x97, 0xb0, 0, 0, 0], &regs, 0xb0),
            Ok(apic_write(0xb0, 0xef))
        );
        // mov [rdi], r8d
        assert_eq!(
            apic64(&[0x44, 0x89, 0x07], &regs, 0x380),
            Ok(apic_write(0x380, 0x20))
        );
        // mov dword [rdi+0x300], 0xc4500
        assert_eq!(
            apic64(&[0xc7, 0x87, 0, 3, 0, 0, 0, 0x45, 0x0c, 0], &regs, 0x300),
            Ok(apic_write(0x300, 0xc4500))
        );
        // mov dword [rdi], 0xffffffff
        assert_eq!(
            apic64(&[0xc7, 0x07, 0xff, 0xff, 0xff, 0xff], &regs, 0xf0),
            Ok(apic_write(0xf0, 0xffff_ffff))
        );
        // mov [moffs64], eax
        assert_eq!(
            apic64(&[0xa3, 0xb0, 0, 0xe0, 0xfe, 0, 0, 0, 0], &regs, 0xb0),
            Ok(apic_write(0xb0, 0x5566_7788))
        );
    }

    #[test]
    fn apic_accesses_in_16_bit_code_wrap_ip() {
        let mem = memory(1 << 20);
        // At 1000:fffd: mov [bx], eax (66 89 07)
        put(&mem, 0x1fffd, &[0x66, 0x89, 0x07]);
        let mut regs = real_mode(0x1000, 0xfffd);
        regs.gprs[RAX] = OLD;
        let a = decode_apic(&mem, &regs, 0x80).unwrap();
        assert_eq!(a.apic, apic_write(0x80, 0x5566_7788));
        a.completion.apply(&mut regs, &[]);
        assert_eq!(regs.rip, 0);
    }

    #[test]
    fn other_apic_accesses_are_refused_by_name() {
        for (code, name) in [
            (&[0x88, 0x07][..], "Mov_rm8_r8"),     // mov [rdi], al
            (&[0x8a, 0x07], "Mov_r8_rm8"),         // mov al, [rdi]
            (&[0x66, 0x89, 0x07], "Mov_rm16_r16"), // mov [rdi], ax
            (&[0x66, 0x8b, 0x07], "Mov_r16_rm16"), // mov ax, [rdi]
            (&[0x48, 0x89, 0x07], "Mov_rm64_r64"), // mov [rdi], rax
            (&[0x48, 0x8b, 0x07], "Mov_r64_rm64"), // mov rax, [rdi]
            (&[0x48, 0xc7, 0x07, 1, 0, 0, 0], "Mov_rm64_imm32"), // mov qword [rdi], 1
            (&[0xc6, 0x07, 1], "Mov_rm8_imm8"),    // mov byte [rdi], 1
            (&[0x0f, 0xb7, 0x07], "Movzx_r32_rm16"), // movzx eax, word [rdi]
            (&[0x63, 0x07], "Movsxd_r32_rm32"),    // movsxd eax, dword [rdi]
            (&[0x48, 0x63, 0x07], "Movsxd_r64_rm32"), // movsxd rax, dword [rdi]
            (&[0x01, 0x07], "Add_rm32_r32"),       // add [rdi], eax
            (&[0x81, 0x0f, 0, 1, 0, 0], "Or_rm32_imm32"), // or dword [rdi], 0x100
            (&[0x87, 0x07], "Xchg_rm32_r32"),      // xchg [rdi], eax
            (&[0xa5], "Movsd_m32_m32"),            // movsd
            (&[0xf3, 0xab], "Stosd_m32_EAX"),      // rep stosd
            (&[0x0f, 0x10, 0x07], "Movups"),       // movups xmm0, [rdi]
        ] {
            let r = apic64(code, &[], 0x300).unwrap_err();
            assert!(r.contains(name), "{code:02x?}: {r}");
            assert!(r.contains(&super::super::insn::hex(code)), "{r}");
            assert!(r.contains("touched the xAPIC page at offset 0x300"), "{r}");
            assert!(r.contains(&format!("at rip {RIP:#x}")), "{r}");
        }
        // Nothing to decode.
        let mem = memory(1 << 22);
        let regs = long_mode(paged(&mem), 0x1000);
        let r = decode_apic(&mem, &regs, 0x300).unwrap_err();
        assert!(
            r.contains("cannot read the instruction at rip 0x1000"),
            "{r}"
        );
    }

    #[test]
    fn registers_map_to_x86_numbers() {
        assert_eq!(
            gpr(Register::AL),
            Some(Gpr {
                index: RAX,
                part: Part::Low8
            })
        );
        assert_eq!(
            gpr(Register::BH),
            Some(Gpr {
                index: RBX,
                part: Part::High8
            })
        );
        assert_eq!(
            gpr(Register::SPL),
            Some(Gpr {
                index: 4,
                part: Part::Low8
            })
        );
        assert_eq!(
            gpr(Register::R9W),
            Some(Gpr {
                index: 9,
                part: Part::Low16
            })
        );
        assert_eq!(
            gpr(Register::EDI),
            Some(Gpr {
                index: 7,
                part: Part::Low32
            })
        );
        assert_eq!(
            gpr(Register::R15),
            Some(Gpr {
                index: 15,
                part: Part::Full
            })
        );
        assert_eq!(gpr(Register::DS), None);
        assert_eq!(gpr(Register::XMM0), None);
        assert!(!Access::Read {
            size: 1,
            completion: Completion {
                dest: None,
                len: 1,
                ip_mask: u64::MAX
            }
        }
        .is_write());
    }
}
