//! The run page as the VMM maps it (`microv_abi::run::RunPage`): MicroV
//! writes exits and registers into it, the VMM writes answers, requests and
//! interrupt vectors.
//!
//! The page is shared memory that others write: MicroV while the vCPU runs,
//! and other VMM threads (the IOAPIC raising vectors) at any time. So no
//! Rust reference to it ever exists. The vCPU thread copies fields in and
//! out with volatile accesses (nobody else writes those fields while it
//! does); `request` and `raise` are read-modify-written from several
//! places and use atomic operations only.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use microv_abi::run::{RunApic, RunExit, RunIo, RunPage, RunRegs, RUN_PAGE_SIZE};

/// One mapped run page; unmapped when dropped.
#[derive(Debug)]
pub struct RunPageMap {
    base: NonNull<u8>,
}

// SAFETY: the mapping is process memory every thread may reach; this type
// only touches it through volatile copies (by the one vCPU thread that owns
// those fields) and atomic operations (on the fields several threads use),
// never through references, so sharing it between threads is sound.
unsafe impl Send for RunPageMap {}
// SAFETY: as for `Send`: `&RunPageMap` only allows volatile and atomic
// accesses to the mapping.
unsafe impl Sync for RunPageMap {}

impl RunPageMap {
    /// Maps the run page of the vCPU file descriptor `fd` (offset 0, one
    /// page, shared with the driver).
    pub fn of_vcpu(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Self::map(libc::MAP_SHARED, fd.as_raw_fd())
    }

    /// A private, zero-filled page standing in for a real one in tests.
    #[cfg(test)]
    pub fn anonymous() -> io::Result<Self> {
        Self::map(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
    }

    fn map(flags: libc::c_int, fd: libc::c_int) -> io::Result<Self> {
        // SAFETY: a new mapping chosen by the kernel (no address hint, no
        // MAP_FIXED) cannot alias any memory Rust already uses.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RUN_PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast::<u8>())
            .map(|base| RunPageMap { base })
            .ok_or_else(|| io::Error::other("mmap returned a null run page"))
    }

    /// Where field `T` at `offset` of the page lives.
    fn at<T>(&self, offset: usize) -> *mut T {
        debug_assert!(offset + size_of::<T>() <= RUN_PAGE_SIZE);
        self.base.as_ptr().wrapping_add(offset).cast()
    }

    fn atomic(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `offset` is that of a u64 field of the page (8-aligned in
        // a page-aligned mapping, inside it); the mapping lives as long as
        // `self`, and every access to the fields reached this way is atomic.
        unsafe { AtomicU64::from_ptr(self.at(offset)) }
    }

    fn read<T: Copy>(&self, offset: usize) -> T {
        // SAFETY: `offset` and `T` name a field of the mapped page (in
        // bounds, aligned); the field types are plain integers, valid for
        // any bits. Volatile: another party writes the page.
        unsafe { self.at::<T>(offset).read_volatile() }
    }

    fn write<T: Copy>(&self, offset: usize, value: T) {
        // SAFETY: as in `read`; the vCPU thread is the only writer of the
        // fields written this way while MicroV is not running the vCPU.
        unsafe { self.at::<T>(offset).write_volatile(value) }
    }

    /// The last exit.
    pub fn exit(&self) -> RunExit {
        self.read(offset_of!(RunPage, exit))
    }

    /// The registers MicroV wrote at the last exit.
    pub fn regs(&self) -> RunRegs {
        self.read(offset_of!(RunPage, regs))
    }

    /// Writes the register area (MicroV loads it at the next run for the
    /// [`Self::request`] bits that say so).
    pub fn set_regs(&self, regs: &RunRegs) {
        self.write(offset_of!(RunPage, regs), *regs);
    }

    /// The value an `in` reads, for the next run.
    pub fn set_io_data(&self, value: u64) {
        self.write(
            offset_of!(RunPage, exit) + offset_of!(RunExit, io) + offset_of!(RunIo, data),
            value,
        );
    }

    /// The xAPIC access `request::APIC_ACCESS` asks MicroV to perform.
    pub fn set_apic(&self, apic: &RunApic) {
        self.write(offset_of!(RunPage, apic), *apic);
    }

    /// Adds `bits` (`microv_abi::run::request`) to the requests.
    pub fn request(&self, bits: u64) {
        self.atomic(offset_of!(RunPage, request))
            .fetch_or(bits, Ordering::SeqCst);
    }

    /// Adds `vector` to the set MicroV raises at the next run.
    pub fn raise(&self, vector: u8) {
        let word = usize::from(vector / 64);
        self.atomic(offset_of!(RunPage, raise) + word * 8)
            .fetch_or(1 << (vector % 64), Ordering::SeqCst);
    }

    /// Whether any vector waits to be raised.
    pub fn any_raised(&self) -> bool {
        (0..4).any(|w| {
            self.atomic(offset_of!(RunPage, raise) + w * 8)
                .load(Ordering::SeqCst)
                != 0
        })
    }
}

/// MicroV's side of the page, for tests that play it.
#[cfg(test)]
impl RunPageMap {
    pub fn set_exit(&self, exit: &RunExit) {
        self.write(offset_of!(RunPage, exit), *exit);
    }

    pub fn apic(&self) -> RunApic {
        self.read(offset_of!(RunPage, apic))
    }

    /// Takes the requests, as MicroV does when it acts on them.
    pub fn take_requests(&self) -> u64 {
        self.atomic(offset_of!(RunPage, request))
            .swap(0, Ordering::SeqCst)
    }

    /// Takes the raised vectors, as MicroV does at entry.
    pub fn take_raised(&self) -> [u64; 4] {
        let mut out = [0; 4];
        for (w, o) in out.iter_mut().enumerate() {
            *o = self
                .atomic(offset_of!(RunPage, raise) + w * 8)
                .swap(0, Ordering::SeqCst);
        }
        out
    }
}

impl Drop for RunPageMap {
    fn drop(&mut self) {
        // SAFETY: `base` is the start of a RUN_PAGE_SIZE mapping this value
        // made and owns; nothing can use it after the drop.
        unsafe { libc::munmap(self.base.as_ptr().cast(), RUN_PAGE_SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_abi::run::{exit_reason, request};

    #[test]
    fn fields_round_trip_through_the_page() {
        let p = RunPageMap::anonymous().unwrap();
        assert_eq!(p.exit().reason, exit_reason::NONE);
        let mut e = RunExit::zeroed();
        e.reason = exit_reason::IO;
        e.io.port = 0x3f8;
        p.set_exit(&e);
        p.set_io_data(0x41);
        let got = p.exit();
        assert_eq!(
            (got.reason, got.io.port, got.io.data),
            (exit_reason::IO, 0x3f8, 0x41)
        );

        let mut r = RunRegs::zeroed();
        r.rip = 0x1234;
        r.gprs[15] = 15;
        p.set_regs(&r);
        assert_eq!(p.regs(), r);

        let a = RunApic {
            offset: 0x300,
            write: 1,
            value: 0xc4500,
            gpr: 0,
        };
        p.set_apic(&a);
        assert_eq!(p.apic(), a);

        p.request(request::SET_REGS);
        p.request(request::SET_SREGS);
        p.request(request::APIC_ACCESS);
        assert_eq!(p.take_requests(), 7);
        assert_eq!(p.take_requests(), 0);
    }

    #[test]
    fn vectors_land_in_their_bits() {
        let p = RunPageMap::anonymous().unwrap();
        assert!(!p.any_raised());
        for v in [0x20, 0x21, 0x7f, 0x80, 0xff] {
            p.raise(v);
        }
        assert!(p.any_raised());
        assert_eq!(
            p.take_raised(),
            [(1 << 0x20) | (1 << 0x21), 1 << 63, 1, 1 << 63]
        );
        assert!(!p.any_raised());
    }

    #[test]
    fn a_file_without_a_run_page_is_refused() {
        use std::os::fd::AsFd;
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(RunPageMap::of_vcpu(f.as_fd()).is_err());
    }
}
