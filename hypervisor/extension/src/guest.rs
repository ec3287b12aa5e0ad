//! Micro-VM vCPUs: their VMCB set-up, what the VMM's requests do to them,
//! and their exits. Policy works on the vendor-neutral [`Exit`]; the VMCB
//! is only where the registers live (`svm_regs` converts them for the VMM).
//!
//! What a guest can reach: its own memory (nested tables the microkernel
//! built from checked frames), nothing else. Every port, every MSR and
//! every other guest-physical access exits; SVM instructions raise #UD;
//! management hypercalls are refused; a host interrupt always takes the
//! CPU back to the root.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use microv_abi::hypercall::Status;
use microv_abi::launch::{gpr, MAX_CPUS};
use microv_abi::run::{
    exit_reason, io_direction, mmio_access, request, RunApic, RunExit, RunIo, RunMmio, RunRegs,
};
use microv_abi::syscall::{vs_layout, VsRegs};
use microv_arch::descriptor::Segment;
use microv_arch::msr::{self, efer};
use microv_arch::svm::{event, misc1, misc2, required, vector, vintr, Control, Vmcb, NP_ENABLE};

use crate::exit::{complete_hypercall, cpuid_with, skip, xsetbv};
use crate::host::Host;
use crate::hypercall::{self, Args, CallerInfo, Outcome};
use crate::lapic::{self, Ipi, Lapic};
use crate::neutral::Exit;
use crate::svm_regs;

const MAX_VS: usize = vs_layout::MAX_VS as usize;
const HLT_LEN: u64 = 1;
const INVD_LEN: u64 = 2;
const MSR_LEN: u64 = 2;
const RFLAGS_IF: u64 = 1 << 9;
const CR0_PG: u64 = 1 << 31;
/// Placeholder ASID: the microkernel sets the real one before every run.
const ASID_PLACEHOLDER: u32 = 1;

/// A value only one CPU at a time may touch (a vCPU's APIC: the CPU that
/// holds the vCPU). A try-lock makes that a checked fact: a second
/// concurrent access gets `None` instead of an aliasing reference.
pub struct Owned<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through `with`, which hands out one
// `&mut` at a time (guarded by `busy`); T moves between CPUs, hence Send.
unsafe impl<T: Send> Sync for Owned<T> {}

impl<T> Owned<T> {
    pub const fn new(value: T) -> Self {
        Owned {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` on the value, unless another access is under way.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: `busy` was false and is now set by this call: no other
        // reference to the value exists until it is cleared below.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        Some(r)
    }
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO4: [AtomicU64; 4] = [ZERO; 4];

/// What the extension keeps per guest vCPU (indexed by vCPU state id) and
/// per CPU. Atomics: every CPU's extension shares it.
pub struct Vcpus {
    /// VM id + 1 of each guest vCPU (0: not a guest vCPU).
    vm: [AtomicU64; MAX_VS],
    /// CPU index + 1 that holds the vCPU, from `run.run` until the CPU
    /// returns to the root (0: free). A second `run.run` elsewhere is Busy.
    owner: [AtomicU64; MAX_VS],
    /// Size of an `in` the VMM completes at the next `run.run` (0: none).
    pending_in: [AtomicU64; MAX_VS],
    /// Interrupt vectors raised (by the VMM or another vCPU's IPI) and not
    /// yet taken into the vCPU's APIC (a 256-bit set).
    pending_irq: [[AtomicU64; 4]; MAX_VS],
    /// Each vCPU's x2APIC ID (for IPIs), its INIT/SIPI state and its APIC.
    apic_id: [AtomicU64; MAX_VS],
    addr: [AtomicU64; MAX_VS],
    sipi: [AtomicU64; MAX_VS],
    /// Each vCPU's NMI state (`nmi::*` bits), and where its NMI handler's
    /// intercepted IRET was (to tell when it has run).
    nmi: [AtomicU64; MAX_VS],
    nmi_iret_rip: [AtomicU64; MAX_VS],
    lapic: [Owned<Lapic>; MAX_VS],
    /// vCPU id + 1 that runs on each CPU for its root's `run.run`.
    on_cpu: [AtomicU64; MAX_CPUS],
    /// Each CPU's root vCPU state.
    root: [AtomicU64; MAX_CPUS],
}

impl Vcpus {
    pub const fn new() -> Self {
        Vcpus {
            vm: [ZERO; MAX_VS],
            owner: [ZERO; MAX_VS],
            pending_in: [ZERO; MAX_VS],
            pending_irq: [ZERO4; MAX_VS],
            apic_id: [ZERO; MAX_VS],
            addr: [ZERO; MAX_VS],
            sipi: [ZERO; MAX_VS],
            nmi: [ZERO; MAX_VS],
            nmi_iret_rip: [ZERO; MAX_VS],
            lapic: [const { Owned::new(Lapic::new(0)) }; MAX_VS],
            on_cpu: [ZERO; MAX_CPUS],
            root: [ZERO; MAX_CPUS],
        }
    }

    fn slot(a: &[AtomicU64], i: u64) -> Option<&AtomicU64> {
        a.get(usize::try_from(i).ok()?)
    }

    /// Records a new guest vCPU of VM `vm` with x2APIC ID `apic_id`.
    pub fn add(&self, vcpu: u64, vm: u64, apic_id: u32) {
        if let Some(s) = Self::slot(&self.apic_id, vcpu) {
            s.store(u64::from(apic_id), Ordering::Relaxed);
        }
        // A new vCPU's id is not known to anyone yet: the APIC is free.
        let _ = self.with_lapic(vcpu, |l| *l = Lapic::new(apic_id));
        self.sync_address(vcpu);
        // The bootstrap processor runs; the others wait for INIT/SIPI.
        if let Some(s) = Self::slot(&self.sipi, vcpu) {
            s.store(if apic_id == 0 { SIPI_RUNNING } else { SIPI_WAIT }, Ordering::Release);
        }
        for a in [&self.owner, &self.pending_in, &self.nmi] {
            if let Some(s) = Self::slot(a, vcpu) {
                s.store(0, Ordering::Relaxed);
            }
        }
        if let Some(irq) = usize::try_from(vcpu).ok().and_then(|i| self.pending_irq.get(i)) {
            irq.iter().for_each(|w| w.store(0, Ordering::Relaxed));
        }
        if let Some(s) = Self::slot(&self.vm, vcpu) {
            s.store(vm + 1, Ordering::Release);
        }
    }

    /// Forgets a destroyed guest vCPU.
    pub fn remove(&self, vcpu: u64) {
        if let Some(s) = Self::slot(&self.vm, vcpu) {
            s.store(0, Ordering::Release);
        }
    }

    /// The VM of guest vCPU `vcpu`, if it is one.
    pub fn vm_of(&self, vcpu: u64) -> Option<u64> {
        Self::slot(&self.vm, vcpu)
            .map(|s| s.load(Ordering::Acquire))
            .and_then(|v| v.checked_sub(1))
    }

    /// True if some vCPU of VM `vm` exists.
    pub fn vm_has_vcpus(&self, vm: u64) -> bool {
        self.vm.iter().any(|s| s.load(Ordering::Acquire) == vm + 1)
    }

    /// Takes guest vCPU `vcpu` for CPU `cpu`; false if it is not a guest
    /// vCPU or another CPU holds it.
    pub fn claim(&self, vcpu: u64, cpu: usize) -> bool {
        self.vm_of(vcpu).is_some()
            && Self::slot(&self.owner, vcpu).is_some_and(|s| {
                s.compare_exchange(0, cpu as u64 + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
    }

    /// True if some CPU holds `vcpu`.
    pub fn is_claimed(&self, vcpu: u64) -> bool {
        Self::slot(&self.owner, vcpu).is_some_and(|s| s.load(Ordering::Acquire) != 0)
    }

    /// Gives `vcpu` back.
    pub fn release(&self, vcpu: u64) {
        if let Some(s) = Self::slot(&self.owner, vcpu) {
            s.store(0, Ordering::Release);
        }
    }

    /// The guest vCPU CPU `cpu` runs for its root, if any.
    pub fn running_on(&self, cpu: usize) -> Option<u64> {
        self.on_cpu
            .get(cpu)
            .map(|s| s.load(Ordering::Acquire))
            .and_then(|v| v.checked_sub(1))
    }

    /// Sets (or clears) the guest vCPU CPU `cpu` runs.
    pub fn set_running_on(&self, cpu: usize, vcpu: Option<u64>) {
        if let Some(s) = self.on_cpu.get(cpu) {
            s.store(vcpu.map_or(0, |v| v + 1), Ordering::Release);
        }
    }

    /// Records CPU `cpu`'s root vCPU state.
    pub fn set_root(&self, cpu: usize, vs: u64) {
        if let Some(s) = self.root.get(cpu) {
            s.store(vs, Ordering::Relaxed);
        }
    }

    /// CPU `cpu`'s root vCPU state.
    pub fn root_of(&self, cpu: usize) -> u64 {
        self.root.get(cpu).map_or(0, |s| s.load(Ordering::Relaxed))
    }

    fn irq(&self, vcpu: u64) -> Option<&[AtomicU64; 4]> {
        self.pending_irq.get(usize::try_from(vcpu).ok()?)
    }

    /// How other vCPUs address `vcpu`'s APIC (kept in step with it by
    /// [`Vcpus::sync_address`]).
    pub fn address(&self, vcpu: u64) -> lapic::Address {
        let word = Self::slot(&self.addr, vcpu).map_or(0, |s| s.load(Ordering::Acquire));
        lapic::Address::unpack(self.apic_id(vcpu), word)
    }

    /// Publishes `vcpu`'s APIC addressing after its own APIC changed mode
    /// or logical ID (the caller holds the vCPU).
    pub fn sync_address(&self, vcpu: u64) {
        if let (Some(a), Some(slot)) = (self.with_lapic(vcpu, |l| l.address()), Self::slot(&self.addr, vcpu)) {
            slot.store(a.pack(), Ordering::Release);
        }
    }

    /// Guest vCPU `vcpu`'s x2APIC ID.
    pub fn apic_id(&self, vcpu: u64) -> u32 {
        Self::slot(&self.apic_id, vcpu).map_or(0, |s| s.load(Ordering::Relaxed) as u32)
    }

    /// Runs `f` on guest vCPU `vcpu`'s APIC (the caller holds the vCPU).
    pub fn with_lapic<R>(&self, vcpu: u64, f: impl FnOnce(&mut Lapic) -> R) -> Option<R> {
        self.lapic.get(usize::try_from(vcpu).ok()?)?.with(f)
    }

    /// Moves the vectors raised for `vcpu` into its APIC.
    fn collect(&self, vcpu: u64, lapic: &mut Lapic) {
        let Some(words) = self.irq(vcpu) else {
            return;
        };
        for (i, w) in words.iter().enumerate() {
            let mut bits = w.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                lapic.raise((i as u32 * 64 + b) as u8);
            }
        }
    }

    /// After an exit of `vcpu` at `rip`: if the NMI handler's IRET has run
    /// since it was intercepted, NMIs are unblocked.
    fn settle_nmi(&self, vcpu: u64, rip: u64) {
        let (Some(s), Some(at)) = (Self::slot(&self.nmi, vcpu), Self::slot(&self.nmi_iret_rip, vcpu)) else {
            return;
        };
        if s.load(Ordering::Acquire) & nmi::UNMASKING != 0 && rip != at.load(Ordering::Relaxed) {
            s.fetch_and(!(nmi::UNMASKING | nmi::MASKED), Ordering::AcqRel);
        }
    }

    /// `vcpu`'s NMI handler is at its IRET (`rip`), about to run it.
    fn iret_intercepted(&self, vcpu: u64, rip: u64) {
        if let (Some(s), Some(at)) = (Self::slot(&self.nmi, vcpu), Self::slot(&self.nmi_iret_rip, vcpu)) {
            at.store(rip, Ordering::Relaxed);
            s.fetch_or(nmi::UNMASKING, Ordering::AcqRel);
        }
    }

    /// True if `vcpu` has an NMI it can take now.
    fn nmi_deliverable(&self, vcpu: u64) -> bool {
        Self::slot(&self.nmi, vcpu)
            .is_some_and(|s| s.load(Ordering::Acquire) & (nmi::PENDING | nmi::MASKED) == nmi::PENDING)
    }

    /// Injects `vcpu`'s pending NMI unless another event goes in first,
    /// the guest is in an interrupt shadow, or its NMI handler still runs;
    /// the handler's IRET is then intercepted to learn when it ends.
    fn inject_nmi(&self, c: &mut Control, vcpu: u64) {
        let Some(s) = Self::slot(&self.nmi, vcpu) else {
            return;
        };
        if c.event_inj & event::VALID != 0 || c.interrupt_shadow & 1 != 0 || !self.nmi_deliverable(vcpu) {
            return;
        }
        // Taken with a read-modify-write: an NMI sent from now on stays
        // pending for after the handler.
        if s.fetch_and(!nmi::PENDING, Ordering::AcqRel) & nmi::PENDING == 0 {
            return;
        }
        s.fetch_or(nmi::MASKED, Ordering::AcqRel);
        c.event_inj = event::nmi();
        c.intercept_misc1 |= misc1::IRET;
    }

    /// Sends what the APIC of `vcpu` sent; the vCPUs that must be woken
    /// (a 256-bit set of vCPU ids: `RunExit::kick`).
    pub fn deliver(&self, vcpu: u64, ipi: Option<Ipi>) -> Kicks {
        let mut kicks = [0u64; 4];
        let (Some(ipi), Some(vm)) = (ipi, self.vm_of(vcpu)) else {
            return kicks;
        };
        let (target, action) = match ipi {
            Ipi::To { dest, vector } => (Some(dest), Signal::Vector(vector)),
            Ipi::AllButSelf { vector } => (None, Signal::Vector(vector)),
            Ipi::Init { dest } => (Some(dest), Signal::Init),
            Ipi::Startup { dest, vector } => (Some(dest), Signal::Startup(vector)),
            Ipi::Nmi { dest } => (dest, Signal::Nmi),
        };
        for (i, owner_vm) in self.vm.iter().enumerate() {
            let i = i as u64;
            if owner_vm.load(Ordering::Acquire) != vm + 1 || i == vcpu {
                continue;
            }
            if target.is_some_and(|d| !self.address(i).accepts(d)) {
                continue;
            }
            let sipi = Self::slot(&self.sipi, i);
            match action {
                Signal::Vector(vector) => {
                    if let Some(w) = self.irq(i).and_then(|w| w.get(usize::from(vector >> 6))) {
                        w.fetch_or(1 << (vector & 63), Ordering::AcqRel);
                    }
                }
                Signal::Nmi => {
                    if let Some(s) = Self::slot(&self.nmi, i) {
                        s.fetch_or(nmi::PENDING, Ordering::AcqRel);
                    }
                }
                Signal::Init => {
                    if let Some(s) = sipi {
                        s.store(SIPI_WAIT, Ordering::Release);
                    }
                }
                // Only a vCPU waiting for one takes a SIPI (the second of
                // Linux's two is ignored).
                Signal::Startup(vector) => {
                    if let Some(s) = sipi {
                        let _ = s.compare_exchange(
                            SIPI_WAIT,
                            SIPI_RECEIVED | u64::from(vector),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                    }
                }
            }
            if let Some(w) = kicks.get_mut((i / 64) as usize) {
                *w |= 1 << (i % 64);
            }
        }
        kicks
    }

    /// Whether `vcpu` may run: it waits for INIT/SIPI (`Wait`), or runs. A
    /// SIPI it received starts it in real mode at the SIPI vector's page
    /// (its VMCB and APIC in their reset state), as the processor does.
    pub fn startup(&self, v: &mut Vmcb, vcpu: u64) -> Startup {
        let Some(state) = Self::slot(&self.sipi, vcpu) else {
            return Startup::Run;
        };
        match state.load(Ordering::Acquire) {
            SIPI_WAIT => Startup::Wait,
            s if s & SIPI_RECEIVED != 0 => {
                let vector = (s & 0xff) as u16;
                configure_vmcb(v);
                v.save.cs.selector = vector << 8;
                v.save.cs.base = u64::from(vector) << 12;
                v.save.rip = 0;
                let id = self.apic_id(vcpu);
                let _ = self.with_lapic(vcpu, |l| *l = Lapic::new(id));
                self.sync_address(vcpu);
                if let Some(s) = Self::slot(&self.nmi, vcpu) {
                    s.store(0, Ordering::Release);
                }
                state.store(SIPI_RUNNING, Ordering::Release);
                Startup::Run
            }
            _ => Startup::Run,
        }
    }
}

/// The vCPUs to wake after an exit: a 256-bit set of vCPU ids.
pub type Kicks = [u64; 4];

/// What an IPI does to its target.
#[derive(Clone, Copy)]
enum Signal {
    Vector(u8),
    Init,
    Startup(u8),
    Nmi,
}

/// NMI state of a vCPU (`Vcpus::nmi`, bits). `PENDING` is set by senders;
/// the others only by the CPU that holds the vCPU.
mod nmi {
    /// An NMI waits for delivery (NMIs do not queue: one at most).
    pub const PENDING: u64 = 1 << 0;
    /// The guest is in its NMI handler: NMIs are blocked until its IRET.
    pub const MASKED: u64 = 1 << 1;
    /// The handler's IRET was intercepted and runs next: NMIs unblock at
    /// the exit after it.
    pub const UNMASKING: u64 = 1 << 2;
}

/// INIT/SIPI state of a vCPU (`Vcpus::sipi`).
const SIPI_RUNNING: u64 = 0;
const SIPI_WAIT: u64 = 1;
const SIPI_RECEIVED: u64 = 0x100;

/// Whether a vCPU may run now (`Vcpus::startup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    Run,
    /// It waits for INIT/SIPI: the driver sleeps until it is kicked.
    Wait,
}

impl Default for Vcpus {
    fn default() -> Self {
        Self::new()
    }
}

/// A new guest vCPU's VMCB: every intercept a guest needs, nested paging,
/// and the architectural reset state (real mode at 0xF000:FFF0). The
/// microkernel fills in the VM's tables and the ASID.
pub fn configure_vmcb(v: &mut Vmcb) {
    let c = &mut v.control;
    c.intercept_misc1 = required::MISC1
        | misc1::INTR
        | misc1::NMI
        | misc1::SMI
        | misc1::CPUID
        | misc1::HLT;
    c.intercept_misc2 = required::MISC2 | misc2::VMMCALL;
    c.np_control = NP_ENABLE;
    c.vintr = vintr::V_INTR_MASKING;
    c.guest_asid = ASID_PLACEHOLDER;
    let s = &mut v.save;
    let data = |selector: u16, base: u64| Segment {
        selector,
        attrib: 0x93,
        limit: 0xffff,
        base,
    };
    s.cs = Segment {
        attrib: 0x9b,
        ..data(0xf000, 0xffff_0000)
    };
    s.ds = data(0, 0);
    s.es = data(0, 0);
    s.fs = data(0, 0);
    s.gs = data(0, 0);
    s.ss = data(0, 0);
    s.tr = Segment {
        attrib: 0x8b,
        ..data(0, 0)
    };
    s.ldtr = Segment {
        attrib: 0x82,
        ..data(0, 0)
    };
    s.gdtr = Segment {
        limit: 0xffff,
        ..Segment::default()
    };
    s.idtr = s.gdtr;
    s.rip = 0xfff0;
    s.rflags = 2;
    s.cr0 = 0x6000_0010;
    s.efer = efer::SVME;
    s.dr6 = 0xffff_0ff0;
    s.dr7 = 0x400;
    s.g_pat = msr::PAT_DEFAULT;
}

/// What the VMM put in the run page for this `run.run` (copied once).
#[derive(Clone, Copy, Debug)]
pub struct RunInput {
    pub request: u64,
    pub raise: [u64; 4],
    pub io_data: u64,
    pub regs: RunRegs,
    pub apic: RunApic,
}

/// Applies the VMM's input before the guest runs again; the vCPUs an xAPIC
/// access's IPI must wake.
pub fn accept_input(v: &mut Vmcb, r: &mut VsRegs, vcpu: u64, input: &RunInput, vcpus: &Vcpus) -> Kicks {
    if let Some(slot) = Vcpus::slot(&vcpus.pending_in, vcpu) {
        let size = slot.swap(0, Ordering::AcqRel);
        if size != 0 {
            v.save.rax = merge(v.save.rax, input.io_data, size);
        }
    }
    if input.request & request::SET_REGS != 0 {
        svm_regs::write_regs(v, r, &input.regs);
    }
    if input.request & request::SET_SREGS != 0 {
        svm_regs::write_sregs(v, &input.regs);
    }
    let kicks = if input.request & request::APIC_ACCESS != 0 {
        apic_access(v, r, vcpu, &input.apic, vcpus)
    } else {
        NO_KICKS
    };
    if let Some(words) = vcpus.irq(vcpu) {
        for (w, raised) in words.iter().zip(input.raise) {
            w.fetch_or(raised, Ordering::AcqRel);
        }
    }
    kicks
}

/// No vCPU to wake.
pub const NO_KICKS: Kicks = [0; 4];

/// A `KICK` exit for `kicks`, or `None` if there is no one to wake.
pub fn kick_exit(kicks: Kicks) -> Option<RunExit> {
    (kicks != NO_KICKS).then(|| RunExit {
        kick: kicks,
        ..exit_record(exit_reason::KICK, 0)
    })
}

/// An xAPIC MMIO access the VMM decoded: performed on the vCPU's APIC; a
/// read loads the register the VMM named (32 bits, zero-extended). One the
/// APIC refuses reads as all ones and is not written, as the bus would do.
fn apic_access(v: &mut Vmcb, r: &mut VsRegs, vcpu: u64, a: &RunApic, vcpus: &Vcpus) -> Kicks {
    if a.write != 0 {
        let sent = vcpus.with_lapic(vcpu, |l| l.mmio_write(a.offset, a.value));
        // Only the logical ID and format change how others address it (and
        // EOI, the common write, must stay cheap).
        if matches!(a.offset / 16, lapic::reg::LDR | lapic::reg::DFR) {
            vcpus.sync_address(vcpu);
        }
        return match sent {
            Some(Ok(ipi)) => vcpus.deliver(vcpu, ipi),
            _ => NO_KICKS,
        };
    }
    let value = vcpus
        .with_lapic(vcpu, |l| l.mmio_read(a.offset))
        .and_then(Result::ok)
        .unwrap_or(u32::MAX);
    match a.gpr as usize {
        gpr::RAX => v.save.rax = u64::from(value),
        gpr::RSP => v.save.rsp = u64::from(value),
        i => {
            if let Some(slot) = r.gprs.get_mut(i) {
                *slot = u64::from(value);
            }
        }
    }
    NO_KICKS
}

/// RAX after an `in` of `size` bytes: the low bytes replaced, and a 4-byte
/// read zero-extends, as the CPU does.
fn merge(rax: u64, data: u64, size: u64) -> u64 {
    match size {
        1 => (rax & !0xff) | (data & 0xff),
        2 => (rax & !0xffff) | (data & 0xffff),
        _ => data & 0xffff_ffff,
    }
}

/// Before each run, at guest time `now` (TSC): fire the APIC timer if due,
/// re-deliver an event the exit interrupted, and offer the APIC's highest
/// deliverable interrupt as the VMCB's virtual interrupt (V_IRQ), which the
/// CPU delivers as soon as the guest's RFLAGS.IF and interrupt shadow allow.
///
/// Why V_IRQ rather than event injection: the CPU then decides when the
/// guest can take it (no interrupt-window exits), and QEMU's TCG (the
/// emulated machine) can deliver an injected external interrupt twice (its
/// VMRUN leaves the vector as a pending exception, which a kick of the
/// emulated CPU then delivers again); its virtual interrupts are sound.
/// [`settle_offer`] learns after the run whether the guest took it.
pub fn prepare_entry(v: &mut Vmcb, vcpu: u64, vcpus: &Vcpus, now: u64) {
    let c = &mut v.control;
    if c.exit_int_info & event::VALID != 0 {
        c.event_inj = c.exit_int_info;
        c.exit_int_info = 0;
    }
    let (offer, self_nmi) = vcpus
        .with_lapic(vcpu, |l| {
            vcpus.collect(vcpu, l);
            l.tick(now);
            (l.next_interrupt(), l.take_nmi())
        })
        .unwrap_or((None, false));
    if self_nmi {
        if let Some(s) = Vcpus::slot(&vcpus.nmi, vcpu) {
            s.fetch_or(nmi::PENDING, Ordering::AcqRel);
        }
    }
    vcpus.inject_nmi(c, vcpu);
    c.vintr &= !vintr::OFFER;
    if let Some(vector) = offer {
        c.vintr |= vintr::offer(vector);
    }
}

/// After a run: if the guest took the interrupt [`prepare_entry`] offered
/// (the CPU cleared V_IRQ, or an exit cut its delivery short and the CPU
/// reports it as the interrupted event, which is delivered again), the
/// vector moves into service in the APIC. The offer is withdrawn either
/// way; the next entry offers whatever is highest then.
pub fn settle_offer(v: &mut Vmcb, vcpu: u64, vcpus: &Vcpus) {
    let c = &mut v.control;
    let vector = vintr::vector(c.vintr);
    if vector == 0 {
        return;
    }
    let info = c.exit_int_info;
    let cut_short = info & (event::VALID | event::TYPE_MASK) == event::VALID | event::TYPE_INTERRUPT
        && info as u8 == vector;
    if c.vintr & vintr::V_IRQ == 0 || cut_short {
        let _ = vcpus.with_lapic(vcpu, |l| {
            if l.pending(vector) {
                l.accept(vector);
            }
        });
    }
    c.vintr &= !vintr::OFFER;
}

/// True if vCPU `vcpu` has an interrupt or NMI to take at `now` (for HLT).
fn wakes(vcpus: &Vcpus, vcpu: u64, now: u64) -> bool {
    let interrupt = vcpus
        .with_lapic(vcpu, |l| {
            vcpus.collect(vcpu, l);
            l.tick(now);
            l.next_interrupt().is_some()
        })
        .unwrap_or(false);
    interrupt || vcpus.nmi_deliverable(vcpu)
}

/// What to do after a guest exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAction {
    /// Run the guest again.
    Resume,
    /// Return to the root: its `run.run` completes with this exit.
    ToVmm(RunExit),
}

/// An exit record with `reason` and `qualification`, the rest zero.
pub fn exit_record(reason: u32, qualification: u64) -> RunExit {
    let mut e = RunExit::zeroed();
    e.reason = reason;
    e.qualification = qualification;
    e
}

fn to_vmm(reason: u32) -> GuestAction {
    GuestAction::ToVmm(exit_record(reason, 0))
}

/// Handles guest vCPU `vcpu`'s exit `exit` on CPU `cpu`. An exit for the
/// VMM carries the APIC timer's deadline.
pub fn handle(
    v: &mut Vmcb,
    r: &mut VsRegs,
    exit: Exit,
    vcpu: u64,
    cpu: usize,
    hv: &crate::state::HvState,
    host: &mut dyn Host,
) -> GuestAction {
    // First: an interrupt the guest took is in service before its EOI (or
    // anything else this exit does with the APIC) is handled.
    settle_offer(v, vcpu, &hv.vcpus);
    hv.vcpus.settle_nmi(vcpu, v.save.rip);
    handle_exit(v, r, exit, vcpu, cpu, hv, host)
}

/// Every exit to the root carries the APIC timer's deadline, which the
/// driver arms a host timer for (and MicroV remembers that it did).
pub fn for_root(mut e: RunExit, vcpu: u64, vcpus: &Vcpus) -> RunExit {
    e.deadline = vcpus.with_lapic(vcpu, Lapic::report_deadline).unwrap_or(0);
    e
}

fn handle_exit(
    v: &mut Vmcb,
    r: &mut VsRegs,
    exit: Exit,
    vcpu: u64,
    cpu: usize,
    hv: &crate::state::HvState,
    host: &mut dyn Host,
) -> GuestAction {
    let vcpus = &hv.vcpus;
    v.control.event_inj = 0;
    match exit {
        Exit::Cpuid => {
            let apic_id = vcpus.apic_id(vcpu);
            cpuid_with(v, r, host, hv, &|leaf, subleaf, root| {
                crate::cpuid::guest_view(leaf, subleaf, root, apic_id)
            });
            GuestAction::Resume
        }
        Exit::Msr { write } => {
            if let Some(e) = kick_exit(msr_access(v, r, write, vcpu, vcpus, host)) {
                // The IPI's targets are woken by the driver, which then runs
                // this vCPU again at once.
                return GuestAction::ToVmm(e);
            }
            // Only a write can move the timer (reads skip the TSC read).
            if write && vcpus.with_lapic(vcpu, |l| l.host_timer_late(host.tsc())) == Some(true) {
                return to_vmm(exit_reason::TIMER);
            }
            GuestAction::Resume
        }
        Exit::Hypercall => {
            let caller = CallerInfo {
                cpl: v.save.cpl,
                cpu,
                guest: true,
            };
            match hypercall::dispatch(v.save.rax, Args::from_gprs(&r.gprs), caller, hv, host) {
                Outcome::Done(status, out) => complete_hypercall(v, r, status, out),
                // Not a MicroV hypercall: #UD, as without MicroV.
                Outcome::InvalidOpcode => v.control.event_inj = event::exception(vector::UD),
                // Only discovery calls are served to guests; anything
                // else the dispatcher refuses before it gets here.
                _ => complete_hypercall(v, r, Status::PermissionDenied, Args::default()),
            }
            GuestAction::Resume
        }
        Exit::Io { access, .. } if access.string => string_io(v, &access),
        Exit::Io { access, next_rip } => {
            let mask = (1u64 << (8 * u32::from(access.size))) - 1;
            let mut e = exit_record(exit_reason::IO, 0);
            e.io = RunIo {
                port: access.port,
                size: access.size,
                direction: if access.is_in { io_direction::IN } else { io_direction::OUT },
                rep: 0,
                address_size: 0,
                reserved: 0,
                data: if access.is_in { 0 } else { v.save.rax & mask },
            };
            if access.is_in {
                if let Some(s) = Vcpus::slot(&vcpus.pending_in, vcpu) {
                    s.store(u64::from(access.size), Ordering::Release);
                }
            }
            v.save.rip = next_rip;
            v.control.interrupt_shadow &= !1;
            GuestAction::ToVmm(e)
        }
        Exit::NestedFault { gpa, write, fetch } => {
            let mut e = exit_record(exit_reason::MMIO, 0);
            let mut access = 0;
            if write {
                access |= mmio_access::WRITE;
            }
            if fetch {
                access |= mmio_access::FETCH;
            }
            e.mmio = RunMmio { gpa, access };
            GuestAction::ToVmm(e)
        }
        Exit::Hlt => {
            skip(v, HLT_LEN);
            if v.save.rflags & RFLAGS_IF != 0 && wakes(vcpus, vcpu, host.tsc()) {
                return GuestAction::Resume;
            }
            to_vmm(exit_reason::HLT)
        }
        Exit::HostInterrupt => to_vmm(exit_reason::INTERRUPTED),
        // Never asked for (V_IRQ offers need no window); nothing to do.
        Exit::InterruptWindow => GuestAction::Resume,
        // The NMI handler returns: let its IRET run, unblock after it.
        Exit::Iret => {
            v.control.intercept_misc1 &= !misc1::IRET;
            vcpus.iret_intercepted(vcpu, v.save.rip);
            GuestAction::Resume
        }
        Exit::Shutdown => to_vmm(exit_reason::SHUTDOWN),
        Exit::Init => GuestAction::Resume,
        // Hidden from the guest's CPUID; #UD, as on a CPU without it.
        Exit::VirtInstruction => {
            v.control.event_inj = event::exception(vector::UD);
            GuestAction::Resume
        }
        Exit::Xsetbv => {
            xsetbv(v, r, host);
            GuestAction::Resume
        }
        Exit::Invd => {
            skip(v, INVD_LEN);
            GuestAction::Resume
        }
        Exit::EntryFailed(code) => GuestAction::ToVmm(exit_record(exit_reason::FAIL_ENTRY, code)),
        Exit::Other(code) => GuestAction::ToVmm(exit_record(exit_reason::UNHANDLED, code)),
    }
}

/// INS/OUTS goes to the VMM with RIP still at the instruction: the VMM
/// decodes it (the segment, which the CPU reports only with decode
/// assists), moves the data between the port and guest memory and hands
/// the registers back. The instruction runs, so an interrupt shadow
/// before it ends here, as after any instruction.
fn string_io(v: &mut Vmcb, access: &crate::io::Access) -> GuestAction {
    let mut e = exit_record(exit_reason::STRING_IO, 0);
    e.io = RunIo {
        port: access.port,
        size: access.size,
        direction: if access.is_in { io_direction::IN } else { io_direction::OUT },
        rep: u8::from(access.rep),
        address_size: access.address_size,
        reserved: 0,
        data: 0,
    };
    v.control.interrupt_shadow &= !1;
    GuestAction::ToVmm(e)
}

/// A guest's RDMSR/WRMSR. The guest's own MSRs live in the VMCB (EFER,
/// the SYSCALL/SYSENTER MSRs, FS/GS bases, PAT) and its register page
/// (TSC_AUX, which the microkernel has in the MSR while the guest runs);
/// the x2APIC and the TSC deadline are the APIC's. EFER.SVME stays
/// MicroV's and hidden. Every other MSR raises #GP.
fn msr_access(v: &mut Vmcb, r: &mut VsRegs, write: bool, vcpu: u64, vcpus: &Vcpus, host: &mut dyn Host) -> Kicks {
    let index = r.gprs.get(gpr::RCX).copied().unwrap_or(0) as u32;
    let value = (r.gprs.get(gpr::RDX).copied().unwrap_or(0) << 32) | (v.save.rax & 0xffff_ffff);
    // TSC_AUX exists where the CPU has RDTSCP or RDPID (asked only for it).
    let tsc_aux = index == msr::TSC_AUX && crate::cpuid::has_tsc_aux(host);
    let mut kicks = NO_KICKS;
    let done = if write {
        msr_write(v, r, index, value, vcpu, vcpus, tsc_aux).map(|k| {
            kicks = k;
            None
        })
    } else {
        msr_read(v, r, index, vcpu, vcpus, tsc_aux).map(Some)
    };
    match done {
        Some(read) => {
            if let Some(x) = read {
                v.save.rax = x & 0xffff_ffff;
                if let Some(rdx) = r.gprs.get_mut(gpr::RDX) {
                    *rdx = x >> 32;
                }
            }
            skip(v, MSR_LEN);
        }
        None => v.control.event_inj = event::exception_with_code(vector::GP, 0),
    }
    kicks
}

/// AMD's NB_CFG: reads as 0, writes are ignored.
const NB_CFG: u32 = 0xc001_001f;

fn msr_read(v: &Vmcb, r: &VsRegs, index: u32, vcpu: u64, vcpus: &Vcpus, tsc_aux: bool) -> Option<u64> {
    let s = &v.save;
    Some(match index {
        msr::TSC_AUX if tsc_aux => r.tsc_aux,
        msr::EFER => s.efer & !efer::SVME,
        msr::STAR => s.star,
        msr::LSTAR => s.lstar,
        msr::CSTAR => s.cstar,
        msr::SFMASK => s.sfmask,
        msr::FS_BASE => s.fs.base,
        msr::GS_BASE => s.gs.base,
        msr::KERNEL_GS_BASE => s.kernel_gs_base,
        msr::SYSENTER_CS => s.sysenter_cs,
        msr::SYSENTER_ESP => s.sysenter_esp,
        msr::SYSENTER_EIP => s.sysenter_eip,
        msr::PAT => s.g_pat,
        // AMD's northbridge configuration: there is no northbridge in a
        // micro VM; Linux sets a PCI-config bit in it on every CPU.
        NB_CFG => 0,
        msr::APIC_BASE => vcpus.with_lapic(vcpu, |l| l.base_msr(l.id == 0))?,
        lapic::TSC_DEADLINE_MSR => vcpus.with_lapic(vcpu, |l| l.deadline())?,
        i if (lapic::X2APIC_BASE_MSR..lapic::X2APIC_BASE_MSR + 0x100).contains(&i) => {
            vcpus.with_lapic(vcpu, |l| l.read_msr(i - lapic::X2APIC_BASE_MSR))?.ok()?
        }
        _ => return None,
    })
}

/// The vCPUs to wake if the write was accepted; `None` if refused.
fn msr_write(
    v: &mut Vmcb,
    r: &mut VsRegs,
    index: u32,
    value: u64,
    vcpu: u64,
    vcpus: &Vcpus,
    tsc_aux: bool,
) -> Option<Kicks> {
    let s = &mut v.save;
    let canonical = microv_arch::paging::is_canonical(value);
    match index {
        // Bits 63:32: Intel reserves them (#GP), current AMD CPUs drop
        // them; guests here see an AMD CPU, so they are dropped and the
        // value is always 32 bits.
        msr::TSC_AUX if tsc_aux => r.tsc_aux = value & 0xffff_ffff,
        msr::EFER => {
            let allowed = efer::SCE | efer::LME | efer::LMA | efer::NXE;
            // As the CPU: LME cannot change while paging is on, and LMA
            // is the CPU's (writes to it are ignored).
            let paging = s.cr0 & CR0_PG != 0;
            if value & !allowed != 0 || paging && (value ^ s.efer) & efer::LME != 0 {
                return None;
            }
            s.efer = (value & !efer::LMA) | (s.efer & efer::LMA) | efer::SVME;
        }
        msr::STAR => s.star = value,
        msr::LSTAR if canonical => s.lstar = value,
        msr::CSTAR if canonical => s.cstar = value,
        msr::SFMASK => s.sfmask = value & 0xffff_ffff,
        msr::FS_BASE if canonical => s.fs.base = value,
        msr::GS_BASE if canonical => s.gs.base = value,
        msr::KERNEL_GS_BASE if canonical => s.kernel_gs_base = value,
        msr::SYSENTER_CS => s.sysenter_cs = value & 0xffff,
        msr::SYSENTER_ESP if canonical => s.sysenter_esp = value,
        msr::SYSENTER_EIP if canonical => s.sysenter_eip = value,
        msr::PAT if msr::pat_valid(value) => s.g_pat = value,
        NB_CFG => {}
        msr::APIC_BASE => {
            vcpus.with_lapic(vcpu, |l| l.set_base(value, l.id == 0))?.ok()?;
            vcpus.sync_address(vcpu);
        }
        lapic::TSC_DEADLINE_MSR => vcpus.with_lapic(vcpu, |l| l.set_deadline(value))?,
        i if (lapic::X2APIC_BASE_MSR..lapic::X2APIC_BASE_MSR + 0x100).contains(&i) => {
            let ipi = vcpus.with_lapic(vcpu, |l| l.write_msr(i - lapic::X2APIC_BASE_MSR, value))?.ok()?;
            return Some(vcpus.deliver(vcpu, ipi));
        }
        _ => return None,
    }
    Some(NO_KICKS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;
    use crate::io::Access;
    use crate::state::HvState;
    use microv_abi::hypercall::{encode, Hypercall};
    use microv_arch::svm::exit;
    use zerocopy::FromZeros;

    struct Setup {
        v: Box<Vmcb>,
        r: VsRegs,
        hv: HvState,
        host: FakeHost,
    }

    fn setup() -> Setup {
        let mut v = Box::new(Vmcb::new_zeroed());
        configure_vmcb(&mut v);
        v.save.rip = 0x1000;
        let hv = HvState::new();
        hv.vcpus.add(7, 2, 0);
        Setup {
            v,
            r: VsRegs::default(),
            hv,
            host: FakeHost::default(),
        }
    }

    impl Setup {
        /// The exit as the root gets it (with the deadline).
        fn exit(&mut self, e: Exit) -> GuestAction {
            match handle(&mut self.v, &mut self.r, e, 7, 0, &self.hv, &mut self.host) {
                GuestAction::ToVmm(e) => GuestAction::ToVmm(for_root(e, 7, &self.hv.vcpus)),
                resume => resume,
            }
        }
    }

    fn input() -> RunInput {
        RunInput {
            request: 0,
            raise: [0; 4],
            io_data: 0,
            regs: RunRegs::zeroed(),
            apic: RunApic::zeroed(),
        }
    }

    #[test]
    fn the_reset_state_is_refused_nothing_the_microkernel_requires() {
        let s = setup();
        let c = &s.v.control;
        assert_eq!(c.intercept_misc1 & required::MISC1, required::MISC1);
        assert_eq!(c.intercept_misc2 & required::MISC2, required::MISC2);
        assert_ne!(c.intercept_misc1 & misc1::INTR, 0);
        assert_ne!(c.intercept_misc1 & misc1::NMI, 0);
        assert_ne!(c.vintr & vintr::V_INTR_MASKING, 0);
        // RDTSCP runs in the guest: TSC_AUX is its own while it runs.
        assert_eq!(c.intercept_misc2 & misc2::RDTSCP, 0);
        assert_eq!(s.v.save.cs.base + s.v.save.rip, 0xffff_0000 + 0x1000);
        assert_ne!(s.v.save.efer & efer::SVME, 0);
    }

    #[test]
    fn vcpus_are_claimed_by_one_cpu_at_a_time() {
        let s = setup();
        assert_eq!(s.hv.vcpus.vm_of(7), Some(2));
        assert_eq!(s.hv.vcpus.vm_of(8), None);
        assert!(s.hv.vcpus.vm_has_vcpus(2));
        assert!(!s.hv.vcpus.claim(8, 0), "not a guest vCPU");
        assert!(s.hv.vcpus.claim(7, 0));
        assert!(!s.hv.vcpus.claim(7, 1));
        assert!(s.hv.vcpus.is_claimed(7));
        s.hv.vcpus.release(7);
        assert!(s.hv.vcpus.claim(7, 1));
        s.hv.vcpus.set_running_on(1, Some(7));
        assert_eq!(s.hv.vcpus.running_on(1), Some(7));
        s.hv.vcpus.set_running_on(1, None);
        assert_eq!(s.hv.vcpus.running_on(1), None);
        s.hv.vcpus.set_root(1, 4);
        assert_eq!(s.hv.vcpus.root_of(1), 4);
        s.hv.vcpus.remove(7);
        assert_eq!(s.hv.vcpus.vm_of(7), None);
        assert!(!s.hv.vcpus.vm_has_vcpus(2));
    }

    #[test]
    fn port_io_goes_to_the_vmm_and_an_in_completes_at_the_next_run() {
        let mut s = setup();
        s.v.save.rax = 0x1234_5678_9abc_def0;
        let out = Access { port: 0x3f8, size: 2, is_in: false, string: false, rep: false, address_size: 2 };
        let GuestAction::ToVmm(e) = s.exit(Exit::Io { access: out, next_rip: 0x1002 }) else {
            panic!()
        };
        assert_eq!((e.reason, e.io.port, e.io.size, e.io.direction, e.io.data), (exit_reason::IO, 0x3f8, 2, io_direction::OUT, 0xdef0));
        assert_eq!(s.v.save.rip, 0x1002);
        let inb = Access { port: 0x3fd, size: 1, is_in: true, ..out };
        let GuestAction::ToVmm(e) = s.exit(Exit::Io { access: inb, next_rip: 0x1003 }) else {
            panic!()
        };
        assert_eq!(e.io.direction, io_direction::IN);
        let mut i = input();
        i.io_data = 0x1_2360;
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        assert_eq!(s.v.save.rax, 0x1234_5678_9abc_de60);
        // Completed once only.
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        assert_eq!(s.v.save.rax, 0x1234_5678_9abc_de60);
        assert_eq!(merge(u64::MAX, 0x1_2345_6789, 4), 0x2345_6789);
        assert_eq!(merge(u64::MAX, 0x1_2345_6789, 2), 0xffff_ffff_ffff_6789);
    }

    #[test]
    fn string_io_goes_to_the_vmm_at_the_instruction() {
        let mut s = setup();
        s.v.save.rax = 0x1234;
        s.v.control.interrupt_shadow = 1;
        let rep_outsw = Access { port: 0x3f8, size: 2, is_in: false, string: true, rep: true, address_size: 8 };
        let GuestAction::ToVmm(e) = s.exit(Exit::Io { access: rep_outsw, next_rip: 0x1003 }) else {
            panic!()
        };
        assert_eq!(
            (e.reason, e.io.port, e.io.size, e.io.direction, e.io.rep, e.io.address_size, e.io.data),
            (exit_reason::STRING_IO, 0x3f8, 2, io_direction::OUT, 1, 8, 0)
        );
        assert!(exit_reason::writes_special_registers(e.reason), "the VMM translates with them");
        assert_eq!(s.v.save.rip, 0x1000, "the VMM completes the instruction");
        assert_eq!(s.v.control.interrupt_shadow, 0, "the instruction ran");
        let insb = Access { size: 1, is_in: true, rep: false, address_size: 4, ..rep_outsw };
        let GuestAction::ToVmm(e) = s.exit(Exit::Io { access: insb, next_rip: 0x1001 }) else {
            panic!()
        };
        assert_eq!((e.io.direction, e.io.size, e.io.rep, e.io.address_size), (io_direction::IN, 1, 0, 4));
        // No `in` is pending: the next run leaves RAX alone.
        let mut i = input();
        i.io_data = 0xff;
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        assert_eq!(s.v.save.rax, 0x1234);
    }

    #[test]
    fn accesses_outside_guest_memory_are_mmio_for_the_vmm() {
        let mut s = setup();
        let GuestAction::ToVmm(e) = s.exit(Exit::NestedFault { gpa: 0xfee0_0030, write: true, fetch: false }) else {
            panic!()
        };
        assert_eq!((e.reason, e.mmio.gpa, e.mmio.access), (exit_reason::MMIO, 0xfee0_0030, mmio_access::WRITE));
        assert_eq!(s.v.save.rip, 0x1000, "the VMM completes the instruction");
        let GuestAction::ToVmm(e) = s.exit(Exit::NestedFault { gpa: 0x10, write: false, fetch: true }) else {
            panic!()
        };
        assert_eq!(e.mmio.access, mmio_access::FETCH);
    }

    #[test]
    fn host_interrupts_shutdown_and_failures_end_the_run() {
        let mut s = setup();
        let reason = |a: GuestAction| match a {
            GuestAction::ToVmm(e) => (e.reason, e.qualification),
            GuestAction::Resume => (u32::MAX, 0),
        };
        assert_eq!(reason(s.exit(Exit::HostInterrupt)), (exit_reason::INTERRUPTED, 0));
        assert_eq!(reason(s.exit(Exit::Shutdown)), (exit_reason::SHUTDOWN, 0));
        s.v.control.exit_code = exit::INVALID;
        assert_eq!(reason(s.exit(Exit::EntryFailed(exit::INVALID))), (exit_reason::FAIL_ENTRY, exit::INVALID));
        assert_eq!(reason(s.exit(Exit::Other(0x7e))), (exit_reason::UNHANDLED, 0x7e));
        assert_eq!(s.exit(Exit::Init), GuestAction::Resume);
    }

    #[test]
    fn svm_instructions_fault_and_management_calls_are_refused() {
        let mut s = setup();
        assert_eq!(s.exit(Exit::VirtInstruction), GuestAction::Resume);
        assert_eq!(s.v.control.event_inj, event::exception(vector::UD));
        // Even with the root's handle in R10, from guest ring 0.
        s.hv.handle.store(0x55, Ordering::Release);
        s.r.gprs[gpr::R10] = 0x55;
        s.v.save.rax = encode(Hypercall::HvStopPp);
        assert_eq!(s.exit(Exit::Hypercall), GuestAction::Resume);
        assert_eq!(s.v.save.rax, Status::PermissionDenied.as_u64());
        assert_eq!(s.v.save.rip, 0x1003);
        s.v.save.rax = encode(Hypercall::IdVersion);
        s.exit(Exit::Hypercall);
        assert_eq!(s.v.save.rax, Status::Success.as_u64());
        assert_eq!(s.r.gprs[gpr::R10], microv_abi::hypercall::ABI_VERSION);
        // A foreign vmmcall raises #UD, as without MicroV.
        s.v.save.rax = 0;
        s.exit(Exit::Hypercall);
        assert_eq!(s.v.control.event_inj, event::exception(vector::UD));
    }

    #[test]
    fn efer_is_the_guests_and_other_msrs_fault() {
        let mut s = setup();
        s.r.gprs[gpr::RCX] = u64::from(msr::EFER);
        s.v.save.rax = efer::LME | efer::SCE;
        s.exit(Exit::Msr { write: true });
        assert_eq!(s.v.save.efer, efer::LME | efer::SCE | efer::SVME);
        s.exit(Exit::Msr { write: false });
        assert_eq!(s.v.save.rax, efer::LME | efer::SCE);
        s.v.save.rax = efer::SVME;
        s.exit(Exit::Msr { write: true });
        assert_eq!(s.v.control.event_inj, event::exception_with_code(vector::GP, 0));
        // In long mode with paging on: LME stays, LMA is the CPU's.
        s.v.save.cr0 = CR0_PG | 1;
        s.v.save.efer = efer::LME | efer::LMA | efer::SVME;
        assert!(!s.wrmsr(msr::EFER, 0));
        assert!(s.wrmsr(msr::EFER, efer::LME | efer::NXE));
        assert_eq!(s.v.save.efer, efer::LME | efer::LMA | efer::NXE | efer::SVME);
    }

    impl Setup {
        fn wrmsr(&mut self, index: u32, value: u64) -> bool {
            self.r.gprs[gpr::RCX] = u64::from(index);
            self.r.gprs[gpr::RDX] = value >> 32;
            self.v.save.rax = value & 0xffff_ffff;
            self.v.control.event_inj = 0;
            self.exit(Exit::Msr { write: true });
            self.v.control.event_inj == 0
        }
        fn rdmsr(&mut self, index: u32) -> Option<u64> {
            self.r.gprs[gpr::RCX] = u64::from(index);
            self.v.control.event_inj = 0;
            self.exit(Exit::Msr { write: false });
            (self.v.control.event_inj == 0).then(|| self.r.gprs[gpr::RDX] << 32 | self.v.save.rax)
        }
    }

    const SVR: u32 = lapic::X2APIC_BASE_MSR + lapic::reg::SVR;
    const EOI: u32 = lapic::X2APIC_BASE_MSR + lapic::reg::EOI;
    const LVT_TIMER: u32 = lapic::X2APIC_BASE_MSR + lapic::reg::LVT_TIMER;
    const ICR: u32 = lapic::X2APIC_BASE_MSR + lapic::reg::ICR;

    impl Setup {
        /// The vector offered as the virtual interrupt, if any.
        fn offered(&self) -> Option<u8> {
            (self.v.control.vintr & vintr::V_IRQ != 0).then(|| vintr::vector(self.v.control.vintr))
        }
        /// The CPU delivers the offered interrupt (it clears V_IRQ).
        fn take(&mut self) {
            self.v.control.vintr &= !vintr::V_IRQ;
        }
        fn in_service(&self, vector: u8) -> bool {
            self.hv.vcpus.with_lapic(7, |l| l.read_msr(lapic::reg::ISR0 + u32::from(vector / 32)))
                .and_then(Result::ok)
                .is_some_and(|w| w & (1 << (vector % 32)) != 0)
        }
        fn pending(&self, vector: u8) -> bool {
            self.hv.vcpus.with_lapic(7, |l| l.pending(vector)) == Some(true)
        }
    }

    #[test]
    fn interrupts_are_offered_as_virtual_interrupts_and_in_service_once_taken() {
        let mut s = setup();
        assert!(s.wrmsr(SVR, 0x1ff));
        let mut i = input();
        i.raise[0] = 1 << 0x30;
        i.raise[1] = 1 << (0x41 - 64);
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        // The highest is offered whatever RFLAGS.IF says: the CPU waits
        // until the guest can take it, with no window exit.
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!((s.offered(), s.v.control.event_inj), (Some(0x41), 0));
        assert_ne!(s.v.control.vintr & vintr::V_IGN_TPR, 0);
        assert_eq!((s.v.control.vintr >> vintr::PRIO_SHIFT) & 0xf, 4);
        assert_eq!(s.v.control.intercept_misc1 & misc1::VINTR, 0);
        // An exit before the guest took it: withdrawn, still pending.
        assert_eq!(s.exit(Exit::Cpuid), GuestAction::Resume);
        assert_eq!(s.v.control.vintr & vintr::OFFER, 0);
        assert!(s.pending(0x41) && !s.in_service(0x41));
        // Taken: in service at the next exit; 0x30 (a lower class) waits.
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        s.take();
        assert_eq!(s.exit(Exit::Cpuid), GuestAction::Resume);
        assert!(!s.pending(0x41) && s.in_service(0x41));
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!(s.offered(), None);
        assert!(s.wrmsr(EOI, 0));
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!(s.offered(), Some(0x30));
        // The handler's EOI exit settles the offer before the EOI.
        s.take();
        assert!(s.wrmsr(EOI, 0));
        assert!(!s.pending(0x30) && !s.in_service(0x30));
        // A delivery an exit cut short: in service, then injected again.
        s.hv.vcpus.with_lapic(7, |l| l.raise(0x50));
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        s.v.control.exit_int_info = event::interrupt(0x50);
        let nested = Exit::NestedFault { gpa: 0x5000, write: true, fetch: false };
        assert!(matches!(s.exit(nested), GuestAction::ToVmm(_)));
        assert!(s.in_service(0x50));
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!(s.v.control.event_inj, event::interrupt(0x50));
        assert_eq!((s.v.control.exit_int_info, s.offered()), (0, None));
        // An interrupted exception is delivered again too; the offer stands.
        s.v.control.event_inj = 0;
        s.hv.vcpus.with_lapic(7, |l| l.raise(0x60));
        s.v.control.exit_int_info = event::exception(14);
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!((s.v.control.event_inj, s.offered()), (event::exception(14), Some(0x60)));
        // A window exit (never requested) changes nothing.
        assert_eq!(s.exit(Exit::InterruptWindow), GuestAction::Resume);
    }

    #[test]
    fn the_tsc_deadline_timer_wakes_a_halted_guest() {
        let mut s = setup();
        s.v.save.rflags = RFLAGS_IF | 2;
        assert!(s.wrmsr(SVR, 0x1ff));
        assert!(s.wrmsr(LVT_TIMER, 2 << 17 | 0xec));
        assert!(s.wrmsr(lapic::TSC_DEADLINE_MSR, 5000));
        assert_eq!(s.rdmsr(lapic::TSC_DEADLINE_MSR), Some(5000));
        // HLT before the deadline: the VMM learns when to wake it.
        s.host.tsc = 4000;
        let GuestAction::ToVmm(e) = s.exit(Exit::Hlt) else {
            panic!()
        };
        assert_eq!((e.reason, e.deadline), (exit_reason::HLT, 5000));
        // At the next entry after the deadline the timer interrupt goes in.
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 5000);
        assert_eq!(s.offered(), Some(0xec));
        // HLT after the deadline resumes at once.
        s.take();
        assert!(s.wrmsr(EOI, 0));
        assert!(s.wrmsr(lapic::TSC_DEADLINE_MSR, 6000));
        s.host.tsc = 7000;
        assert_eq!(s.exit(Exit::Hlt), GuestAction::Resume);
        // A deadline earlier than the host timer the last exit asked for
        // goes back to the driver to re-arm it; a later one does not.
        assert_eq!(s.exit(Exit::Hlt), GuestAction::Resume);
        s.take();
        assert!(s.wrmsr(EOI, 0));
        s.host.tsc = 8000;
        let write_deadline = |s: &mut Setup, tsc: u64| {
            s.r.gprs[gpr::RCX] = u64::from(lapic::TSC_DEADLINE_MSR);
            s.r.gprs[gpr::RDX] = tsc >> 32;
            s.v.save.rax = tsc & 0xffff_ffff;
            match s.exit(Exit::Msr { write: true }) {
                GuestAction::ToVmm(e) => Some((e.reason, e.deadline)),
                GuestAction::Resume => None,
            }
        };
        let rip = s.v.save.rip;
        assert_eq!(write_deadline(&mut s, 20_000), Some((exit_reason::TIMER, 20_000)));
        assert_eq!(s.v.save.rip, rip + 2, "past the WRMSR");
        assert_eq!(write_deadline(&mut s, 30_000), None, "the host timer at 20000 comes first");
        assert_eq!(write_deadline(&mut s, 15_000), Some((exit_reason::TIMER, 15_000)));
        // With interrupts off HLT goes to the VMM, deadline 0 when disarmed.
        assert_eq!(write_deadline(&mut s, 0), None);
        s.v.save.rflags = 2;
        let GuestAction::ToVmm(e) = s.exit(Exit::Hlt) else {
            panic!()
        };
        assert_eq!(e.deadline, 0);
    }

    #[test]
    fn nmis_go_in_one_at_a_time_and_unblock_after_the_handlers_iret() {
        let mut s = setup();
        s.hv.vcpus.add(8, 2, 1);
        assert!(s.wrmsr(SVR, 0x1ff));
        // To vCPU 8 (APIC ID 1): it is kicked and may take it; 7 has none.
        s.r.gprs[gpr::RCX] = u64::from(ICR);
        s.r.gprs[gpr::RDX] = 1;
        s.v.save.rax = 4 << 8;
        let GuestAction::ToVmm(e) = s.exit(Exit::Msr { write: true }) else {
            panic!("no kick")
        };
        assert_eq!((e.reason, e.kick[0]), (exit_reason::KICK, 1 << 8));
        assert!(s.hv.vcpus.nmi_deliverable(8) && !s.hv.vcpus.nmi_deliverable(7));
        assert!(wakes(&s.hv.vcpus, 8, 0), "a pending NMI ends a HLT");
        // A self-NMI, but in an interrupt shadow: it waits.
        assert!(s.wrmsr(ICR, 1 << 18 | 4 << 8));
        s.v.control.interrupt_shadow = 1;
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!(s.v.control.event_inj, 0);
        // Then it goes in, and the handler's IRET is intercepted.
        s.v.control.interrupt_shadow = 0;
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!(s.v.control.event_inj, event::nmi());
        assert_ne!(s.v.control.intercept_misc1 & misc1::IRET, 0);
        assert!(!wakes(&s.hv.vcpus, 7, 0));
        // Another while the handler runs stays pending (one at most).
        assert!(s.wrmsr(ICR, 1 << 18 | 4 << 8));
        assert!(s.wrmsr(ICR, 1 << 18 | 4 << 8));
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!(s.v.control.event_inj, 0);
        // The IRET at 0x2000 runs without the intercept; an exit before it
        // ran (still at 0x2000) keeps NMIs blocked.
        s.v.save.rip = 0x2000;
        assert_eq!(s.exit(Exit::Iret), GuestAction::Resume);
        assert_eq!(s.v.control.intercept_misc1 & misc1::IRET, 0);
        assert!(matches!(s.exit(Exit::HostInterrupt), GuestAction::ToVmm(_)));
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!(s.v.control.event_inj, 0);
        // After it, the second goes in; there is no third.
        s.v.save.rip = 0x1000;
        assert!(matches!(s.exit(Exit::HostInterrupt), GuestAction::ToVmm(_)));
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!(s.v.control.event_inj, event::nmi());
        s.v.control.event_inj = 0;
        s.v.save.rip = 0x2000;
        s.exit(Exit::Iret);
        s.v.save.rip = 0x1000;
        s.exit(Exit::HostInterrupt);
        prepare_entry(&mut s.v, 7, &s.hv.vcpus, 0);
        assert_eq!(s.v.control.event_inj, 0);
        // A SIPI's reset clears the NMI state.
        s.hv.vcpus.deliver(7, Some(Ipi::Init { dest: lapic::Dest::Physical(1) }));
        s.hv.vcpus.deliver(7, Some(Ipi::Startup { dest: lapic::Dest::Physical(1), vector: 0x9a }));
        let mut ap = Box::new(Vmcb::new_zeroed());
        assert_eq!(s.hv.vcpus.startup(&mut ap, 8), Startup::Run);
        assert!(!s.hv.vcpus.nmi_deliverable(8));
    }

    #[test]
    fn ipis_reach_the_other_vcpus_of_the_same_vm_only() {
        let mut s = setup();
        s.hv.vcpus.add(8, 2, 1);
        s.hv.vcpus.add(9, 3, 1);
        assert!(s.wrmsr(ICR, 1 << 32 | 0x50));
        assert!(s.wrmsr(ICR, 3 << 18 | 0x51));
        let pending = |v: u64| s.hv.vcpus.with_lapic(v, |l| {
            s.hv.vcpus.collect(v, l);
            (l.pending(0x50), l.pending(0x51))
        });
        assert_eq!(pending(8), Some((true, true)));
        assert_eq!(pending(9), Some((false, false)), "another VM's vCPU with the same APIC ID");
        assert_eq!(pending(7), Some((false, false)), "all-but-self excludes the sender");
        // INIT/SIPI are accepted and not modelled yet.
        assert!(s.wrmsr(ICR, 1 << 32 | 5 << 8));
    }

    #[test]
    fn secondary_vcpus_wait_for_init_and_sipi_and_ipis_kick_their_targets() {
        let mut s = setup();
        s.hv.vcpus.add(8, 2, 1);
        let mut ap = Box::new(Vmcb::new_zeroed());
        configure_vmcb(&mut ap);
        // The BSP runs; the AP waits.
        assert_eq!(s.hv.vcpus.startup(&mut s.v, 7), Startup::Run);
        assert_eq!(s.hv.vcpus.startup(&mut ap, 8), Startup::Wait);
        // Linux sends INIT, SIPI, SIPI.
        s.r.gprs[gpr::RCX] = u64::from(ICR);
        s.r.gprs[gpr::RDX] = 1;
        s.v.save.rax = 5 << 8; // INIT
        let kick = |a: GuestAction| match a {
            GuestAction::ToVmm(e) if e.reason == exit_reason::KICK => e.kick,
            other => panic!("{other:?}"),
        };
        assert_eq!(kick(s.exit(Exit::Msr { write: true })), [1 << 8, 0, 0, 0]);
        assert_eq!(s.hv.vcpus.startup(&mut ap, 8), Startup::Wait);
        s.v.save.rax = 6 << 8 | 0x9a; // SIPI, vector 0x9a
        assert_eq!(kick(s.exit(Exit::Msr { write: true })), [1 << 8, 0, 0, 0]);
        s.v.save.rax = 6 << 8 | 0x55; // the second SIPI: ignored
        s.exit(Exit::Msr { write: true });
        assert_eq!(s.hv.vcpus.startup(&mut ap, 8), Startup::Run);
        assert_eq!((ap.save.cs.selector, ap.save.cs.base, ap.save.rip), (0x9a00, 0x9_a000, 0));
        assert_eq!(s.hv.vcpus.startup(&mut ap, 8), Startup::Run);
        // A fixed IPI to the running AP kicks it too; one to nobody does not.
        s.v.save.rax = 0x40;
        assert_eq!(kick(s.exit(Exit::Msr { write: true })), [1 << 8, 0, 0, 0]);
        s.r.gprs[gpr::RDX] = 9;
        assert_eq!(s.exit(Exit::Msr { write: true }), GuestAction::Resume);
        assert_eq!(kick_exit(NO_KICKS), None);
        // An xAPIC-mode IPI (through the VMM's hand-back) kicks as well.
        assert!(s.wrmsr(msr::APIC_BASE, 0xfee0_0000 | 1 << 8));
        assert!(s.wrmsr(msr::APIC_BASE, 0xfee0_0000 | 1 << 11 | 1 << 8));
        let mut i = input();
        i.request = request::APIC_ACCESS;
        i.apic = RunApic { offset: 0x310, write: 1, value: 1 << 24, gpr: 0 };
        assert_eq!(accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus), NO_KICKS);
        i.apic = RunApic { offset: 0x300, write: 1, value: 0x41, gpr: 0 };
        assert_eq!(accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus), [1 << 8, 0, 0, 0]);
    }

    #[test]
    fn logical_ipis_reach_the_vcpus_whose_logical_id_matches() {
        let mut s = setup();
        s.hv.vcpus.add(8, 2, 1);
        // Both vCPUs in xAPIC flat mode, as Linux sets them up: vCPU 7 has
        // logical bit 0, vCPU 8 bit 1.
        let to_xapic = |s: &mut Setup, vcpu: u64, bsp: u64| {
            let _ = s.hv.vcpus.with_lapic(vcpu, |l| {
                l.set_base(0xfee0_0000 | bsp, bsp != 0).unwrap();
                l.set_base(0xfee0_0000 | 1 << 11 | bsp, bsp != 0).unwrap();
            });
        };
        to_xapic(&mut s, 7, 1 << 8);
        to_xapic(&mut s, 8, 0);
        let _ = s.hv.vcpus.with_lapic(8, |l| l.mmio_write(0xd0, 2 << 24).unwrap());
        s.hv.vcpus.sync_address(8);
        let mut i = input();
        i.request = request::APIC_ACCESS;
        i.apic = RunApic { offset: 0xd0, write: 1, value: 1 << 24, gpr: 0 };
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        // Logical destination 0x02: vCPU 8, not APIC ID 2 (nobody).
        i.apic = RunApic { offset: 0x310, write: 1, value: 2 << 24, gpr: 0 };
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        i.apic = RunApic { offset: 0x300, write: 1, value: 1 << 11 | 0xfb, gpr: 0 };
        assert_eq!(accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus), [1 << 8, 0, 0, 0]);
        let pending = s.hv.vcpus.with_lapic(8, |l| {
            s.hv.vcpus.collect(8, l);
            l.pending(0xfb)
        });
        assert_eq!(pending, Some(true));
        // Logical 0x01 is vCPU 7 itself: raised there, nobody kicked.
        i.apic = RunApic { offset: 0x310, write: 1, value: 1 << 24, gpr: 0 };
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        i.apic = RunApic { offset: 0x300, write: 1, value: 1 << 11 | 0xfc, gpr: 0 };
        assert_eq!(accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus), NO_KICKS);
        assert_eq!(s.hv.vcpus.with_lapic(7, |l| l.pending(0xfc)), Some(true));
    }

    #[test]
    fn tsc_aux_is_the_guests_own_32_bits() {
        let mut s = setup();
        // Reset value 0 (the register page starts zeroed).
        assert_eq!(s.rdmsr(msr::TSC_AUX), Some(0));
        assert!(s.wrmsr(msr::TSC_AUX, 0xdead_beef));
        assert_eq!(s.r.tsc_aux, 0xdead_beef, "kept where the microkernel loads it from");
        assert_eq!(s.rdmsr(msr::TSC_AUX), Some(0xdead_beef));
        assert_eq!(s.v.save.rip, 0x1000 + 3 * MSR_LEN);
        // Bits 63:32 are dropped, as AMD CPUs do.
        assert!(s.wrmsr(msr::TSC_AUX, 1 << 32 | 5));
        assert_eq!(s.rdmsr(msr::TSC_AUX), Some(5));
        assert!(s.wrmsr(msr::TSC_AUX, 0));
        assert_eq!(s.r.tsc_aux, 0);
    }

    #[test]
    fn without_rdtscp_and_rdpid_there_is_no_tsc_aux() {
        let mut s = setup();
        let none = microv_arch::cpuid::CpuidResult::default();
        s.host.cpuid_answers.insert(7, none);
        s.host.cpuid_answers.insert(0x8000_0001, none);
        assert_eq!(s.rdmsr(msr::TSC_AUX), None);
        assert!(!s.wrmsr(msr::TSC_AUX, 1));
        assert_eq!(s.r.tsc_aux, 0);
        // RDTSCP alone, or RDPID alone, brings it.
        s.host.cpuid_answers.insert(0x8000_0001, microv_arch::cpuid::CpuidResult { edx: 1 << 27, ..none });
        assert!(s.wrmsr(msr::TSC_AUX, 1));
        s.host.cpuid_answers.insert(0x8000_0001, none);
        s.host.cpuid_answers.insert(7, microv_arch::cpuid::CpuidResult { ecx: 1 << 22, ..none });
        assert_eq!(s.rdmsr(msr::TSC_AUX), Some(1));
    }

    #[test]
    fn the_guests_own_msrs_live_in_its_state() {
        let mut s = setup();
        for (index, value) in [
            (msr::STAR, 0x0023_0010_0000_0000),
            (msr::LSTAR, 0xffff_ffff_8100_0000),
            (msr::CSTAR, 0xffff_ffff_8100_1000),
            (msr::SFMASK, 0x4_7700),
            (msr::FS_BASE, 0x7f00_0000_0000),
            (msr::GS_BASE, 0xffff_8880_0000_0000),
            (msr::KERNEL_GS_BASE, 0x1000),
            (msr::SYSENTER_CS, 0x10),
            (msr::SYSENTER_ESP, 0x2000),
            (msr::SYSENTER_EIP, 0x3000),
            (msr::PAT, 0x0007_0406_0007_0406),
        ] {
            assert!(s.wrmsr(index, value), "{index:#x}");
            assert_eq!(s.rdmsr(index), Some(value), "{index:#x}");
        }
        // Non-canonical bases and a bad PAT fault, as on hardware.
        assert!(!s.wrmsr(msr::LSTAR, 0x8000_0000_0000));
        assert!(!s.wrmsr(msr::PAT, 0x08));
        // APIC_BASE: x2APIC mode, BSP for APIC ID 0; it cannot be changed.
        let base = s.rdmsr(msr::APIC_BASE).unwrap();
        assert_eq!(base, 0xfee0_0000 | 1 << 11 | 1 << 10 | 1 << 8);
        assert!(s.wrmsr(msr::APIC_BASE, base));
        assert!(!s.wrmsr(msr::APIC_BASE, base & !(1 << 10)));
        // x2APIC registers through their MSRs; reserved ones fault.
        assert_eq!(s.rdmsr(lapic::X2APIC_BASE_MSR + lapic::reg::ID), Some(0));
        assert_eq!(s.rdmsr(lapic::X2APIC_BASE_MSR + 0x3d), None);
        assert!(!s.wrmsr(EOI, 1));
        // Linux's way out of x2APIC mode (no interrupt remapping under an
        // unknown hypervisor): disable, then enable in xAPIC mode; the APIC
        // is then reached by MMIO the VMM decodes and hands back.
        assert!(s.wrmsr(msr::APIC_BASE, 0xfee0_0000 | 1 << 8));
        assert!(s.wrmsr(msr::APIC_BASE, 0xfee0_0000 | 1 << 11 | 1 << 8));
        assert_eq!(s.rdmsr(lapic::X2APIC_BASE_MSR + lapic::reg::ID), None);
        let mut i = input();
        i.request = request::APIC_ACCESS;
        i.apic = RunApic { offset: 0xf0, write: 1, value: 0x1ff, gpr: 0 };
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        for (gpr_index, offset) in [(gpr::RAX, 0xf0), (gpr::R9, 0x20), (gpr::RSP, 0x30), (gpr::RBX, 0x24)] {
            i.apic = RunApic { offset, write: 0, value: 0, gpr: gpr_index as u32 };
            s.v.save.rax = u64::MAX;
            accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
            let got = match gpr_index {
                gpr::RAX => s.v.save.rax,
                gpr::RSP => s.v.save.rsp,
                n => s.r.gprs[n],
            };
            let expected = match offset {
                0xf0 => 0x1ff,
                0x20 => 0,
                0x30 => 0x6_0014,
                _ => 0xffff_ffff,
            };
            assert_eq!(got, expected, "APIC offset {offset:#x}");
        }
        // NB_CFG: nothing behind it.
        assert!(s.wrmsr(NB_CFG, 1 << 46));
        assert_eq!(s.rdmsr(NB_CFG), Some(0));
        // Platform MSRs stay out of reach.
        assert_eq!(s.rdmsr(msr::MTRR_CAP), None);
        assert!(!s.wrmsr(0xc001_0015, 0));
    }

    #[test]
    fn set_regs_and_sregs_requests_load_the_registers() {
        let mut s = setup();
        let mut i = input();
        i.regs.rip = 0x2000;
        i.regs.gprs[gpr::RBX] = 9;
        i.regs.cr0 = 0x11;
        i.request = request::SET_REGS;
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        assert_eq!((s.v.save.rip, s.r.gprs[gpr::RBX]), (0x2000, 9));
        assert_eq!(s.v.save.cr0, 0x6000_0010, "special registers only on request");
        i.request = request::SET_SREGS;
        accept_input(&mut s.v, &mut s.r, 7, &i, &s.hv.vcpus);
        assert_eq!(s.v.save.cr0, 0x11);
    }

    #[test]
    fn cpuid_xsetbv_and_invd_are_handled_in_place() {
        let mut s = setup();
        s.v.save.rax = 0x4000_0000;
        assert_eq!(s.exit(Exit::Cpuid), GuestAction::Resume);
        assert_eq!(s.r.gprs[gpr::RBX] as u32, u32::from_le_bytes(*b"Micr"));
        let rip = s.v.save.rip;
        s.exit(Exit::Invd);
        assert_eq!(s.v.save.rip, rip + 2);
        // XSETBV from the reset state (CPL 0): x87 alone is valid.
        s.v.save.rax = 1;
        s.r.gprs[gpr::RCX] = 0;
        s.r.gprs[gpr::RDX] = 0;
        s.exit(Exit::Xsetbv);
        assert_eq!(s.r.xcr0, 1);
    }
}
