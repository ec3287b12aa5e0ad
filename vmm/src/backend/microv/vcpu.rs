//! A MicroV vCPU: completes the last exit, enters the guest through the run
//! ioctl, and translates the run page's exit into a [`VmExit`].
//!
//! Completions (what the VMM answered) go back through the run page before
//! the next entry: an `in`'s value into `exit.io.data` (MicroV finishes the
//! instruction), an MMIO read's value into the destination register with
//! RIP past the instruction (the registers plus `request::SET_REGS`), an
//! MMIO write just RIP. String I/O (`string_io`) is performed against
//! guest memory here: `outs` reads its elements when it exits, `ins`
//! stores what the VMM read at the next run; both then hand back RSI/RDI,
//! RCX and RIP through the registers.
//!
//! An MMIO exit in the xAPIC page (`run::APIC_MMIO_BASE`, where the guest
//! reaches its local APIC once it has switched it from x2APIC to xAPIC
//! mode) is MicroV's, not the VMM's devices': `run` decodes it, hands it
//! back (`RunPage::apic`, RIP past the instruction, `request::SET_REGS |
//! request::APIC_ACCESS`) and enters the guest again without returning.

use std::sync::Arc;
use std::time::Duration;

use microv_abi::run::{
    exit_reason, io_direction, mmio_access, request, RunExit, RunIo, RunMmio, APIC_MMIO_BASE,
};

use super::doorbell::Doorbell;
use super::mmio::{self, Access, Completion};
use super::page::RunPageMap;
use super::string_io::{self, Batch};
use super::{ioctl_error, regs, VmShared};
use crate::backend::{BackendError, CpuidEntry, Regs, SpecialRegs, Vcpu, VmExit};

/// How long a halted vCPU waits for a raised vector before it is entered
/// again. MicroV emulates the timer and the VMM does not know its
/// deadline: an idle guest is re-entered this often so MicroV can deliver
/// a timer interrupt that became due (the guest's idle loop halts again if
/// nothing did).
pub const HALT_POLL: Duration = Duration::from_millis(1);

/// The answer the last exit waits for.
#[derive(Debug)]
enum Pending {
    Nothing,
    /// An `in` (the buffer holds its value, zero-extended).
    In,
    /// An MMIO access; a read of `size` bytes (0 for a write).
    Mmio {
        size: usize,
        completion: Completion,
    },
    /// A batch of string I/O; an `ins` stores the elements read.
    StringIo(Batch),
}

/// A vCPU of a MicroV VM.
pub struct MicrovVcpu {
    ops: Box<dyn super::device::VcpuOps>,
    page: Arc<RunPageMap>,
    doorbell: Arc<Doorbell>,
    vm: Arc<VmShared>,
    pending: Pending,
    /// The data of the exit handed out (little-endian).
    buf: [u8; 8],
    /// The elements of a string I/O batch handed out.
    elements: Vec<u8>,
    /// The last exit was HLT: wait before entering again.
    halted: bool,
    /// Why the last exit could not be translated, for [`Vcpu::diagnose`].
    refusal: Option<String>,
}

impl MicrovVcpu {
    pub(super) fn new(
        ops: Box<dyn super::device::VcpuOps>,
        page: Arc<RunPageMap>,
        doorbell: Arc<Doorbell>,
        vm: Arc<VmShared>,
    ) -> Self {
        MicrovVcpu {
            ops,
            page,
            doorbell,
            vm,
            pending: Pending::Nothing,
            buf: [0; 8],
            elements: Vec::new(),
            halted: false,
            refusal: None,
        }
    }

    /// Hands the VMM's answer to the last exit to MicroV. Err: why it
    /// cannot be.
    fn complete(&mut self) -> Result<(), String> {
        match std::mem::replace(&mut self.pending, Pending::Nothing) {
            Pending::Nothing => {}
            Pending::In => self.page.set_io_data(u64::from_le_bytes(self.buf)),
            Pending::Mmio { size, completion } => {
                let mut r = self.page.regs();
                completion.apply(&mut r, self.buf.get(..size).unwrap_or_default());
                self.page.set_regs(&r);
                self.page.request(request::SET_REGS);
            }
            Pending::StringIo(batch) => {
                if batch.is_in {
                    let memory = self.vm.memory.lock().map_err(|_| POISONED.to_owned())?;
                    batch.write(memory.as_slice(), &self.elements)?;
                }
                let mut r = self.page.regs();
                batch.completion.apply(&mut r);
                self.page.set_regs(&r);
                self.page.request(request::SET_REGS);
            }
        }
        Ok(())
    }

    /// Ends translation with an exit the VMM cannot handle, saying why.
    fn refuse(&mut self, reason: u32, why: String) -> VmExit<'static> {
        self.refusal = Some(why);
        VmExit::Unhandled {
            backend: "microv",
            reason: u64::from(reason),
        }
    }

    fn translate(&mut self, exit: &RunExit) -> VmExit<'_> {
        self.refusal = None;
        match exit.reason {
            exit_reason::IO => self.io(&exit.io),
            exit_reason::MMIO => self.mmio(&exit.mmio),
            exit_reason::STRING_IO => self.string_io(&exit.io),
            exit_reason::HLT => {
                self.halted = true;
                VmExit::Hlt
            }
            exit_reason::SHUTDOWN => VmExit::Shutdown,
            // TIMER is the driver's to serve; a run that ends with it has
            // nothing for the VMM either.
            exit_reason::INTERRUPTED | exit_reason::TIMER => VmExit::Interrupted,
            exit_reason::FAIL_ENTRY => VmExit::FailEntry {
                reason: exit.qualification,
            },
            exit_reason::UNHANDLED => VmExit::Unhandled {
                backend: "microv",
                reason: exit.qualification,
            },
            other => self.refuse(
                other,
                format!("MicroV reported exit reason {other}, which this VMM does not know"),
            ),
        }
    }

    fn io(&mut self, io: &RunIo) -> VmExit<'_> {
        let size = usize::from(io.size);
        if !matches!(size, 1 | 2 | 4) {
            return self.refuse(
                exit_reason::IO,
                format!("port I/O of {size} bytes at port {:#x}", io.port),
            );
        }
        match io.direction {
            io_direction::IN => {
                self.buf = [0; 8];
                self.pending = Pending::In;
                VmExit::IoIn {
                    port: io.port,
                    size,
                    data: self.buf.get_mut(..size).unwrap_or_default(),
                }
            }
            io_direction::OUT => {
                self.buf = io.data.to_le_bytes();
                VmExit::IoOut {
                    port: io.port,
                    size,
                    data: self.buf.get(..size).unwrap_or_default(),
                }
            }
            d => self.refuse(
                exit_reason::IO,
                format!("port I/O in direction {d} at port {:#x}", io.port),
            ),
        }
    }

    /// The next batch of a string instruction: its elements handed out,
    /// the completion kept for the next run.
    fn string_io(&mut self, io: &RunIo) -> VmExit<'_> {
        let regs = self.page.regs();
        let prepared = match self.vm.memory.lock() {
            Ok(memory) => string_io::prepare(memory.as_slice(), &regs, io).and_then(|batch| {
                let elements = if batch.is_in {
                    vec![0; batch.elements * batch.size]
                } else {
                    batch.read(memory.as_slice())?
                };
                Ok((batch, elements))
            }),
            Err(_) => Err(POISONED.to_owned()),
        };
        let (batch, elements) = match prepared {
            Ok(p) => p,
            Err(why) => return self.refuse(exit_reason::STRING_IO, why),
        };
        let (port, size, is_in) = (batch.port, batch.size, batch.is_in);
        self.elements = elements;
        self.pending = Pending::StringIo(batch);
        if is_in {
            VmExit::IoIn {
                port,
                size,
                data: &mut self.elements,
            }
        } else {
            VmExit::IoOut {
                port,
                size,
                data: &self.elements,
            }
        }
    }

    /// Hands an xAPIC access back to MicroV's local APIC: the access in
    /// the run page, RIP past the instruction, the requests for the next
    /// run. Err: why it cannot be.
    fn apic(&mut self, mmio: &RunMmio, offset: u32) -> Result<(), String> {
        let gpa = mmio.gpa;
        let mut regs = self.page.regs();
        let decoded = match self.vm.memory.lock() {
            Ok(memory) => mmio::decode_apic(memory.as_slice(), &regs, offset),
            Err(_) => Err(POISONED.to_owned()),
        };
        let access = decoded.map_err(|why| format!("{why} (gpa {gpa:#x})"))?;
        if mmio.access & mmio_access::WRITE != 0 && access.apic.write == 0 {
            return Err(format!(
                "the instruction at rip {:#x} reads the xAPIC page but MicroV reports a \
                 write at {gpa:#x} (changed under the vCPU?)",
                regs.rip
            ));
        }
        access.completion.apply(&mut regs, &[]);
        self.page.set_regs(&regs);
        self.page.set_apic(&access.apic);
        self.page.request(request::SET_REGS | request::APIC_ACCESS);
        Ok(())
    }

    fn mmio(&mut self, mmio: &RunMmio) -> VmExit<'_> {
        let gpa = mmio.gpa;
        if mmio.access & mmio_access::FETCH != 0 {
            return self.refuse(
                exit_reason::MMIO,
                format!("the guest executes from MMIO at {gpa:#x}"),
            );
        }
        let regs = self.page.regs();
        let decoded = match self.vm.memory.lock() {
            Ok(memory) => mmio::decode(memory.as_slice(), &regs),
            Err(_) => Err(POISONED.to_owned()),
        };
        let access = match decoded {
            Ok(a) => a,
            Err(why) => return self.refuse(exit_reason::MMIO, format!("{why} (gpa {gpa:#x})")),
        };
        // A read cannot fault as a write: the instruction changed since
        // (another vCPU wrote it). The converse is not checked: the ABI
        // reports access bits only "as far as the CPU reports them".
        if mmio.access & mmio_access::WRITE != 0 && !access.is_write() {
            return self.refuse(
                exit_reason::MMIO,
                format!(
                    "the instruction at rip {:#x} reads but MicroV reports a write at \
                     {gpa:#x} (changed under the vCPU?)",
                    regs.rip
                ),
            );
        }
        match access {
            Access::Read { size, completion } => {
                self.buf = [0; 8];
                self.pending = Pending::Mmio { size, completion };
                VmExit::MmioRead {
                    gpa,
                    data: self.buf.get_mut(..size).unwrap_or_default(),
                }
            }
            Access::Write {
                data,
                size,
                completion,
            } => {
                self.buf = data;
                self.pending = Pending::Mmio {
                    size: 0,
                    completion,
                };
                VmExit::MmioWrite {
                    gpa,
                    data: self.buf.get(..size).unwrap_or_default(),
                }
            }
        }
    }
}

const POISONED: &str = "the guest memory's lock is poisoned";

/// Size of the xAPIC page at `APIC_MMIO_BASE`.
const APIC_PAGE: u64 = 0x1000;

/// The offset in the xAPIC page of an MMIO exit there (not a fetch: that
/// is refused as any fetch from MMIO is).
fn apic_offset(exit: &RunExit) -> Option<u32> {
    if exit.reason != exit_reason::MMIO || exit.mmio.access & mmio_access::FETCH != 0 {
        return None;
    }
    let offset = exit.mmio.gpa.checked_sub(APIC_MMIO_BASE)?;
    if offset < APIC_PAGE {
        u32::try_from(offset).ok()
    } else {
        None
    }
}

impl Vcpu for MicrovVcpu {
    /// A no-op: MicroV's extension answers the guest's CPUID itself (see
    /// `cpuid.rs`); the ABI has no table to hand it.
    fn set_cpuid(&mut self, _entries: &[CpuidEntry]) -> Result<(), BackendError> {
        Ok(())
    }

    /// Reads the vCPU's registers into the run page, writes the boot state
    /// over them and asks MicroV to load them all at the first run.
    fn set_boot_state(&mut self, r: &Regs, s: &SpecialRegs) -> Result<(), BackendError> {
        self.ops
            .get_regs()
            .map_err(|e| ioctl_error("MV_IOC_VCPU_GET_REGS", e))?;
        let mut run = self.page.regs();
        regs::regs_into_run(r, &mut run);
        regs::sregs_into_run(s, &mut run);
        self.page.set_regs(&run);
        self.page.request(request::SET_REGS | request::SET_SREGS);
        Ok(())
    }

    fn run(&mut self) -> Result<VmExit<'_>, BackendError> {
        self.refusal = None;
        if let Err(why) = self.complete() {
            return Ok(self.refuse(exit_reason::STRING_IO, why));
        }
        if std::mem::take(&mut self.halted) {
            self.doorbell.wait_halted(HALT_POLL);
        }
        loop {
            let result = {
                let _in_guest = self.doorbell.enter();
                self.ops.run()
            };
            match result {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => return Ok(VmExit::Interrupted),
                Err(e) => return Err(ioctl_error("MV_IOC_VCPU_RUN", e)),
            }
            let exit = self.page.exit();
            if let Some(offset) = apic_offset(&exit) {
                // MicroV's own device: straight back into the guest.
                self.refusal = None;
                match self.apic(&exit.mmio, offset) {
                    Ok(()) => continue,
                    Err(why) => return Ok(self.refuse(exit_reason::MMIO, why)),
                }
            }
            return Ok(self.translate(&exit));
        }
    }

    fn diagnose(&mut self) -> String {
        let rip = format!("rip {:#x}", self.page.regs().rip);
        match &self.refusal {
            Some(why) => format!("{rip}; {why}"),
            None => rip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::microv::guest::tests::{long_mode, memory, paged, put};
    use crate::backend::microv::regs::gpr::{RAX, RCX, RDI, RDX, RSI};
    use crate::backend::microv::testing::{vcpu_with, Microv};
    use crate::backend::ExitKind;
    use microv_abi::run::RunApic;

    fn exit(reason: u32) -> RunExit {
        let mut e = RunExit::zeroed();
        e.reason = reason;
        e
    }

    fn io(direction: u8, port: u16, size: u8, data: u64) -> RunExit {
        let mut e = exit(exit_reason::IO);
        e.io.direction = direction;
        e.io.port = port;
        e.io.size = size;
        e.io.data = data;
        e
    }

    fn mmio(gpa: u64, access: u64) -> RunExit {
        let mut e = exit(exit_reason::MMIO);
        e.mmio.gpa = gpa;
        e.mmio.access = access;
        e
    }

    #[test]
    fn port_io_is_answered_through_the_page() {
        let m = Microv::new();
        m.exit(io(io_direction::OUT, 0x3f8, 1, 0x4142));
        m.exit(io(io_direction::IN, 0x3fd, 2, 0));
        m.exit(exit(exit_reason::HLT));
        let mut v = vcpu_with(&m, Vec::new());
        assert_eq!(
            v.run().unwrap(),
            VmExit::IoOut {
                port: 0x3f8,
                size: 1,
                data: &[0x42]
            }
        );
        match v.run().unwrap() {
            VmExit::IoIn {
                port: 0x3fd,
                size: 2,
                data,
            } => {
                assert_eq!(data.len(), 2);
                data.copy_from_slice(&[0x60, 0x01]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(v.run().unwrap(), VmExit::Hlt);
        let seen = m.seen();
        assert_eq!(
            seen[2].io_data, 0x160,
            "the in's value, at the run after it"
        );
        assert_eq!(seen[2].requests, 0, "MicroV completes an in itself");
    }

    /// `mov eax, [rdi]` then `mov [rdi], edx` at RIP, 64-bit with paging.
    fn mmio_guest() -> (Arc<vm_memory::GuestMemoryMmap>, microv_abi::run::RunRegs) {
        let mem = memory(1 << 22);
        let mut regs = long_mode(paged(&mem), 0xffff_8000_0040_1000);
        put(&mem, 0x5000, &[0x8b, 0x07, 0x89, 0x17]);
        regs.gprs[RAX] = 0xdead_beef_0000_0000;
        regs.gprs[RDX] = 0x1234_5678;
        (Arc::new(mem), regs)
    }

    #[test]
    fn mmio_reads_and_writes_complete_through_the_registers() {
        let (mem, regs) = mmio_guest();
        let m = Microv::new();
        m.exit_with_regs(mmio(0xfec0_0010, 0), regs);
        let mut after_read = regs;
        after_read.rip += 2;
        after_read.gprs[RAX] = 0x0000_0000_0017_0011;
        m.exit_with_regs(mmio(0xfec0_0010, mmio_access::WRITE), after_read);
        m.exit(exit(exit_reason::SHUTDOWN));
        let mut v = vcpu_with(&m, vec![mem]);
        match v.run().unwrap() {
            VmExit::MmioRead {
                gpa: 0xfec0_0010,
                data,
            } => data.copy_from_slice(&0x0017_0011u32.to_le_bytes()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            v.run().unwrap(),
            VmExit::MmioWrite {
                gpa: 0xfec0_0010,
                data: &[0x78, 0x56, 0x34, 0x12]
            }
        );
        assert_eq!(v.run().unwrap(), VmExit::Shutdown);
        let seen = m.seen();
        // The read: EAX loaded (upper half cleared), RIP past the mov.
        assert_eq!(seen[1].requests, request::SET_REGS);
        assert_eq!(seen[1].regs.gprs[RAX], 0x0017_0011);
        assert_eq!(seen[1].regs.rip, regs.rip + 2);
        // The write: RIP past it, nothing else changed.
        assert_eq!(seen[2].requests, request::SET_REGS);
        assert_eq!(seen[2].regs.rip, regs.rip + 4);
        assert_eq!(seen[2].regs.gprs, after_read.gprs);
    }

    #[test]
    fn xapic_accesses_go_back_to_microv_without_an_exit() {
        let (mem, regs) = mmio_guest();
        let m = Microv::new();
        // mov eax, [rdi] at APIC_MMIO_BASE + 0x30, then mov [rdi], edx at
        // + 0xb0: both handed back within one run call.
        m.exit_with_regs(mmio(APIC_MMIO_BASE + 0x30, 0), regs);
        let mut after_read = regs;
        after_read.rip += 2;
        after_read.gprs[RAX] = 0x0005_0014;
        m.exit_with_regs(mmio(APIC_MMIO_BASE + 0xb0, mmio_access::WRITE), after_read);
        // Offset 0xffc is still in the APIC page; 0x1000 is past it.
        m.exit_with_regs(mmio(APIC_MMIO_BASE + 0xffc, 0), regs);
        m.exit_with_regs(mmio(APIC_MMIO_BASE + 0x1000, 0), regs);
        let mut v = vcpu_with(&m, vec![mem]);
        match v.run().unwrap() {
            VmExit::MmioRead { gpa, data } => {
                assert_eq!((gpa, data.len()), (APIC_MMIO_BASE + 0x1000, 4));
            }
            other => panic!("{other:?}"),
        }
        let seen = m.seen();
        assert_eq!(seen.len(), 4, "four entries, one return");
        let both = request::SET_REGS | request::APIC_ACCESS;
        // The read: RIP past it, EAX left for MicroV to load.
        assert_eq!(seen[1].requests, both);
        assert_eq!(
            seen[1].apic,
            RunApic {
                offset: 0x30,
                write: 0,
                value: 0,
                gpr: RAX as u32
            }
        );
        assert_eq!(seen[1].regs.rip, regs.rip + 2);
        assert_eq!(seen[1].regs.gprs, regs.gprs);
        // The write: EDX's value, RIP past it.
        assert_eq!(seen[2].requests, both);
        assert_eq!(
            seen[2].apic,
            RunApic {
                offset: 0xb0,
                write: 1,
                value: 0x1234_5678,
                gpr: 0
            }
        );
        assert_eq!(seen[2].regs.rip, regs.rip + 4);
        assert_eq!(seen[2].regs.gprs, after_read.gprs);
        assert_eq!(seen[3].apic.offset, 0xffc);
        assert_eq!(seen[3].requests, both);
        assert_eq!(v.diagnose(), format!("rip {:#x}", regs.rip));
    }

    #[test]
    fn other_xapic_accesses_are_refused_with_the_instruction() {
        let mem = memory(1 << 22);
        let mut regs = long_mode(paged(&mem), 0xffff_8000_0040_1000);
        put(&mem, 0x5000, &[0x66, 0x89, 0x07, 0x8b, 0x07]); // mov [rdi], ax; mov eax, [rdi]
        let mem = Arc::new(mem);
        let m = Microv::new();
        m.exit_with_regs(mmio(APIC_MMIO_BASE + 0x80, mmio_access::WRITE), regs);
        regs.rip += 3;
        m.exit_with_regs(mmio(APIC_MMIO_BASE + 0x20, mmio_access::WRITE), regs);
        m.exit_with_regs(mmio(APIC_MMIO_BASE, mmio_access::FETCH), regs);
        let mut v = vcpu_with(&m, vec![mem]);
        let unhandled = VmExit::Unhandled {
            backend: "microv",
            reason: u64::from(exit_reason::MMIO),
        };
        assert_eq!(v.run().unwrap(), unhandled);
        let d = v.diagnose();
        assert!(
            d.contains("`Mov_rm16_r16` (66 89 07)")
                && d.contains("touched the xAPIC page at offset 0x80")
                && d.ends_with("(gpa 0xfee00080)"),
            "{d}"
        );
        assert_eq!(v.run().unwrap(), unhandled);
        let d = v.diagnose();
        assert!(
            d.contains("reads the xAPIC page but MicroV reports a write at 0xfee00020"),
            "{d}"
        );
        assert_eq!(v.run().unwrap(), unhandled);
        let d = v.diagnose();
        assert!(d.contains("executes from MMIO at 0xfee00000"), "{d}");
        assert!(m
            .seen()
            .iter()
            .all(|s| s.requests & request::APIC_ACCESS == 0));
    }

    #[test]
    fn undecodable_mmio_is_refused_with_a_reason() {
        let (mem, mut regs) = mmio_guest();
        let m = Microv::new();
        // Fetch from MMIO; a write reported for a read; a decode failure.
        m.exit_with_regs(mmio(0xfec0_0000, mmio_access::FETCH), regs);
        m.exit_with_regs(mmio(0xfec0_0000, mmio_access::WRITE), regs);
        regs.rip = 0x1000;
        m.exit_with_regs(mmio(0xfec0_0000, 0), regs);
        let mut v = vcpu_with(&m, vec![mem]);
        let unhandled = VmExit::Unhandled {
            backend: "microv",
            reason: u64::from(exit_reason::MMIO),
        };
        assert_eq!(v.run().unwrap(), unhandled);
        assert!(
            v.diagnose().contains("executes from MMIO at 0xfec00000"),
            "{}",
            v.diagnose()
        );
        assert_eq!(v.run().unwrap(), unhandled);
        assert!(
            v.diagnose().contains("reads but MicroV reports a write"),
            "{}",
            v.diagnose()
        );
        assert_eq!(v.run().unwrap(), unhandled);
        let d = v.diagnose();
        assert!(
            d.starts_with("rip 0x1000; cannot read the instruction"),
            "{d}"
        );
        assert!(d.ends_with("(gpa 0xfec00000)"), "{d}");
    }

    fn string_exit(is_in: bool, size: u8) -> RunExit {
        let mut e = exit(exit_reason::STRING_IO);
        e.io.direction = if is_in {
            io_direction::IN
        } else {
            io_direction::OUT
        };
        e.io.port = 0x3f8;
        e.io.size = size;
        e.io.rep = 1;
        e
    }

    /// `rep outsb` then `rep insb` at RIP (64-bit, paging); data in the
    /// 2 MiB page at linear 0xffff_8000_0060_0000 (gpa 0x20_0000).
    fn string_guest() -> (Arc<vm_memory::GuestMemoryMmap>, microv_abi::run::RunRegs) {
        let mem = memory(1 << 22);
        let mut regs = long_mode(paged(&mem), 0xffff_8000_0040_1000);
        put(&mem, 0x5000, &[0xf3, 0x6e, 0xf3, 0x6c]);
        put(&mem, 0x20_0ffe, b"hi!");
        regs.gprs[RDX] = 0x3f8;
        regs.gprs[RSI] = 0xffff_8000_0060_0ffe;
        regs.gprs[RDI] = 0xffff_8000_0060_0100;
        regs.gprs[RCX] = 3;
        (Arc::new(mem), regs)
    }

    #[test]
    fn string_io_is_performed_in_batches_and_completed_through_the_registers() {
        let (mem, regs) = string_guest();
        let m = Microv::new();
        // rep outsb of 3 bytes across a page: two batches.
        m.exit_with_regs(string_exit(false, 1), regs);
        let mut second = regs;
        second.gprs[RSI] += 2;
        second.gprs[RCX] = 1;
        m.exit_with_regs(string_exit(false, 1), second);
        // rep insb of 3 bytes.
        let mut ins = second;
        ins.gprs[RSI] += 1;
        ins.gprs[RCX] = 3;
        ins.rip += 2;
        m.exit_with_regs(string_exit(true, 1), ins);
        m.exit(exit(exit_reason::SHUTDOWN));
        let mut v = vcpu_with(&m, vec![Arc::clone(&mem)]);
        let out = |data: &'static [u8]| VmExit::IoOut {
            port: 0x3f8,
            size: 1,
            data,
        };
        assert_eq!(v.run().unwrap(), out(b"hi"));
        assert_eq!(v.run().unwrap(), out(b"!"));
        match v.run().unwrap() {
            VmExit::IoIn {
                port: 0x3f8,
                size: 1,
                data,
            } => data.copy_from_slice(b"abc"),
            other => panic!("{other:?}"),
        }
        assert_eq!(v.run().unwrap(), VmExit::Shutdown);
        let seen = m.seen();
        // The first batch: RIP stays, the instruction runs again.
        assert_eq!(seen[1].requests, request::SET_REGS);
        assert_eq!((seen[1].regs.gprs[RCX], seen[1].regs.rip), (1, regs.rip));
        assert_eq!(seen[1].regs.gprs[RSI], regs.gprs[RSI] + 2);
        // The last: RIP past it.
        assert_eq!(
            (seen[2].regs.gprs[RCX], seen[2].regs.rip),
            (0, regs.rip + 2)
        );
        // The ins: the bytes in memory, RDI moved.
        assert_eq!(
            (seen[3].regs.gprs[RDI], seen[3].regs.rip),
            (ins.gprs[RDI] + 3, ins.rip + 2)
        );
        let mut got = [0u8; 3];
        vm_memory::Bytes::read_slice(&*mem, &mut got, vm_memory::GuestAddress(0x20_0100)).unwrap();
        assert_eq!(&got, b"abc");
    }

    #[test]
    fn string_io_that_cannot_be_done_ends_the_vm_with_the_reason() {
        let (mem, mut regs) = string_guest();
        let m = Microv::new();
        let mut unmapped = regs;
        unmapped.gprs[RSI] = 0x1000;
        m.exit_with_regs(string_exit(false, 1), unmapped);
        regs.rip += 2;
        m.exit_with_regs(string_exit(true, 1), regs);
        let mut v = vcpu_with(&m, vec![Arc::clone(&mem)]);
        let unhandled = VmExit::Unhandled {
            backend: "microv",
            reason: u64::from(exit_reason::STRING_IO),
        };
        assert_eq!(v.run().unwrap(), unhandled);
        let d = v.diagnose();
        assert!(
            d.contains("`Outsb_DX_m8`") && d.contains("not present"),
            "{d}"
        );
        // Guest RAM gone by the time an ins completes: refused, not lost.
        assert!(matches!(v.run().unwrap(), VmExit::IoIn { .. }));
        v.vm.memory.lock().unwrap().clear();
        assert_eq!(v.run().unwrap(), unhandled);
        assert!(
            v.diagnose().contains("cannot be written"),
            "{}",
            v.diagnose()
        );
    }

    #[test]
    fn every_exit_reason_translates() {
        let m = Microv::new();
        let mut fail = exit(exit_reason::FAIL_ENTRY);
        fail.qualification = 0x80;
        let mut unhandled = exit(exit_reason::UNHANDLED);
        unhandled.qualification = 0x7b;
        for e in [
            exit(exit_reason::INTERRUPTED),
            fail,
            unhandled,
            exit(exit_reason::NONE),
            exit(99),
            io(io_direction::OUT, 0x80, 3, 0),
            io(7, 0x80, 1, 0),
        ] {
            m.exit(e);
        }
        let mut v = vcpu_with(&m, Vec::new());
        let kinds: Vec<(ExitKind, String)> = (0..7)
            .map(|_| {
                let k = v.run().unwrap().kind();
                (k, v.diagnose())
            })
            .collect();
        assert_eq!(kinds[0], (ExitKind::Interrupted, "rip 0x0".into()));
        assert_eq!(kinds[1].0, ExitKind::FailEntry);
        assert_eq!(kinds[2], (ExitKind::Unhandled, "rip 0x0".into()));
        assert!(kinds[3].1.contains("exit reason 0"), "{kinds:?}");
        assert!(kinds[4].1.contains("exit reason 99"), "{kinds:?}");
        assert!(kinds[5].1.contains("port I/O of 3 bytes"), "{kinds:?}");
        assert!(kinds[6].1.contains("direction 7"), "{kinds:?}");
        let m2 = Microv::new();
        m2.exit(fail);
        m2.exit(unhandled);
        let mut v = vcpu_with(&m2, Vec::new());
        assert_eq!(v.run().unwrap(), VmExit::FailEntry { reason: 0x80 });
        assert_eq!(
            v.run().unwrap(),
            VmExit::Unhandled {
                backend: "microv",
                reason: 0x7b
            }
        );
    }

    #[test]
    fn signals_interrupt_and_errors_say_what_failed() {
        let m = Microv::new();
        m.fail(libc::EINTR);
        m.fail(libc::ENODEV);
        m.fail(libc::EFAULT);
        let mut v = vcpu_with(&m, Vec::new());
        assert_eq!(v.run().unwrap(), VmExit::Interrupted);
        let e = v.run().unwrap_err();
        assert!(matches!(e, BackendError::NotRunning { .. }), "{e}");
        let e = v.run().unwrap_err().to_string();
        assert!(e.starts_with("MV_IOC_VCPU_RUN failed: Bad address"), "{e}");
    }

    #[test]
    fn a_halted_vcpu_waits_then_enters_again() {
        let m = Microv::new();
        m.exit(exit(exit_reason::HLT));
        m.exit(exit(exit_reason::INTERRUPTED));
        let mut v = vcpu_with(&m, Vec::new());
        assert_eq!(v.run().unwrap(), VmExit::Hlt);
        let start = std::time::Instant::now();
        assert_eq!(v.run().unwrap(), VmExit::Interrupted);
        assert!(start.elapsed() >= HALT_POLL, "waited for a vector first");
    }

    #[test]
    fn boot_state_is_loaded_at_the_first_run() {
        let m = Microv::new();
        let mut reset = microv_abi::run::RunRegs::zeroed();
        reset.cr2 = 0x77;
        m.regs_on_get(reset);
        m.exit(exit(exit_reason::HLT));
        let mut v = vcpu_with(&m, Vec::new());
        let (r, s) = crate::boot::cpu_state::boot_registers(0x100_0200);
        v.set_cpuid(&[CpuidEntry::default()]).unwrap();
        v.set_boot_state(&r, &s).unwrap();
        v.run().unwrap();
        let seen = &m.seen()[0];
        assert_eq!(seen.requests, request::SET_REGS | request::SET_SREGS);
        assert_eq!(regs::regs_from_run(&seen.regs), r);
        assert_eq!(regs::sregs_from_run(&seen.regs), s);
        assert_eq!(seen.regs.cr2, 0x77, "what the VMM does not set is MicroV's");

        let m = Microv::new();
        m.fail_get_regs(libc::EPERM);
        let mut v = vcpu_with(&m, Vec::new());
        let e = v.set_boot_state(&r, &s).unwrap_err();
        assert!(matches!(e, BackendError::NotPermitted { .. }), "{e}");
    }
}
