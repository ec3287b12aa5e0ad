//! A guest vCPU's local APIC: what a Linux guest needs for its timer,
//! end-of-interrupt and IPIs. It starts in x2APIC mode (MSRs 0x800–0x8FF,
//! no trip to the VMM); a guest may switch it to xAPIC mode through
//! IA32_APIC_BASE, and then reaches it by MMIO, which the VMM decodes and
//! hands back (`abi::run::RunApic`). Device interrupts arrive as vectors
//! from the VMM's IOAPIC (the run page's `raise` set); the TSC-deadline
//! timer fires from the TSC, checked before every entry.
//!
//! Pure logic, host-tested: the caller supplies the time (TSC) and delivers
//! what [`Lapic::next_interrupt`] returns.

/// x2APIC register numbers (MSR index − 0x800).
pub mod reg {
    pub const ID: u32 = 0x02;
    pub const VERSION: u32 = 0x03;
    pub const TPR: u32 = 0x08;
    pub const PPR: u32 = 0x0a;
    pub const EOI: u32 = 0x0b;
    pub const LDR: u32 = 0x0d;
    pub const SVR: u32 = 0x0f;
    pub const ISR0: u32 = 0x10;
    pub const TMR0: u32 = 0x18;
    pub const IRR0: u32 = 0x20;
    pub const ESR: u32 = 0x28;
    pub const LVT_CMCI: u32 = 0x2f;
    pub const ICR: u32 = 0x30;
    pub const LVT_TIMER: u32 = 0x32;
    pub const LVT_THERMAL: u32 = 0x33;
    pub const LVT_PERF: u32 = 0x34;
    pub const LVT_LINT0: u32 = 0x35;
    pub const LVT_LINT1: u32 = 0x36;
    pub const LVT_ERROR: u32 = 0x37;
    pub const TIMER_INITIAL: u32 = 0x38;
    pub const TIMER_CURRENT: u32 = 0x39;
    pub const TIMER_DIVIDE: u32 = 0x3e;
    pub const SELF_IPI: u32 = 0x3f;
    /// xAPIC only: destination format, and the ICR's high half.
    pub const DFR: u32 = 0x0e;
    pub const ICR_HIGH: u32 = 0x31;
}

/// IA32_APIC_BASE bits.
pub mod base {
    pub const BSP: u64 = 1 << 8;
    pub const EXTD: u64 = 1 << 10;
    pub const ENABLE: u64 = 1 << 11;
    /// The only place this APIC can be.
    pub const ADDRESS: u64 = 0xfee0_0000;
}

/// First x2APIC MSR.
pub const X2APIC_BASE_MSR: u32 = 0x800;
/// IA32_TSC_DEADLINE.
pub const TSC_DEADLINE_MSR: u32 = 0x6e0;
/// Version register: version 0x14, 7 LVT entries (max LVT index 6).
const VERSION: u64 = 0x0006_0014;
const LVT_MASKED: u32 = 1 << 16;
const LVT_VECTOR: u32 = 0xff;
/// LVT timer mode bits 18:17: 0 one-shot, 1 periodic, 2 TSC-deadline.
const TIMER_MODE_SHIFT: u32 = 17;
const TIMER_MODE_DEADLINE: u32 = 2;
const SVR_ENABLED: u32 = 1 << 8;
/// ICR delivery mode bits 10:8 (0 fixed) and destination shorthand 19:18.
const ICR_MODE_SHIFT: u32 = 8;
const ICR_SHORTHAND_SHIFT: u32 = 18;
/// ICR delivery mode 4: NMI (the vector is ignored).
const ICR_MODE_NMI: u32 = 4;
/// ICR bit 11: logical destination mode.
const ICR_LOGICAL: u32 = 1 << 11;

/// Why an access is refused (the guest gets #GP, as on hardware).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// Where an IPI goes: an APIC ID, or a logical destination (matched
/// against each APIC's logical ID, [`Address::accepts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Physical(u32),
    Logical(u32),
}

/// An inter-processor interrupt the guest sent (fixed or lowest-priority
/// delivery, which goes to every APIC the destination names; INIT; SIPI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    To { dest: Dest, vector: u8 },
    /// To every vCPU but the sender.
    AllButSelf { vector: u8 },
    /// INIT or STARTUP (SMP bring-up), with the SIPI vector.
    Init { dest: Dest },
    Startup { dest: Dest, vector: u8 },
    /// A non-maskable interrupt, to `dest` or (None) every vCPU but the
    /// sender.
    Nmi { dest: Option<Dest> },
}

/// How an APIC is addressed: its ID, mode and logical destination
/// registers. Other vCPUs match IPIs against it without touching the APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub id: u32,
    pub x2apic: bool,
    /// xAPIC: LDR and DFR as the guest wrote them; x2APIC: the LDR the
    /// ID implies.
    pub ldr: u32,
    pub dfr: u32,
}

impl Address {
    /// True if an IPI for `dest` reaches this APIC.
    pub fn accepts(&self, dest: Dest) -> bool {
        match (dest, self.x2apic) {
            (Dest::Physical(d), true) => d == u32::MAX || d == self.id,
            (Dest::Physical(d), false) => d == 0xff || d == self.id,
            (Dest::Logical(d), true) => {
                d == u32::MAX || (d >> 16 == self.ldr >> 16 && d & self.ldr & 0xffff != 0)
            }
            (Dest::Logical(d), false) => {
                let mda = d & 0xff;
                let logical = self.ldr >> 24;
                if mda == 0xff {
                    true
                } else if self.dfr >> 28 == 0xf {
                    // Flat model: one bit per APIC.
                    mda & logical != 0
                } else {
                    // Cluster model: cluster in the high nibble.
                    mda >> 4 == logical >> 4 && mda & logical & 0xf != 0
                }
            }
        }
    }

    /// Packed for an atomic word (the ID is kept apart).
    pub fn pack(&self) -> u64 {
        u64::from(self.ldr) | u64::from(self.dfr >> 28) << 32 | u64::from(self.x2apic) << 40
    }

    /// The inverse of [`Address::pack`].
    pub fn unpack(id: u32, word: u64) -> Self {
        Address {
            id,
            x2apic: word >> 40 & 1 != 0,
            ldr: word as u32,
            dfr: ((word >> 32) as u32 & 0xf) << 28 | 0x0fff_ffff,
        }
    }
}

/// The local APIC state of one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lapic {
    pub id: u32,
    /// Globally enabled (IA32_APIC_BASE.EN) and in x2APIC mode (EXTD).
    enabled: bool,
    x2apic: bool,
    /// xAPIC mode only: logical destination, format, ICR high half.
    ldr: u32,
    dfr: u32,
    icr_high: u32,
    tpr: u32,
    svr: u32,
    isr: [u64; 4],
    irr: [u64; 4],
    lvt: [u32; 7],
    esr: u32,
    /// TSC-deadline: the TSC value at which the timer fires (0: disarmed).
    deadline: u64,
    /// The deadline the last exit to the root reported (0: none): the
    /// host timer the driver arms until the next exit.
    host_deadline: u64,
    /// An NMI this APIC sent itself, not yet taken by the vCPU.
    nmi: bool,
    divide: u32,
}

fn bit(set: &[u64; 4], v: u8) -> bool {
    set.get(usize::from(v >> 6)).is_some_and(|w| w >> (v & 63) & 1 != 0)
}

fn set_bit(set: &mut [u64; 4], v: u8, on: bool) {
    if let Some(w) = set.get_mut(usize::from(v >> 6)) {
        if on {
            *w |= 1 << (v & 63);
        } else {
            *w &= !(1 << (v & 63));
        }
    }
}

fn highest(set: &[u64; 4]) -> Option<u8> {
    set.iter()
        .enumerate()
        .rev()
        .find(|(_, &w)| w != 0)
        .map(|(i, &w)| (i as u32 * 64 + 63 - w.leading_zeros()) as u8)
}

/// Index into `lvt` for an LVT register.
fn lvt_index(r: u32) -> Option<usize> {
    match r {
        reg::LVT_CMCI => Some(0),
        reg::LVT_TIMER..=reg::LVT_ERROR => Some((r - reg::LVT_TIMER + 1) as usize),
        _ => None,
    }
}

impl Lapic {
    /// The state after reset: software-disabled, every LVT masked.
    pub const fn new(id: u32) -> Self {
        Lapic {
            id,
            enabled: true,
            x2apic: true,
            ldr: 0,
            dfr: u32::MAX,
            icr_high: 0,
            tpr: 0,
            svr: 0xff,
            isr: [0; 4],
            irr: [0; 4],
            lvt: [LVT_MASKED; 7],
            esr: 0,
            deadline: 0,
            host_deadline: 0,
            nmi: false,
            divide: 0,
        }
    }

    /// IA32_APIC_BASE as the guest reads it; `bsp` for vCPU 0.
    pub fn base_msr(&self, bsp: bool) -> u64 {
        let mut v = base::ADDRESS;
        if self.enabled {
            v |= base::ENABLE;
        }
        if self.x2apic {
            v |= base::EXTD;
        }
        if bsp {
            v |= base::BSP;
        }
        v
    }

    /// WRMSR IA32_APIC_BASE: the transitions the architecture allows
    /// (x2APIC → disabled → xAPIC → x2APIC, each step on its own); the
    /// address cannot move. Disabling resets the APIC's state, as on
    /// hardware.
    pub fn set_base(&mut self, value: u64, bsp: bool) -> Result<(), Refused> {
        if value == self.base_msr(bsp) {
            return Ok(());
        }
        if value & !(base::ENABLE | base::EXTD | base::BSP) != base::ADDRESS
            || value & base::BSP != self.base_msr(bsp) & base::BSP
        {
            return Err(Refused);
        }
        let (en, x2) = (value & base::ENABLE != 0, value & base::EXTD != 0);
        let allowed = match (self.enabled, self.x2apic, en, x2) {
            // Disable from either mode.
            (true, _, false, false) => true,
            // Enable in xAPIC mode from disabled; xAPIC → x2APIC.
            (false, _, true, false) | (true, false, true, true) => true,
            _ => false,
        };
        if !allowed {
            return Err(Refused);
        }
        if !en {
            *self = Lapic {
                enabled: false,
                x2apic: false,
                ..Lapic::new(self.id)
            };
        } else {
            self.enabled = true;
            self.x2apic = x2;
        }
        Ok(())
    }

    /// How other APICs address this one.
    pub fn address(&self) -> Address {
        if self.x2apic {
            Address {
                id: self.id,
                x2apic: true,
                ldr: (self.id >> 4) << 16 | 1 << (self.id & 0xf),
                dfr: u32::MAX,
            }
        } else {
            Address {
                id: self.id,
                x2apic: false,
                ldr: self.ldr,
                dfr: self.dfr,
            }
        }
    }

    /// True in x2APIC mode (MSR access); false in xAPIC mode (MMIO) or
    /// when disabled.
    pub fn is_x2apic(&self) -> bool {
        self.enabled && self.x2apic
    }

    /// A 32-bit MMIO read at `offset` in the APIC page (xAPIC mode).
    pub fn mmio_read(&self, offset: u32) -> Result<u32, Refused> {
        if !self.enabled || self.x2apic || !offset.is_multiple_of(16) {
            return Err(Refused);
        }
        let r = offset / 16;
        Ok(match r {
            reg::ID => self.id << 24,
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::ICR_HIGH => self.icr_high,
            reg::EOI | reg::SELF_IPI => 0,
            r => self.read(r)? as u32,
        })
    }

    /// A 32-bit MMIO write at `offset` in the APIC page (xAPIC mode); an
    /// IPI the guest sent, if any.
    pub fn mmio_write(&mut self, offset: u32, value: u32) -> Result<Option<Ipi>, Refused> {
        if !self.enabled || self.x2apic || !offset.is_multiple_of(16) {
            return Err(Refused);
        }
        match offset / 16 {
            reg::LDR => self.ldr = value & 0xff00_0000,
            reg::DFR => self.dfr = value | 0x0fff_ffff,
            reg::ICR_HIGH => self.icr_high = value & 0xff00_0000,
            reg::EOI => return self.write(reg::EOI, 0),
            reg::ICR => {
                let dest = u64::from(self.icr_high >> 24);
                return Ok(self.icr(dest << 32 | u64::from(value)));
            }
            reg::SELF_IPI => return Err(Refused),
            r => return self.write(r, u64::from(value)),
        }
        Ok(None)
    }

    fn ppr(&self) -> u32 {
        let isrv = highest(&self.isr).map_or(0, u32::from);
        if self.tpr & 0xf0 >= isrv & 0xf0 {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    /// RDMSR of x2APIC register `r` (refused outside x2APIC mode).
    pub fn read_msr(&self, r: u32) -> Result<u64, Refused> {
        if !self.is_x2apic() {
            return Err(Refused);
        }
        self.read(r)
    }

    /// WRMSR of x2APIC register `r` (refused outside x2APIC mode).
    pub fn write_msr(&mut self, r: u32, value: u64) -> Result<Option<Ipi>, Refused> {
        if !self.is_x2apic() {
            return Err(Refused);
        }
        self.write(r, value)
    }

    /// A register read common to both modes.
    fn read(&self, r: u32) -> Result<u64, Refused> {
        let word = |set: &[u64; 4], i: u32| -> u64 {
            let w = set.get((i / 2) as usize).copied().unwrap_or(0);
            (w >> (32 * (i % 2))) & 0xffff_ffff
        };
        Ok(match r {
            reg::ID => u64::from(self.id),
            reg::VERSION => VERSION,
            reg::TPR => u64::from(self.tpr),
            reg::PPR => u64::from(self.ppr()),
            // Cluster = ID[19:4], bit ID[3:0] within the cluster.
            reg::LDR => u64::from(((self.id >> 4) << 16) | (1 << (self.id & 0xf))),
            reg::SVR => u64::from(self.svr),
            r if (reg::ISR0..reg::ISR0 + 8).contains(&r) => word(&self.isr, r - reg::ISR0),
            r if (reg::TMR0..reg::TMR0 + 8).contains(&r) => 0,
            r if (reg::IRR0..reg::IRR0 + 8).contains(&r) => word(&self.irr, r - reg::IRR0),
            reg::ESR => u64::from(self.esr),
            reg::TIMER_INITIAL | reg::TIMER_CURRENT => 0,
            reg::TIMER_DIVIDE => u64::from(self.divide),
            r => match lvt_index(r).and_then(|i| self.lvt.get(i)) {
                Some(&v) => u64::from(v),
                // EOI and SELF_IPI are write-only; ICR reads are allowed.
                None if r == reg::ICR => 0,
                None => return Err(Refused),
            },
        })
    }

    /// A register write common to both modes; an IPI the guest sent.
    fn write(&mut self, r: u32, value: u64) -> Result<Option<Ipi>, Refused> {
        let low = value as u32;
        // Only ICR takes 64 bits; every other register refuses high bits.
        if r != reg::ICR && value >> 32 != 0 {
            return Err(Refused);
        }
        match r {
            reg::TPR => self.tpr = low & 0xff,
            reg::EOI => {
                if low != 0 {
                    return Err(Refused);
                }
                if let Some(v) = highest(&self.isr) {
                    set_bit(&mut self.isr, v, false);
                }
            }
            reg::SVR => self.svr = low & 0x1ff,
            reg::ESR => self.esr = 0,
            reg::ICR => return Ok(self.icr(value)),
            reg::SELF_IPI => self.raise((low & 0xff) as u8),
            reg::TIMER_INITIAL => {}
            reg::TIMER_DIVIDE => self.divide = low & 0xb,
            r => match lvt_index(r).and_then(|i| self.lvt.get_mut(i)) {
                Some(slot) => {
                    *slot = low & 0x7_17ff;
                    if r == reg::LVT_TIMER && !self.deadline_mode() {
                        self.deadline = 0;
                    }
                }
                None => return Err(Refused),
            },
        }
        Ok(None)
    }

    /// An ICR write: the IPI for other vCPUs, if any (one this APIC is
    /// itself a target of is raised here too).
    fn icr(&mut self, value: u64) -> Option<Ipi> {
        let vector = value as u8;
        let low = value as u32;
        let d = (value >> 32) as u32;
        let dest = if low & ICR_LOGICAL != 0 {
            Dest::Logical(d)
        } else {
            Dest::Physical(d)
        };
        let mode = (low >> ICR_MODE_SHIFT) & 7;
        match ((low >> ICR_SHORTHAND_SHIFT) & 3, mode) {
            // Self.
            (1, 0) => {
                self.raise(vector);
                None
            }
            // All but self.
            (3, 0) => Some(Ipi::AllButSelf { vector }),
            // All including self.
            (2, 0) => {
                self.raise(vector);
                Some(Ipi::AllButSelf { vector })
            }
            // Fixed or lowest priority (delivered to every target).
            (0, 0 | 1) => {
                if self.address().accepts(dest) {
                    self.raise(vector);
                }
                (dest != Dest::Physical(self.id)).then_some(Ipi::To { dest, vector })
            }
            (0, 5) => Some(Ipi::Init { dest }),
            (0, 6) => Some(Ipi::Startup { dest, vector }),
            // NMI: to itself, to all (but itself), or to a destination.
            (1, ICR_MODE_NMI) => {
                self.nmi = true;
                None
            }
            (shorthand @ (2 | 3), ICR_MODE_NMI) => {
                self.nmi |= shorthand == 2;
                Some(Ipi::Nmi { dest: None })
            }
            (0, ICR_MODE_NMI) => {
                if self.address().accepts(dest) {
                    self.nmi = true;
                }
                (dest != Dest::Physical(self.id)).then_some(Ipi::Nmi { dest: Some(dest) })
            }
            // SMI, INIT/SIPI with a shorthand: not modelled.
            _ => None,
        }
    }

    fn deadline_mode(&self) -> bool {
        self.lvt.get(1).is_some_and(|t| (t >> TIMER_MODE_SHIFT) & 3 == TIMER_MODE_DEADLINE)
    }

    /// RDMSR IA32_TSC_DEADLINE.
    pub fn deadline(&self) -> u64 {
        self.deadline
    }

    /// WRMSR IA32_TSC_DEADLINE: arms (or with 0 disarms) the timer; ignored
    /// unless the LVT timer is in TSC-deadline mode, as on hardware.
    pub fn set_deadline(&mut self, tsc: u64) {
        if self.deadline_mode() {
            self.deadline = tsc;
        }
    }

    /// The TSC value at which the timer fires, if armed: the driver sleeps
    /// (or arms a host timer) until then.
    pub fn next_deadline(&self) -> Option<u64> {
        (self.deadline != 0).then_some(self.deadline)
    }

    /// An exit to the root reports the deadline: the driver arms its host
    /// timer for it (or sleeps until it) before the vCPU runs again.
    pub fn report_deadline(&mut self) -> u64 {
        self.host_deadline = self.deadline;
        self.deadline
    }

    /// True if the timer is armed for later than `now` but the host timer
    /// the last exit reported will not fire by then (it was for later, or
    /// has passed, or there was none): the vCPU must go back to the driver
    /// to re-arm it, else the guest's timer would wait for whatever host
    /// interrupt comes next.
    pub fn host_timer_late(&self, now: u64) -> bool {
        let host = self.host_deadline;
        self.deadline > now && !(host > now && host <= self.deadline)
    }

    /// Fires the timer if `now` reached its deadline.
    pub fn tick(&mut self, now: u64) {
        if self.deadline != 0 && now >= self.deadline {
            self.deadline = 0;
            let lvt = self.lvt.get(1).copied().unwrap_or(LVT_MASKED);
            if lvt & LVT_MASKED == 0 {
                self.raise((lvt & LVT_VECTOR) as u8);
            }
        }
    }

    /// A fixed interrupt for `vector` arrives (vectors below 16 are
    /// illegal and dropped, as the APIC does, with an error bit).
    pub fn raise(&mut self, vector: u8) {
        if vector < 16 {
            self.esr |= 1 << 6;
            return;
        }
        set_bit(&mut self.irr, vector, true);
    }

    /// The vector to deliver now, if one outranks what is in service and the
    /// task priority; the APIC must be enabled, globally and in software.
    pub fn next_interrupt(&self) -> Option<u8> {
        if !self.enabled || self.svr & SVR_ENABLED == 0 {
            return None;
        }
        let v = highest(&self.irr)?;
        (u32::from(v) & 0xf0 > self.ppr() & 0xf0).then_some(v)
    }

    /// The guest accepted `vector`: it moves from requested to in service.
    pub fn accept(&mut self, vector: u8) {
        set_bit(&mut self.irr, vector, false);
        set_bit(&mut self.isr, vector, true);
    }

    /// Takes the NMI this APIC sent itself, if any.
    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.nmi)
    }

    /// True if `vector` waits for delivery.
    pub fn pending(&self, vector: u8) -> bool {
        bit(&self.irr, vector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(id: u32) -> Lapic {
        let mut a = Lapic::new(id);
        a.write_msr(reg::SVR, 0x1ff).unwrap();
        a
    }

    #[test]
    fn identity_registers_read_as_an_x2apic() {
        let a = Lapic::new(0x23);
        assert_eq!(a.read_msr(reg::ID), Ok(0x23));
        assert_eq!(a.read_msr(reg::VERSION), Ok(VERSION));
        assert_eq!(a.read_msr(reg::LDR), Ok(0x2_0008));
        assert_eq!(a.read_msr(reg::LVT_TIMER), Ok(u64::from(LVT_MASKED)));
        assert_eq!(a.read_msr(reg::EOI), Err(Refused));
        assert_eq!(a.read_msr(0x3f), Err(Refused));
        assert_eq!(a.read_msr(reg::ICR), Ok(0));
        assert_eq!(a.read_msr(reg::TMR0 + 3), Ok(0));
    }

    #[test]
    fn a_disabled_apic_delivers_nothing() {
        let mut a = Lapic::new(0);
        a.raise(0x40);
        assert!(a.pending(0x40));
        assert_eq!(a.next_interrupt(), None);
        a.write_msr(reg::SVR, 0x1ff).unwrap();
        assert_eq!(a.next_interrupt(), Some(0x40));
    }

    #[test]
    fn priorities_isr_and_eoi() {
        let mut a = enabled(0);
        a.raise(0x31);
        a.raise(0x52);
        assert_eq!(a.next_interrupt(), Some(0x52));
        a.accept(0x52);
        assert_eq!(a.read_msr(reg::ISR0 + 2), Ok(1 << (0x52 - 64)));
        // 0x31 is a lower class than the one in service.
        assert_eq!(a.next_interrupt(), None);
        assert_eq!(a.read_msr(reg::PPR), Ok(0x50));
        a.raise(0x61);
        assert_eq!(a.next_interrupt(), Some(0x61));
        a.write_msr(reg::EOI, 0).unwrap();
        assert_eq!(a.next_interrupt(), Some(0x61));
        // TPR holds off everything at or below its class.
        a.write_msr(reg::TPR, 0x60).unwrap();
        assert_eq!(a.next_interrupt(), None);
        a.write_msr(reg::TPR, 0).unwrap();
        assert_eq!(a.read_msr(reg::IRR0 + 3), Ok(1 << (0x61 - 96)));
        assert_eq!(a.write_msr(reg::EOI, 1), Err(Refused));
        assert_eq!(a.write_msr(reg::TPR, 1 << 32), Err(Refused));
    }

    #[test]
    fn the_tsc_deadline_timer_fires_once_at_its_deadline() {
        let mut a = enabled(0);
        // Not in deadline mode: the MSR write is ignored.
        a.set_deadline(1000);
        assert_eq!(a.next_deadline(), None);
        a.write_msr(reg::LVT_TIMER, u64::from(TIMER_MODE_DEADLINE << TIMER_MODE_SHIFT | 0xec)).unwrap();
        a.set_deadline(1000);
        assert_eq!((a.deadline(), a.next_deadline()), (1000, Some(1000)));
        a.tick(999);
        assert!(!a.pending(0xec));
        a.tick(1000);
        assert!(a.pending(0xec));
        assert_eq!(a.next_deadline(), None);
        // Masked: disarms without an interrupt.
        a.accept(0xec);
        a.write_msr(reg::LVT_TIMER, u64::from(TIMER_MODE_DEADLINE << TIMER_MODE_SHIFT | LVT_MASKED | 0xec)).unwrap();
        a.set_deadline(5);
        a.tick(6);
        assert!(!a.pending(0xec));
        // Leaving deadline mode disarms.
        a.write_msr(reg::LVT_TIMER, u64::from(TIMER_MODE_DEADLINE << TIMER_MODE_SHIFT | 0xec)).unwrap();
        a.set_deadline(50);
        a.write_msr(reg::LVT_TIMER, 0xec).unwrap();
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn the_host_timer_is_late_unless_it_fires_by_the_deadline() {
        let mut a = enabled(0);
        a.write_msr(reg::LVT_TIMER, u64::from(TIMER_MODE_DEADLINE << TIMER_MODE_SHIFT | 0xec)).unwrap();
        // No host timer yet: a future deadline needs one, a due one not
        // (the next entry fires it), nor a disarmed timer.
        a.set_deadline(1000);
        assert!(a.host_timer_late(10));
        assert!(!a.host_timer_late(1000));
        a.set_deadline(0);
        assert!(!a.host_timer_late(10));
        // The exit reported 1000: a later deadline is reached through it,
        // an earlier one is not.
        a.set_deadline(1000);
        assert_eq!(a.report_deadline(), 1000);
        a.set_deadline(2000);
        assert!(!a.host_timer_late(10));
        a.set_deadline(500);
        assert!(a.host_timer_late(10));
        // Once the reported deadline has passed, its host timer is spent.
        a.set_deadline(2000);
        assert!(a.host_timer_late(1500));
    }

    #[test]
    fn ipis_to_self_stay_and_others_go_out() {
        let mut a = enabled(1);
        assert_eq!(a.write_msr(reg::SELF_IPI, 0x45), Ok(None));
        assert!(a.pending(0x45));
        assert_eq!(a.write_msr(reg::ICR, 1 << 18 | 0x46), Ok(None));
        assert!(a.pending(0x46));
        assert_eq!(a.write_msr(reg::ICR, 1 << 32 | 0x47), Ok(None), "to its own ID");
        assert!(a.pending(0x47));
        assert_eq!(
            a.write_msr(reg::ICR, 2 << 32 | 0x48),
            Ok(Some(Ipi::To { dest: Dest::Physical(2), vector: 0x48 }))
        );
        assert_eq!(a.write_msr(reg::ICR, 3 << 18 | 0x49), Ok(Some(Ipi::AllButSelf { vector: 0x49 })));
        assert_eq!(a.write_msr(reg::ICR, 2 << 18 | 0x4a), Ok(Some(Ipi::AllButSelf { vector: 0x4a })));
        assert!(a.pending(0x4a));
        assert_eq!(
            a.write_msr(reg::ICR, 2 << 32 | 5 << 8),
            Ok(Some(Ipi::Init { dest: Dest::Physical(2) }))
        );
        assert_eq!(
            a.write_msr(reg::ICR, 2 << 32 | 6 << 8 | 0x9a),
            Ok(Some(Ipi::Startup { dest: Dest::Physical(2), vector: 0x9a }))
        );
        // NMIs: to itself (shorthand, or its own ID), to others, to all.
        assert!(!a.take_nmi());
        assert_eq!(a.write_msr(reg::ICR, 1 << 18 | 4 << 8), Ok(None));
        assert!(a.take_nmi() && !a.take_nmi(), "taken once");
        assert_eq!(a.write_msr(reg::ICR, 1 << 32 | 4 << 8), Ok(None), "to its own ID");
        assert!(a.take_nmi());
        assert_eq!(
            a.write_msr(reg::ICR, 2 << 32 | 4 << 8),
            Ok(Some(Ipi::Nmi { dest: Some(Dest::Physical(2)) }))
        );
        assert!(!a.take_nmi());
        assert_eq!(a.write_msr(reg::ICR, 3 << 18 | 4 << 8), Ok(Some(Ipi::Nmi { dest: None })));
        assert!(!a.take_nmi());
        assert_eq!(a.write_msr(reg::ICR, 2 << 18 | 4 << 8), Ok(Some(Ipi::Nmi { dest: None })));
        assert!(a.take_nmi());
        assert_eq!(a.write_msr(reg::ICR, 3 << 18 | 2 << 8), Ok(None), "SMI: not modelled");
        // Illegal vectors set the error register.
        a.raise(3);
        assert!(!a.pending(3));
        assert_eq!(a.read_msr(reg::ESR), Ok(1 << 6));
        a.write_msr(reg::ESR, 0).unwrap();
        assert_eq!(a.read_msr(reg::ESR), Ok(0));
    }

    #[test]
    fn apic_base_moves_between_modes_as_the_architecture_allows() {
        let mut a = enabled(0);
        let x2 = base::ADDRESS | base::ENABLE | base::EXTD;
        assert_eq!(a.base_msr(true), x2 | base::BSP);
        assert_eq!(a.base_msr(false), x2);
        assert!(a.is_x2apic());
        // Straight to xAPIC, moving it, or flipping BSP: refused.
        assert_eq!(a.set_base(base::ADDRESS | base::ENABLE, false), Err(Refused));
        assert_eq!(a.set_base(0xfed0_0000 | base::ENABLE | base::EXTD, false), Err(Refused));
        assert_eq!(a.set_base(x2 | base::BSP, false), Err(Refused));
        assert_eq!(a.set_base(x2, false), Ok(()));
        // Disable (Linux's order), then xAPIC: state is reset.
        a.raise(0x40);
        assert_eq!(a.set_base(base::ADDRESS, false), Ok(()));
        assert!(!a.is_x2apic());
        assert_eq!(a.read_msr(reg::ID), Err(Refused));
        assert_eq!(a.set_base(base::ADDRESS | base::EXTD, false), Err(Refused), "EXTD without EN");
        assert_eq!(a.set_base(base::ADDRESS | base::ENABLE, false), Ok(()));
        assert!(!a.pending(0x40));
        assert_eq!(a.next_interrupt(), None);
        // And back to x2APIC.
        assert_eq!(a.set_base(x2, false), Ok(()));
        assert!(a.is_x2apic());
        assert_eq!(a.mmio_read(0x20), Err(Refused), "no MMIO in x2APIC mode");
    }

    fn xapic(id: u32) -> Lapic {
        let mut a = Lapic::new(id);
        a.set_base(base::ADDRESS, false).unwrap();
        a.set_base(base::ADDRESS | base::ENABLE, false).unwrap();
        a
    }

    #[test]
    fn xapic_registers_through_mmio() {
        let mut a = xapic(2);
        assert_eq!(a.mmio_read(0x20), Ok(2 << 24));
        assert_eq!(a.mmio_read(0x30), Ok(VERSION as u32));
        assert_eq!(a.mmio_read(0xe0), Ok(u32::MAX));
        a.mmio_write(0xd0, 0x0100_0000).unwrap();
        a.mmio_write(0xe0, 0x0fff_ffff).unwrap();
        assert_eq!((a.mmio_read(0xd0), a.mmio_read(0xe0)), (Ok(0x0100_0000), Ok(0x0fff_ffff)));
        a.mmio_write(0xf0, 0x1ff).unwrap();
        a.raise(0x30);
        assert_eq!(a.next_interrupt(), Some(0x30));
        a.accept(0x30);
        // EOI takes any value in xAPIC mode.
        a.mmio_write(0xb0, 0x1234).unwrap();
        assert_eq!(a.mmio_read(0x100), Ok(0));
        // ICR: destination from the high half; the low write sends.
        a.mmio_write(0x310, 5 << 24).unwrap();
        assert_eq!(a.mmio_read(0x310), Ok(5 << 24));
        assert_eq!(
            a.mmio_write(0x300, 0x41),
            Ok(Some(Ipi::To { dest: Dest::Physical(5), vector: 0x41 }))
        );
        a.mmio_write(0x310, 2 << 24).unwrap();
        assert_eq!(a.mmio_write(0x300, 0x42), Ok(None));
        assert!(a.pending(0x42));
        // The timer's LVT and the TSC deadline work as in x2APIC mode.
        a.mmio_write(0x320, TIMER_MODE_DEADLINE << TIMER_MODE_SHIFT | 0xec).unwrap();
        a.set_deadline(10);
        assert_eq!(a.next_deadline(), Some(10));
        // No self-IPI register, no unaligned or x2APIC MSR access.
        assert_eq!(a.mmio_write(0x3f0, 0x40), Err(Refused));
        assert_eq!(a.mmio_read(0x24), Err(Refused));
        assert_eq!(a.write_msr(reg::TPR, 0), Err(Refused));
    }

    #[test]
    fn logical_destinations_reach_the_apics_they_name() {
        // xAPIC flat model (Linux's "flat" routing): one bit per CPU.
        let mut a = xapic(0);
        a.mmio_write(0xf0, 0x1ff).unwrap();
        a.mmio_write(0xe0, u32::MAX).unwrap();
        a.mmio_write(0xd0, 1 << 24).unwrap();
        let flat1 = Address { id: 1, x2apic: false, ldr: 2 << 24, dfr: u32::MAX };
        assert!(flat1.accepts(Dest::Logical(0x02)));
        assert!(flat1.accepts(Dest::Logical(0x03)));
        assert!(!flat1.accepts(Dest::Logical(0x01)));
        assert!(flat1.accepts(Dest::Logical(0xff)));
        assert!(!flat1.accepts(Dest::Physical(2)));
        assert!(flat1.accepts(Dest::Physical(0xff)));
        // To CPU 1 only: not raised here; to CPUs 0 and 1: both.
        a.mmio_write(0x310, 0x02 << 24).unwrap();
        let sent = a.mmio_write(0x300, 1 << 11 | 0x61).unwrap();
        assert_eq!(sent, Some(Ipi::To { dest: Dest::Logical(2), vector: 0x61 }));
        assert!(!a.pending(0x61));
        a.mmio_write(0x310, 0x03 << 24).unwrap();
        a.mmio_write(0x300, 1 << 11 | 0x62).unwrap();
        assert!(a.pending(0x62));
        assert_eq!(a.address(), Address { id: 0, x2apic: false, ldr: 1 << 24, dfr: u32::MAX });
        // xAPIC cluster model.
        let cl = Address { id: 5, x2apic: false, ldr: 0x12 << 24, dfr: 0x0fff_ffff };
        assert!(cl.accepts(Dest::Logical(0x1a)));
        assert!(!cl.accepts(Dest::Logical(0x2a)));
        assert!(!cl.accepts(Dest::Logical(0x11)));
        // x2APIC: the LDR comes from the ID (cluster 1, bit 3 for ID 0x13).
        let x = Lapic::new(0x13).address();
        assert_eq!(x.ldr, 1 << 16 | 1 << 3);
        assert!(x.accepts(Dest::Logical(1 << 16 | 0x8)));
        assert!(!x.accepts(Dest::Logical(0x8)));
        assert!(x.accepts(Dest::Logical(u32::MAX)));
        assert!(x.accepts(Dest::Physical(0x13)) && x.accepts(Dest::Physical(u32::MAX)));
        // Packing keeps what matching needs.
        for addr in [flat1, cl, x] {
            assert_eq!(Address::unpack(addr.id, addr.pack()).accepts(Dest::Logical(0x1a)), addr.accepts(Dest::Logical(0x1a)));
            assert_eq!(Address::unpack(addr.id, addr.pack()).ldr, addr.ldr);
        }
        // Lowest priority goes where fixed would.
        let mut b = enabled(1);
        assert_eq!(
            b.write_msr(reg::ICR, 3 << 32 | 1 << 8 | 0x70),
            Ok(Some(Ipi::To { dest: Dest::Physical(3), vector: 0x70 }))
        );
    }

    #[test]
    fn other_registers() {
        let mut a = enabled(0);
        a.write_msr(reg::TIMER_DIVIDE, 0xff).unwrap();
        assert_eq!(a.read_msr(reg::TIMER_DIVIDE), Ok(0xb));
        a.write_msr(reg::TIMER_INITIAL, 5).unwrap();
        assert_eq!(a.read_msr(reg::TIMER_CURRENT), Ok(0));
        a.write_msr(reg::LVT_LINT0, 0x700).unwrap();
        assert_eq!(a.read_msr(reg::LVT_LINT0), Ok(0x700));
        a.write_msr(reg::LVT_CMCI, 0x10000).unwrap();
        assert_eq!(a.read_msr(reg::LVT_CMCI), Ok(0x10000));
        assert_eq!(a.write_msr(0x3d, 0), Err(Refused));
    }
}
