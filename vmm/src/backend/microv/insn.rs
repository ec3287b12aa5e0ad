//! The guest instruction an exit stopped at, fetched from guest memory and
//! decoded (`iced-x86`): MMIO and string I/O exits arrive undecoded (RIP at
//! the instruction, no decode assists), so the VMM learns the access from
//! the instruction itself.

use iced_x86::{Decoder, DecoderOptions, Instruction};
use microv_abi::run::RunRegs;

use super::guest::{code_bits, fetch, GuestPhys};

/// Why an instruction cannot be emulated: a sentence for the report.
pub type Refusal = String;

/// `bytes` as hex pairs: "66 89 07".
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The instruction at the guest's CS:RIP, decoded.
pub struct Fetched {
    pub insn: Instruction,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The code size: 16, 32 or 64.
    pub bits: u32,
}

impl Fetched {
    /// Fetches and decodes the instruction at CS:RIP.
    pub fn at<M: GuestPhys + ?Sized>(mem: &M, regs: &RunRegs) -> Result<Self, Refusal> {
        let bits = code_bits(regs);
        let bytes = fetch(mem, regs)
            .map_err(|e| format!("cannot read the instruction at rip {:#x}: {e}", regs.rip))?;
        let mut decoder = Decoder::try_with_ip(bits, &bytes, regs.rip, DecoderOptions::NONE)
            .map_err(|e| format!("cannot decode at rip {:#x}: {e}", regs.rip))?;
        let insn = decoder.decode();
        if insn.is_invalid() {
            return Err(format!(
                "the bytes at rip {:#x} ({}) are no valid {bits}-bit instruction",
                regs.rip,
                hex(&bytes)
            ));
        }
        let bytes = bytes.get(..insn.len()).unwrap_or(&bytes).to_vec();
        Ok(Fetched { insn, bytes, bits })
    }

    /// The instruction's length in bytes.
    pub fn len(&self) -> u64 {
        self.insn.len() as u64
    }

    /// RIP wraps at the code size.
    pub fn ip_mask(&self) -> u64 {
        match self.bits {
            16 => 0xffff,
            32 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }

    /// "`Code` (bytes) at rip …", for refusals.
    pub fn describe(&self) -> String {
        format!(
            "`{:?}` ({}) at rip {:#x}",
            self.insn.code(),
            hex(&self.bytes),
            self.insn.ip()
        )
    }
}
