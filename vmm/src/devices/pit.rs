//! The Intel 8254 programmable interval timer at ports 0x40–0x43, with
//! port 0x61 (NMI status and control), which gates channel 2 and shows
//! its output. Linux calibrates against channel 2 at boot
//! (`quick_pit_calibrate`, `pit_calibrate_tsc`): it polls the count until
//! its high byte changes, or port 0x61 until OUT2 rises. Without a timer
//! the counter ports read all ones and `quick_pit_calibrate` polls them to
//! its limit, about 100,000 reads, every one a round trip to the VMM; OUT2
//! never rises at all.
//!
//! The three counters count at [`PIT_HZ`] from the host's monotonic clock,
//! as if their CLK inputs ran all the time; counts and OUT levels are
//! worked out from the time when the guest looks, so nothing runs between
//! accesses. Channels 0 and 1 have their gates tied high; channel 2's gate
//! is port 0x61 bit 0. **No interrupts**: the platform routes no IRQ 0, so
//! channel 0's OUT goes nowhere.
//!
//! What the guest sees is the datasheet's behaviour, with these
//! simplifications:
//! - modes 1, 4 and 5 count as mode 0 does (OUT low until terminal count,
//!   the gate pauses counting; no gate triggers, no strobes);
//! - BCD counting (control bit 0) is accepted and reads back in the
//!   status, but counters always count in binary;
//! - a count is loaded when it is written, not at the next CLK pulse (one
//!   tick, 838 ns, early);
//! - port 0x61's parity and channel-check bits (2, 3, 6, 7) read 0 and the
//!   refresh bit (4) toggles on each read rather than every 15 µs;
//! - before the guest writes a count the counter holds 0 (real counters
//!   hold garbage).
//!
//! Accesses wider than a byte are split into byte cycles at successive
//! ports, as an 8-bit ISA device sees them; bytes past these ports read
//! all ones.

use super::DeviceError;
use crate::bus::BusDevice;

/// Channel 0's data port; channels 1 and 2 and the control port follow.
pub const PIT_PORT: u16 = 0x40;
pub const PORT_COUNT: u64 = 4;
/// NMI status and control (the AT's "port B"), shared with the speaker.
pub const NMI_SC_PORT: u16 = 0x61;
/// [`NMI_SC_PORT`] as an offset from [`PIT_PORT`], where [`Pit`] expects
/// it: put the device there through a window (see `devices::Window`).
pub const NMI_SC_OFFSET: u64 = (NMI_SC_PORT - PIT_PORT) as u64;

/// The counters' input clock: 14.31818 MHz / 12, as Linux's PIT_TICK_RATE.
pub const PIT_HZ: u64 = 1_193_182;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Offsets from [`PIT_PORT`].
const CONTROL: u64 = 3;

/// Port 0x61 bits.
const GATE2: u8 = 1 << 0;
const SPEAKER: u8 = 1 << 1;
const REFRESH: u8 = 1 << 4;
const OUT2: u8 = 1 << 5;

/// Control word fields.
const SELECT_SHIFT: u8 = 6;
const ACCESS_SHIFT: u8 = 4;
const MODE_SHIFT: u8 = 1;
const READ_BACK: u8 = 3;
/// Read-back: bit 5 clear latches the counts, bit 4 clear the status;
/// bits 1–3 select counters 0–2.
const RB_NO_COUNT: u8 = 1 << 5;
const RB_NO_STATUS: u8 = 1 << 4;
/// Status byte: OUT and null count over the control word's bits 5:0.
const STATUS_OUT: u8 = 1 << 7;
const STATUS_NULL: u8 = 1 << 6;
const CONTROL_FIELDS: u8 = 0x3f;

/// A full 16-bit count: a reload of 0.
const FULL_COUNT: u32 = 1 << 16;

/// How the data port moves the count (control bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Lsb,
    Msb,
    /// LSB, then MSB.
    Word,
}

/// What a mode does with the count (control bits 3:1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Mode 0 (and 1, 4, 5 here): OUT rises at terminal count and stays;
    /// the count wraps on through 0xffff.
    OneShot,
    /// Mode 2: the count runs N..1; OUT is low for the one tick at 1.
    Rate,
    /// Mode 3: OUT toggles each half period; the count drops by two.
    Square,
}

/// A loaded count, counting or (gate low) paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    /// The initial count, 1..=65536.
    n: u32,
    /// Ticks counted before `since`.
    counted: u64,
    /// The tick counting (re)started at, while the gate is high.
    since: Option<u64>,
    /// Modes 2 and 3: the counted tick the period of `n` starts at, and
    /// how far into a period that is (mode 3 may start on its low half).
    base: u64,
    shift: u64,
    /// Modes 2 and 3: a count written while counting, which takes over at
    /// the end of the current period (mode 2) or half period (mode 3):
    /// the counted tick, the count, and whether it starts low.
    next: Option<(u64, u32, bool)>,
}

impl Run {
    fn new(n: u32, gate: bool, tick: u64) -> Self {
        Run {
            n,
            counted: 0,
            since: gate.then_some(tick),
            base: 0,
            shift: 0,
            next: None,
        }
    }

    /// Ticks counted by `tick`.
    fn counted(&self, tick: u64) -> u64 {
        let running = self.since.map_or(0, |s| tick.saturating_sub(s));
        self.counted.saturating_add(running)
    }

    /// The count, base and shift in force after `counted` ticks.
    fn period(&self, counted: u64, kind: Kind) -> (u32, u64, u64) {
        match self.next {
            Some((at, n, low)) if counted >= at => {
                (n, at, if low { high_half(n, kind) } else { 0 })
            }
            _ => (self.n, self.base, self.shift),
        }
    }

    /// Folds a pending count in once it has taken over.
    fn settle(&mut self, tick: u64, kind: Kind) {
        let c = self.counted(tick);
        if self.next.is_some_and(|(at, _, _)| c >= at) {
            let (n, base, shift) = self.period(c, kind);
            *self = Run {
                n,
                base,
                shift,
                next: None,
                ..*self
            };
        }
    }

    /// The count and OUT after the ticks counted by `tick`.
    fn observe(&self, tick: u64, kind: Kind) -> (u16, bool) {
        let c = self.counted(tick);
        let (n, base, shift) = self.period(c, kind);
        let n64 = u64::from(n).max(1);
        let r = c.saturating_sub(base).saturating_add(shift);
        let (count, out) = match kind {
            // (n - r) mod 2^16: the counter wraps past 0 and counts on.
            Kind::OneShot => (n64.wrapping_sub(r), r >= n64),
            Kind::Rate => {
                let count = n64 - r % n64;
                (count, count != 1)
            }
            Kind::Square => {
                let p = r % n64;
                let high = high_half(n, kind);
                let (k, out) = if p < high {
                    (p, true)
                } else {
                    (p - high, false)
                };
                // Odd counts load n - 1; both halves count down by two.
                ((n64 & !1).saturating_sub(k.saturating_mul(2)), out)
            }
        };
        ((count & 0xffff) as u16, out)
    }

    /// Where the period (mode 2) or half period (mode 3) running at
    /// `counted` ends, and whether the next one starts with OUT low.
    fn boundary(&self, counted: u64, kind: Kind) -> (u64, bool) {
        let (n, base, shift) = self.period(counted, kind);
        let n64 = u64::from(n).max(1);
        let r = counted.saturating_sub(base).saturating_add(shift);
        let p = r % n64;
        let high = high_half(n, kind);
        let (left, low_next) = match kind {
            Kind::Square if p < high => (high - p, true),
            _ => (n64 - p, false),
        };
        (counted.saturating_add(left), low_next)
    }
}

/// Mode 3's high half: n/2 ticks, or (n + 1)/2 for odd n.
fn high_half(n: u32, kind: Kind) -> u64 {
    match kind {
        Kind::Square => u64::from(n).div_ceil(2),
        _ => 0,
    }
}

/// A count of 0 means 65536.
fn reload(value: u16) -> u32 {
    match value {
        0 => FULL_COUNT,
        v => u32::from(v),
    }
}

/// One counter.
#[derive(Clone, Debug)]
struct Channel {
    /// The control word's bits 5:0 (access, mode, BCD), for the status.
    control: u8,
    access: Access,
    kind: Kind,
    gate: bool,
    /// None until a count is written after the control word.
    run: Option<Run>,
    /// The count shown while nothing runs.
    held: u16,
    /// The low byte of a two-byte count, until its high byte comes.
    low_written: Option<u8>,
    /// The next read of a two-byte count is its high byte.
    read_high: bool,
    /// An output latch (counter latch or read-back) the guest has not read.
    latch: Option<u16>,
    status: Option<u8>,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Channel {
            control: 3 << ACCESS_SHIFT,
            access: Access::Word,
            kind: Kind::OneShot,
            gate,
            run: None,
            held: 0,
            low_written: None,
            read_high: false,
            latch: None,
            status: None,
        }
    }

    fn settle(&mut self, tick: u64) {
        let kind = self.kind;
        if let Some(run) = self.run.as_mut() {
            run.settle(tick, kind);
        }
    }

    fn count(&self, tick: u64) -> u16 {
        self.run.map_or(self.held, |r| r.observe(tick, self.kind).0)
    }

    fn out(&self, tick: u64) -> bool {
        match self.kind {
            // A low gate holds modes 2 and 3 high.
            Kind::Rate | Kind::Square if !self.gate => true,
            Kind::Rate | Kind::Square => self.run.is_none_or(|r| r.observe(tick, self.kind).1),
            Kind::OneShot => self.run.is_some_and(|r| r.observe(tick, self.kind).1),
        }
    }

    /// A count written but not yet in the counting element.
    fn null_count(&self, tick: u64) -> bool {
        match self.run {
            None => true,
            Some(r) => r.next.is_some_and(|(at, _, _)| r.counted(tick) < at),
        }
    }

    /// A control word for this counter (not a latch command).
    fn program(&mut self, value: u8, access: Access, tick: u64) {
        self.held = self.count(tick);
        self.control = value & CONTROL_FIELDS;
        self.access = access;
        self.kind = match (value >> MODE_SHIFT) & 3 {
            2 => Kind::Rate,
            3 => Kind::Square,
            _ => Kind::OneShot,
        };
        self.run = None;
        self.low_written = None;
        self.read_high = false;
        self.latch = None;
        self.status = None;
    }

    fn latch_count(&mut self, tick: u64) {
        if self.latch.is_none() {
            self.latch = Some(self.count(tick));
        }
    }

    fn latch_status(&mut self, tick: u64) {
        if self.status.is_none() {
            let out = if self.out(tick) { STATUS_OUT } else { 0 };
            let null = if self.null_count(tick) {
                STATUS_NULL
            } else {
                0
            };
            self.status = Some(out | null | self.control);
        }
    }

    fn read(&mut self, tick: u64) -> u8 {
        if let Some(status) = self.status.take() {
            return status;
        }
        let value = self.latch.unwrap_or_else(|| self.count(tick));
        let [lsb, msb] = value.to_le_bytes();
        let (byte, done) = match self.access {
            Access::Lsb => (lsb, true),
            Access::Msb => (msb, true),
            Access::Word if self.read_high => (msb, true),
            Access::Word => (lsb, false),
        };
        self.read_high = !done;
        if done {
            self.latch = None;
        }
        byte
    }

    fn write(&mut self, value: u8, tick: u64) {
        self.settle(tick);
        let count = match self.access {
            Access::Lsb => u16::from(value),
            Access::Msb => u16::from(value) << 8,
            Access::Word => match self.low_written.take() {
                Some(low) => u16::from_le_bytes([low, value]),
                None => {
                    self.low_written = Some(value);
                    // Mode 0 stops counting, OUT low, until the high byte.
                    if self.kind == Kind::OneShot {
                        self.held = self.count(tick);
                        self.run = None;
                    }
                    return;
                }
            },
        };
        self.load(reload(count), tick);
    }

    fn load(&mut self, n: u32, tick: u64) {
        let kind = self.kind;
        match self.run.as_mut() {
            // Modes 2 and 3 finish the period (half period) under way.
            Some(run) if kind != Kind::OneShot => {
                let at = run.next.map_or_else(
                    || run.boundary(run.counted(tick), kind),
                    |(at, _, low)| (at, low),
                );
                run.next = Some((at.0, n, at.1));
            }
            _ => self.run = Some(Run::new(n, self.gate, tick)),
        }
    }

    fn set_gate(&mut self, gate: bool, tick: u64) {
        if gate == self.gate {
            return;
        }
        self.settle(tick);
        self.gate = gate;
        let kind = self.kind;
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if gate {
            match kind {
                Kind::OneShot => run.since = Some(tick),
                // A rising gate reloads the latest count.
                _ => {
                    let n = run.next.map_or(run.n, |(_, n, _)| n);
                    *run = Run::new(n, true, tick);
                }
            }
        } else {
            run.counted = run.counted(tick);
            run.since = None;
        }
    }
}

/// The timer and port 0x61.
pub struct Pit {
    channels: [Channel; 3],
    speaker: bool,
    refresh: bool,
    /// Nanoseconds on a monotonic clock.
    now: Box<dyn Fn() -> u64 + Send>,
}

impl Pit {
    /// A timer counting on the host's monotonic clock.
    pub fn new() -> Self {
        let origin = std::time::Instant::now();
        Self::with_clock(Box::new(move || {
            u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
        }))
    }

    /// A timer counting on `now()` (nanoseconds, never going back).
    fn with_clock(now: Box<dyn Fn() -> u64 + Send>) -> Self {
        Pit {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            speaker: false,
            refresh: false,
            now,
        }
    }

    /// CLK pulses since the clock's origin.
    fn tick(&self) -> u64 {
        let ticks = u128::from((self.now)()) * u128::from(PIT_HZ) / NANOS_PER_SEC;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    fn control(&mut self, value: u8, tick: u64) {
        let access = match (value >> ACCESS_SHIFT) & 3 {
            1 => Some(Access::Lsb),
            2 => Some(Access::Msb),
            3 => Some(Access::Word),
            _ => None,
        };
        match value >> SELECT_SHIFT {
            READ_BACK => {
                for (i, ch) in self.channels.iter_mut().enumerate() {
                    if value & (1 << (i + 1)) == 0 {
                        continue;
                    }
                    if value & RB_NO_STATUS == 0 {
                        ch.latch_status(tick);
                    }
                    if value & RB_NO_COUNT == 0 {
                        ch.latch_count(tick);
                    }
                }
            }
            select => {
                let Some(ch) = self.channels.get_mut(usize::from(select)) else {
                    return;
                };
                match access {
                    None => ch.latch_count(tick),
                    Some(access) => ch.program(value, access, tick),
                }
            }
        }
    }

    fn read_port(&mut self, offset: u64) -> u8 {
        let tick = self.tick();
        match offset {
            0..=2 => self
                .channels
                .get_mut(offset as usize)
                .map_or(0xff, |ch| ch.read(tick)),
            NMI_SC_OFFSET => {
                self.refresh = !self.refresh;
                let gate = self.channels.get(2).is_some_and(|ch| ch.gate);
                let out = self.channels.get(2).is_some_and(|ch| ch.out(tick));
                let bit = |on: bool, b: u8| if on { b } else { 0 };
                bit(gate, GATE2)
                    | bit(self.speaker, SPEAKER)
                    | bit(self.refresh, REFRESH)
                    | bit(out, OUT2)
            }
            // The control port is write-only: the bus floats.
            _ => 0xff,
        }
    }

    fn write_port(&mut self, offset: u64, value: u8) {
        let tick = self.tick();
        match offset {
            0..=2 => {
                if let Some(ch) = self.channels.get_mut(offset as usize) {
                    ch.write(value, tick);
                }
            }
            CONTROL => self.control(value, tick),
            NMI_SC_OFFSET => {
                self.speaker = value & SPEAKER != 0;
                if let Some(ch) = self.channels.get_mut(2) {
                    ch.set_gate(value & GATE2 != 0, tick);
                }
            }
            _ => {}
        }
    }
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for Pit {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut port = offset;
        for byte in data.iter_mut() {
            *byte = self.read_port(port);
            port = port.saturating_add(1);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let mut port = offset;
        for &byte in data {
            self.write_port(port, byte);
            port = port.saturating_add(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    const CH0: u64 = 0;
    const CH2: u64 = 2;
    const PORT_B: u64 = NMI_SC_OFFSET;

    /// A timer on a clock the test moves, in CLK ticks.
    struct Fixture {
        pit: Pit,
        ns: Arc<AtomicU64>,
    }

    impl Fixture {
        fn new() -> Self {
            let ns = Arc::new(AtomicU64::new(0));
            let clock = ns.clone();
            let pit = Pit::with_clock(Box::new(move || clock.load(Ordering::SeqCst)));
            Fixture { pit, ns }
        }

        /// Sets the clock to the first nanosecond of CLK tick `t`.
        fn at(&mut self, t: u64) -> &mut Self {
            let ns = (u128::from(t) * NANOS_PER_SEC).div_ceil(u128::from(PIT_HZ));
            self.ns.store(u64::try_from(ns).unwrap(), Ordering::SeqCst);
            assert_eq!(self.pit.tick(), t);
            self
        }

        fn out(&mut self, port: u64, value: u8) -> &mut Self {
            self.pit.write(port, &[value]).unwrap();
            self
        }

        fn inb(&mut self, port: u64) -> u8 {
            let mut v = [0u8];
            self.pit.read(port, &mut v);
            v[0]
        }

        /// A two-byte count read, LSB then MSB.
        fn count(&mut self, port: u64) -> u16 {
            let lsb = self.inb(port);
            u16::from_le_bytes([lsb, self.inb(port)])
        }

        fn load(&mut self, port: u64, n: u16) -> &mut Self {
            let [lsb, msb] = n.to_le_bytes();
            self.out(port, lsb).out(port, msb)
        }

        /// A counter's status byte, through the read-back command.
        fn status(&mut self, ch: u64) -> u8 {
            self.out(CONTROL, 0xc0 | RB_NO_COUNT | (2 << ch));
            self.inb(ch)
        }

        fn out_pin(&mut self, ch: u64) -> bool {
            self.status(ch) & STATUS_OUT != 0
        }
    }

    #[test]
    fn counts_down_at_the_pit_rate_on_the_host_clock() {
        let mut f = Fixture::new();
        f.out(CONTROL, 0x30).load(CH0, 0xffff); // channel 0, LSB/MSB, mode 0
        assert_eq!(f.count(CH0), 0xffff);
        // 1 ms is 1193.182 ticks.
        f.ns.store(1_000_000, Ordering::SeqCst);
        assert_eq!(f.count(CH0), 0xffff - 1193);
        // A second on, the count has wrapped many times and goes on.
        f.ns.store(1_000_000_000, Ordering::SeqCst);
        assert_eq!(
            u64::from(f.count(CH0)),
            (0xffff_u64 + (1 << 21) - PIT_HZ) % (1 << 16)
        );
        // The real clock moves, and only forwards.
        let mut p = Pit::new();
        p.write(CONTROL, &[0x30]).unwrap();
        p.write(CH0, &[0xff, 0xff]).unwrap();
        let t0 = p.tick();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(p.tick() >= t0 + 2 * PIT_HZ / 1000);
    }

    #[test]
    fn lsb_only_msb_only_and_two_byte_access() {
        let mut f = Fixture::new();
        f.out(CONTROL, 0x10).out(CH0, 0x34); // LSB only, mode 0
        assert_eq!([f.inb(CH0), f.inb(CH0)], [0x34, 0x34], "no toggling");
        f.at(4);
        assert_eq!(f.inb(CH0), 0x30);
        f.out(CONTROL, 0x20).out(CH0, 0x12); // MSB only: 0x1200
        f.at(4 + 0x200);
        assert_eq!([f.inb(CH0), f.inb(CH0)], [0x10, 0x10]);
        f.out(CONTROL, 0x30).load(CH0, 0xabcd);
        assert_eq!([f.inb(CH0), f.inb(CH0), f.inb(CH0)], [0xcd, 0xab, 0xcd]);
        assert_eq!(f.inb(CH0), 0xab);
        // Channels are independent.
        f.out(CONTROL, 0x70).load(1, 0x1111);
        assert_eq!((f.count(1), f.count(CH0)), (0x1111, 0xabcd));
    }

    #[test]
    fn the_latch_command_and_read_back_freeze_a_count_until_read() {
        let mut f = Fixture::new();
        f.out(CONTROL, 0x34).load(CH0, 1000); // mode 2
        f.at(10).out(CONTROL, 0x00); // latch channel 0
        f.at(20).out(CONTROL, 0x00); // ignored: already latched
        assert_eq!(f.inb(CH0), (990 & 0xff) as u8);
        f.at(30);
        assert_eq!(f.inb(CH0), (990 >> 8) as u8);
        assert_eq!(f.count(CH0), 970, "released once read");
        // Read-back of count and status: status first, then the count.
        f.at(40).out(CONTROL, 0xc0 | 0x02);
        f.at(50);
        assert_eq!(f.inb(CH0), STATUS_OUT | 0x34);
        assert_eq!(f.count(CH0), 960);
        // A control word clears latches and shows a null count.
        f.out(CONTROL, 0x00).out(CONTROL, 0x36);
        assert_eq!(f.status(CH0), STATUS_OUT | STATUS_NULL | 0x36);
        // An LSB-only latch is released after one read.
        f.out(CONTROL, 0x14).out(CH0, 200).at(60).out(CONTROL, 0x00);
        f.at(70);
        assert_eq!(
            [f.inb(CH0), f.inb(CH0)],
            [190, 180],
            "latched at 60, then live at 70"
        );
    }

    #[test]
    fn channel_2_counts_only_while_its_gate_is_high() {
        let mut f = Fixture::new();
        f.out(CONTROL, 0xb0).load(CH2, 1000); // mode 0, gate low
        f.at(100);
        assert_eq!(f.count(CH2), 1000, "the gate is low at reset");
        f.out(PORT_B, GATE2).at(300);
        assert_eq!(f.count(CH2), 800);
        f.out(PORT_B, 0).at(500);
        assert_eq!(f.count(CH2), 800, "held while the gate is low");
        f.out(PORT_B, GATE2).at(1300);
        assert_eq!(f.count(CH2), 0);
        assert_ne!(f.inb(PORT_B) & OUT2, 0);
        // Modes 2 and 3: a low gate holds OUT high and the rising edge
        // reloads the count.
        f.out(CONTROL, 0xb4).load(CH2, 100).at(1398);
        assert_eq!((f.count(CH2), f.inb(PORT_B) & OUT2), (2, OUT2));
        f.at(1399);
        assert_eq!((f.count(CH2), f.inb(PORT_B) & OUT2), (1, 0));
        f.out(PORT_B, 0);
        assert_eq!((f.count(CH2), f.inb(PORT_B) & OUT2), (1, OUT2));
        f.at(2000).out(PORT_B, GATE2).at(2010);
        assert_eq!(f.count(CH2), 90);
    }

    #[test]
    fn mode_0_out_rises_at_terminal_count_and_stays() {
        let mut f = Fixture::new();
        // What pit_calibrate_tsc does: gate high, speaker off, 50 ms.
        let b = f.inb(PORT_B);
        f.out(PORT_B, (b & !SPEAKER) | GATE2);
        let latch = (PIT_HZ / 20) as u16;
        f.out(CONTROL, 0xb0).load(CH2, latch);
        assert_eq!(f.inb(PORT_B) & OUT2, 0);
        f.at(u64::from(latch) - 1);
        assert_eq!(f.inb(PORT_B) & OUT2, 0);
        assert_eq!(f.count(CH2), 1);
        f.at(u64::from(latch));
        assert_eq!(f.inb(PORT_B) & OUT2, OUT2);
        assert_eq!(f.count(CH2), 0);
        f.at(u64::from(latch) + 70_000);
        assert_eq!(
            f.inb(PORT_B) & OUT2,
            OUT2,
            "stays high after the count wraps"
        );
        assert_eq!(f.count(CH2), (65_536 - 70_000 % 65_536) as u16);
        // A new control word drops OUT; writing the first byte of a new
        // count stops counting until the second.
        f.out(CONTROL, 0xb0);
        assert_eq!(f.inb(PORT_B) & OUT2, 0);
        f.load(CH2, 500).at(u64::from(latch) + 70_100);
        f.out(CH2, 0x10);
        f.at(u64::from(latch) + 70_200);
        assert_eq!(f.count(CH2), 400, "held after the low byte");
        f.out(CH2, 0x01).at(u64::from(latch) + 70_210);
        assert_eq!(f.count(CH2), 0x110 - 10);
    }

    #[test]
    fn quick_pit_calibrate_sees_the_msb_fall_every_256_ticks() {
        let mut f = Fixture::new();
        let b = f.inb(PORT_B);
        f.out(PORT_B, (b & !SPEAKER) | GATE2);
        f.out(CONTROL, 0xb0).out(CH2, 0xff).out(CH2, 0xff);
        // pit_verify_msb: ignore the LSB, compare the MSB.
        let msb = |f: &mut Fixture, t: u64| {
            f.at(t);
            f.inb(CH2);
            f.inb(CH2)
        };
        assert_eq!(msb(&mut f, 0), 0xff);
        assert_eq!(msb(&mut f, 255), 0xff);
        assert_eq!(msb(&mut f, 256), 0xfe);
        assert_eq!(msb(&mut f, 256 * 10), 0xf5);
    }

    #[test]
    fn mode_2_reloads_and_pulses_out_low_at_one() {
        let mut f = Fixture::new();
        f.out(CONTROL, 0x34);
        assert!(f.out_pin(CH0), "OUT starts high");
        f.load(CH0, 100);
        let seen: Vec<(u16, bool)> = [0, 1, 98, 99, 100, 101, 199, 200, 100 * 1000 + 99]
            .iter()
            .map(|&t| {
                f.at(t);
                (f.count(CH0), f.out_pin(CH0))
            })
            .collect();
        assert_eq!(
            seen,
            [
                (100, true),
                (99, true),
                (2, true),
                (1, false),
                (100, true),
                (99, true),
                (1, false),
                (100, true),
                (1, false)
            ]
        );
        // A new count waits for the end of the period.
        f.at(100_010).load(CH0, 10);
        assert_ne!(f.status(CH0) & STATUS_NULL, 0);
        f.at(100_099);
        assert_eq!(f.count(CH0), 1);
        f.at(100_100);
        assert_eq!((f.count(CH0), f.status(CH0) & STATUS_NULL), (10, 0));
        f.at(100_115);
        assert_eq!(f.count(CH0), 5);
    }

    #[test]
    fn mode_3_toggles_out_each_half_period_counting_by_two() {
        let mut f = Fixture::new();
        f.out(CONTROL, 0x36).load(CH0, 10);
        let wave = |f: &mut Fixture, from: u64, n: u64| -> Vec<(u16, bool)> {
            (from..from + n)
                .map(|t| {
                    f.at(t);
                    (f.count(CH0), f.out_pin(CH0))
                })
                .collect()
        };
        let even = wave(&mut f, 0, 11);
        assert_eq!(
            even,
            [
                (10, true),
                (8, true),
                (6, true),
                (4, true),
                (2, true),
                (10, false),
                (8, false),
                (6, false),
                (4, false),
                (2, false),
                (10, true),
            ]
        );
        // Odd: high for (n + 1)/2 ticks, low for (n - 1)/2, from n - 1.
        f.out(CONTROL, 0x36).load(CH0, 5);
        let odd = wave(&mut f, 10, 6);
        assert_eq!(
            odd,
            [
                (4, true),
                (2, true),
                (0, true),
                (4, false),
                (2, false),
                (4, true)
            ]
        );
        // A new count takes over at the end of the half period under way.
        f.at(20)
            .out(CONTROL, 0x36)
            .load(CH0, 10)
            .at(22)
            .load(CH0, 20);
        let switch = wave(&mut f, 23, 12);
        assert_eq!(
            switch,
            [
                (4, true),
                (2, true),
                (20, false),
                (18, false),
                (16, false),
                (14, false),
                (12, false),
                (10, false),
                (8, false),
                (6, false),
                (4, false),
                (2, false),
            ]
        );
        assert_eq!(wave(&mut f, 35, 1), [(20, true)]);
    }

    #[test]
    fn a_count_of_zero_is_65536() {
        let mut f = Fixture::new();
        f.out(CONTROL, 0x30).load(CH0, 0);
        assert_eq!(f.count(CH0), 0);
        f.at(1);
        assert_eq!(f.count(CH0), 0xffff);
        f.at(65_535);
        assert_eq!((f.count(CH0), f.out_pin(CH0)), (1, false));
        f.at(65_536);
        assert_eq!((f.count(CH0), f.out_pin(CH0)), (0, true));
        f.out(CONTROL, 0x34).load(CH0, 0).at(65_536 + 65_535);
        assert_eq!((f.count(CH0), f.out_pin(CH0)), (1, false));
        f.at(2 * 65_536);
        assert_eq!((f.count(CH0), f.out_pin(CH0)), (0, true));
        // LSB-only and MSB-only zeros too.
        f.out(CONTROL, 0x10).out(CH0, 0).at(3 * 65_536 - 1);
        assert!(!f.out_pin(CH0));
        f.out(CONTROL, 0x20).out(CH0, 0).at(4 * 65_536 - 1 + 65_536);
        assert!(f.out_pin(CH0));
    }

    #[test]
    fn port_61_holds_gate_and_speaker_and_shows_out2_and_refresh() {
        let mut f = Fixture::new();
        let a = f.inb(PORT_B);
        let b = f.inb(PORT_B);
        assert_eq!(a ^ b, REFRESH, "the refresh bit toggles");
        assert_eq!((a | b) & !REFRESH, 0, "gate, speaker and OUT2 low at reset");
        f.out(PORT_B, 0xff);
        let v = f.inb(PORT_B) & !REFRESH;
        assert_eq!(
            v,
            GATE2 | SPEAKER,
            "parity and channel-check bits read 0; OUT2 is read-only"
        );
        f.out(PORT_B, SPEAKER);
        assert_eq!(f.inb(PORT_B) & !REFRESH, SPEAKER);
        // OUT2 follows channel 2 in mode 3 whatever the speaker bit says.
        f.out(PORT_B, GATE2).out(CONTROL, 0xb6).load(CH2, 4).at(2);
        assert_eq!(f.inb(PORT_B) & !REFRESH, GATE2);
        f.at(4);
        assert_eq!(f.inb(PORT_B) & !REFRESH, GATE2 | OUT2);
    }

    #[test]
    fn odd_widths_offsets_and_clocks_do_not_panic() {
        let mut f = Fixture::new();
        // Wide accesses are byte cycles at successive ports.
        f.out(CONTROL, 0x30).out(CONTROL, 0x70).out(CONTROL, 0xb0);
        f.pit.write(CH0, &[0x34, 0x12]).unwrap(); // ch0's and ch1's LSBs
        f.pit.write(CH0, &[0, 0]).unwrap(); // their MSBs
        let mut v = [0u8; 4];
        f.pit.read(CH0, &mut v);
        assert_eq!(
            v,
            [0x34, 0x12, 0x00, 0xff],
            "ch0, ch1, ch2 (no count) LSBs; the control port"
        );
        let mut w = [0u8; 2];
        f.pit.read(PORT_B, &mut w);
        assert_eq!(w[1], 0xff, "past port 0x61");
        f.pit.read(0x10, &mut v);
        assert_eq!(v, [0xff; 4]);
        f.pit.read(u64::MAX, &mut v);
        assert_eq!(v, [0xff; 4]);
        f.pit.read(CH0, &mut []);
        f.pit.write(CH0, &[]).unwrap();
        f.pit.write(u64::MAX, &[1, 2, 3]).unwrap();
        f.pit.write(0x10, &[1]).unwrap();
        // Read-back with nothing selected, or with nothing to latch.
        f.out(CONTROL, 0xc0).out(CONTROL, 0xfe).out(CONTROL, 0xf1);
        // The end of time, and a clock that goes back.
        f.ns.store(u64::MAX, Ordering::SeqCst);
        f.out(CONTROL, 0x36).load(CH0, 3).out(PORT_B, GATE2);
        let _ = (f.count(CH0), f.inb(PORT_B));
        f.ns.store(0, Ordering::SeqCst);
        let _ = (f.count(CH0), f.out_pin(CH0), f.count(CH2), f.inb(PORT_B));
        f.out(CONTROL, 0x34).load(CH0, 1).load(CH0, 1).at(5);
        assert_eq!(
            f.count(CH0),
            1,
            "a count of 1 in mode 2 (undefined on the chip)"
        );
        f.out(CONTROL, 0x36).load(CH0, 1).at(6);
        let _ = (f.count(CH0), f.out_pin(CH0));
        assert!(Pit::default().tick() < PIT_HZ);
    }
}
