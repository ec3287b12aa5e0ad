//! The root's I/O ports. The I/O permission map lets every port through
//! except [`INTERCEPTED`]: PCI configuration (0xCF8–0xCFF), where DMA
//! protection will have to watch devices being set up, and the reset
//! control port 0xCF9 inside it. Each access to them exits and is replayed
//! on the real port by the extension (the microkernel lets ring 3 reach
//! exactly these ports), so the root sees what bare metal gives it.
//! `docs/io-ports.md` lists them.

use core::ops::RangeInclusive;

use microv_abi::syscall::EXTENSION_PORTS;

use crate::host::Host;

/// Ports whose every access exits.
pub const INTERCEPTED: RangeInclusive<u16> = EXTENSION_PORTS;

/// Bits of an IOIO exit's EXITINFO1 (APM vol. 2, "IOIO Intercepts").
mod info {
    pub const IN: u64 = 1 << 0;
    pub const STRING: u64 = 1 << 2;
    pub const REP: u64 = 1 << 3;
    pub const SIZE16: u64 = 1 << 5;
    pub const SIZE32: u64 = 1 << 6;
    pub const ADDR16: u64 = 1 << 7;
    pub const ADDR32: u64 = 1 << 8;
    pub const ADDR64: u64 = 1 << 9;
    pub const PORT_SHIFT: u64 = 16;
}

/// One intercepted IN or OUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    pub is_in: bool,
    /// INS/OUTS (with or without REP).
    pub string: bool,
    /// A REP prefix (string I/O only).
    pub rep: bool,
    /// The address size in bytes (2, 4 or 8): how much of RSI/RDI and
    /// RCX a string instruction uses; 0 if the CPU does not say (QEMU's
    /// TCG sets none of the bits).
    pub address_size: u8,
}

/// Decodes EXITINFO1 of an IOIO exit.
pub fn decode(info1: u64) -> Access {
    let size = if info1 & info::SIZE32 != 0 {
        4
    } else if info1 & info::SIZE16 != 0 {
        2
    } else {
        1
    };
    Access {
        port: (info1 >> info::PORT_SHIFT) as u16,
        size,
        is_in: info1 & info::IN != 0,
        string: info1 & (info::STRING | info::REP) != 0,
        rep: info1 & info::REP != 0,
        address_size: if info1 & info::ADDR64 != 0 {
            8
        } else if info1 & info::ADDR32 != 0 {
            4
        } else if info1 & info::ADDR16 != 0 {
            2
        } else {
            0
        },
    }
}

/// What an access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the root's RAX becomes this value.
    Rax(u64),
    /// String I/O on an intercepted port: not emulated (Linux never does
    /// it there); the root gets #GP.
    Unsupported,
}

fn mask(size: u8) -> u64 {
    (1u64 << (u64::from(size) * 8)) - 1
}

/// True if every byte of the access lies in the ports the extension may use.
fn replayable(a: &Access) -> bool {
    let last = u32::from(a.port) + u32::from(a.size) - 1;
    INTERCEPTED.contains(&a.port) && last <= u32::from(*INTERCEPTED.end())
}

/// Performs `a` for the root, whose RAX is `rax`. An access that spills
/// past the intercepted ports reads all ones and drops writes (what the
/// bus gives for a port nothing decodes).
pub fn emulate(a: &Access, rax: u64, host: &mut dyn Host) -> Outcome {
    if a.string {
        return Outcome::Unsupported;
    }
    let m = mask(a.size);
    if a.is_in {
        let value = if replayable(a) {
            u64::from(host.port_in(a.port, a.size)) & m
        } else {
            m
        };
        // IN to EAX zero-extends into RAX; AL and AX keep the rest.
        Outcome::Rax(if a.size == 4 { value } else { (rax & !m) | value })
    } else {
        if replayable(a) {
            host.port_out(a.port, a.size, (rax & m) as u32);
        }
        Outcome::Rax(rax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const SIZE8: u64 = 1 << 4;

    fn info1(port: u16, size: u64, is_in: bool) -> u64 {
        (u64::from(port) << 16) | size | u64::from(is_in)
    }

    #[test]
    fn decodes_exitinfo1() {
        let a = decode(info1(0xcfc, info::SIZE32, true));
        assert_eq!((a.port, a.size, a.is_in, a.string), (0xcfc, 4, true, false));
        assert_eq!(decode(info1(0xcf9, SIZE8, false)).size, 1);
        assert_eq!(decode(info1(0xcfe, info::SIZE16, false)).size, 2);
        assert!(decode(info1(0xcf8, SIZE8 | info::STRING, true)).string);
        assert!(decode(info1(0xcf8, SIZE8 | info::REP, true)).string);
        let rep_outsw = info::SIZE16 | info::STRING | info::REP | info::ADDR64;
        let a = decode(info1(0x3f8, rep_outsw, false));
        assert_eq!((a.size, a.rep, a.address_size), (2, true, 8));
        let a = decode(info1(0x3f8, SIZE8 | info::STRING | info::ADDR32, true));
        assert_eq!((a.string, a.rep, a.address_size), (true, false, 4));
        let insb = SIZE8 | info::STRING;
        assert_eq!(decode(info1(0x3f8, insb | info::ADDR16, true)).address_size, 2);
        assert_eq!(decode(info1(0x3f8, insb, true)).address_size, 0, "not said");
    }

    #[test]
    fn replays_pci_config_accesses() {
        let mut host = FakeHost::default();
        host.ports.insert(0xcfc, 0x1234_8086);
        let a = decode(info1(0xcfc, info::SIZE32, true));
        assert_eq!(emulate(&a, u64::MAX, &mut host), Outcome::Rax(0x1234_8086));
        let a = decode(info1(0xcfc, info::SIZE16, true));
        assert_eq!(emulate(&a, 0xaaaa_bbbb_cccc_dddd, &mut host), Outcome::Rax(0xaaaa_bbbb_cccc_8086));
        let a = decode(info1(0xcf8, info::SIZE32, false));
        assert_eq!(emulate(&a, 0xffff_0000_8000_0010, &mut host), Outcome::Rax(0xffff_0000_8000_0010));
        let a = decode(info1(0xcf9, SIZE8, false));
        emulate(&a, 0x06, &mut host);
        assert_eq!(host.port_writes, vec![(0xcf8, 4, 0x8000_0010), (0xcf9, 1, 0x06)]);
    }

    #[test]
    fn spills_and_strings_get_bare_bus_answers() {
        let mut host = FakeHost::default();
        let a = decode(info1(0xcfe, info::SIZE32, true));
        assert_eq!(emulate(&a, 0, &mut host), Outcome::Rax(0xffff_ffff));
        let a = decode(info1(0xcfe, info::SIZE32, false));
        assert_eq!(emulate(&a, 7, &mut host), Outcome::Rax(7));
        assert!(host.port_writes.is_empty(), "nothing written past 0xCFF");
        let a = decode(info1(0xcf8, SIZE8 | info::STRING, false));
        assert_eq!(emulate(&a, 0, &mut host), Outcome::Unsupported);
    }
}
