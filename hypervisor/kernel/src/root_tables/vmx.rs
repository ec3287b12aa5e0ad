//! The root VM's permission maps on Intel VMX: the MSR bitmap and I/O
//! bitmaps A and B, with the same meaning as AMD's MSR and I/O permission
//! maps (the same policy table, the same ports). The MSR bitmap covers
//! fewer MSRs than AMD's map: AMD's 0xC001_0000 range always exits here
//! (those MSRs do not exist on Intel CPUs).

use microv_abi::syscall::EXTENSION_PORTS;
use microv_arch::vmx::bitmaps::{
    io_bitmap_position, msr_bitmap_position, IoBitmap, IO_BITMAP_SIZE, MSR_BITMAP_SIZE,
};

use super::passed_msrs;

/// Builds the MSR bitmap from the policy table: every access exits,
/// except the directions the table marks `Pass`.
pub fn fill_msr_bitmap(map: &mut [u8; MSR_BITMAP_SIZE]) {
    map.fill(0xff);
    for (index, read, write) in passed_msrs() {
        for (is_write, passes) in [(false, read), (true, write)] {
            let Some((byte, bit)) = msr_bitmap_position(index, is_write) else {
                continue;
            };
            if let Some(b) = map.get_mut(byte).filter(|_| passes) {
                *b &= !(1 << bit);
            }
        }
    }
}

/// Builds I/O bitmaps A and B: every access to the ports the extension
/// replays (`docs/io-ports.md`) exits, every other port passes.
pub fn fill_io_bitmaps(a: &mut [u8; IO_BITMAP_SIZE], b: &mut [u8; IO_BITMAP_SIZE]) {
    exit_on(a, b, EXTENSION_PORTS);
}

/// Fills I/O bitmaps A and B so that exactly `ports` exit.
fn exit_on(
    a: &mut [u8; IO_BITMAP_SIZE],
    b: &mut [u8; IO_BITMAP_SIZE],
    ports: impl Iterator<Item = u16>,
) {
    a.fill(0);
    b.fill(0);
    for port in ports {
        let (bitmap, byte, bit) = io_bitmap_position(port);
        let map = match bitmap {
            IoBitmap::A => &mut *a,
            IoBitmap::B => &mut *b,
        };
        if let Some(x) = map.get_mut(byte) {
            *x |= 1 << bit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fill_iopm, fill_msrpm};
    use super::*;
    use microv_arch::msr::{self, policy};
    use microv_arch::svm;
    use microv_arch::vmx::bitmaps::msr_always_exits;

    fn msr_bitmap() -> [u8; MSR_BITMAP_SIZE] {
        let mut map = [0u8; MSR_BITMAP_SIZE];
        fill_msr_bitmap(&mut map);
        map
    }

    /// Whether reads and writes of `index` exit under the VMX bitmap.
    fn vmx_exits(map: &[u8; MSR_BITMAP_SIZE], index: u32) -> (bool, bool) {
        let set = |write| {
            let (byte, bit) = msr_bitmap_position(index, write).unwrap();
            map[byte] >> bit & 1 == 1
        };
        (set(false), set(true))
    }

    #[test]
    fn msr_bitmap_agrees_with_the_msrpm_in_both_ranges() {
        let vmx = msr_bitmap();
        let mut amd = [0u8; svm::MSRPM_SIZE];
        fill_msrpm(&mut amd);
        let mut passed = 0;
        for index in (0..0x2000u32).chain(0xc000_0000..0xc000_2000) {
            let (byte, bit) = svm::msrpm_position(index).unwrap();
            let svm_exits = (amd[byte] >> bit & 1 == 1, amd[byte] >> (bit + 1) & 1 == 1);
            assert_eq!(vmx_exits(&vmx, index), svm_exits, "{index:#x}");
            passed += usize::from(!svm_exits.0) + usize::from(!svm_exits.1);
        }
        assert!(passed > 500, "the bitmap lets some accesses through");
    }

    #[test]
    fn msr_bitmap_follows_the_policy() {
        let vmx = msr_bitmap();
        for (index, expected) in [
            (msr::LSTAR, (false, false)),
            (msr::TSC, (false, true)),
            (msr::EFER, (true, true)),
            (msr::PAT, (true, true)),
            (msr::X2APIC_ICR, (false, true)),
            (msr::FEATURE_CONTROL, (true, true)),
            (0x1fff, (true, true)),
        ] {
            assert_eq!(vmx_exits(&vmx, index), expected, "{index:#x}");
        }
        for (first, last) in policy::NEVER_WRITTEN {
            for index in (first..=last).filter(|&i| !msr_always_exits(i)) {
                assert!(vmx_exits(&vmx, index).1, "{index:#x}: writes must exit");
            }
        }
        // AMD's performance counters pass there, and cannot here.
        assert_eq!(policy::rule(0xc001_0000).read, policy::Action::Pass);
        assert!(msr_always_exits(0xc001_0000));
    }

    #[test]
    fn io_bitmaps_agree_with_the_iopm_port_by_port() {
        let (mut a, mut b) = ([0xa5u8; IO_BITMAP_SIZE], [0x5au8; IO_BITMAP_SIZE]);
        fill_io_bitmaps(&mut a, &mut b);
        let mut amd = [0u8; svm::IOPM_SIZE];
        fill_iopm(&mut amd);
        for port in 0..=u16::MAX {
            let i = usize::from(port);
            let svm_exits = amd[i / 8] >> (i % 8) & 1 == 1;
            let (map, j) = if port < 0x8000 {
                (&a, i)
            } else {
                (&b, i - 0x8000)
            };
            assert_eq!(map[j / 8] >> (j % 8) & 1 == 1, svm_exits, "{port:#x}");
        }
        let set = |m: &[u8; IO_BITMAP_SIZE]| m.iter().map(|x| x.count_ones()).sum::<u32>();
        assert_eq!((set(&a), set(&b)), (8, 0));
        // Ports from 0x8000 up are bitmap B's.
        exit_on(&mut a, &mut b, [0x7fff, 0x8000, 0xffff].into_iter());
        assert_eq!((a[0xfff], b[0], b[0xfff]), (0x80, 0x01, 0x80));
        assert_eq!((set(&a), set(&b)), (1, 2));
    }
}
