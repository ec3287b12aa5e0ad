//! Which CPU a stack pointer belongs to. Exceptions and panics use this to
//! find their CPU's data: the stack is MicroV's own (the kernel stacks the
//! loader carved from the pool, and the IST stacks the microkernel
//! allocated), whereas GS may hold anything when a fault strikes.

use microv_abi::launch::KERNEL_STACK_SIZE;

/// The index of the CPU whose stack holds `rsp`: kernel stack *i* is the
/// [`KERNEL_STACK_SIZE`] bytes from `kernel_stacks + i * KERNEL_STACK_SIZE`;
/// `ist_lows` gives each CPU's exception stack base (0: none yet), each
/// `ist_size` bytes.
pub fn cpu_of(
    rsp: u64,
    kernel_stacks: u64,
    cpu_count: usize,
    ist_lows: impl Iterator<Item = u64>,
    ist_size: u64,
) -> Option<usize> {
    if kernel_stacks != 0 && rsp > kernel_stacks {
        // The top of stack i belongs to stack i: pushes go below it.
        let i = ((rsp - kernel_stacks - 1) / KERNEL_STACK_SIZE) as usize;
        if i < cpu_count {
            return Some(i);
        }
    }
    ist_lows
        .take(cpu_count)
        .position(|low| low != 0 && rsp > low && rsp <= low + ist_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACKS: u64 = 0xffff_8000_0010_0000;
    const IST: u64 = 0x1000;

    #[test]
    fn kernel_stacks_by_arithmetic() {
        let ists = || [0u64; 4].into_iter();
        assert_eq!(cpu_of(STACKS + 8, STACKS, 2, ists(), IST), Some(0));
        assert_eq!(cpu_of(STACKS + KERNEL_STACK_SIZE, STACKS, 2, ists(), IST), Some(0));
        assert_eq!(cpu_of(STACKS + KERNEL_STACK_SIZE + 1, STACKS, 2, ists(), IST), Some(1));
        assert_eq!(cpu_of(STACKS + 2 * KERNEL_STACK_SIZE + 8, STACKS, 2, ists(), IST), None);
        assert_eq!(cpu_of(STACKS, STACKS, 2, ists(), IST), None);
        assert_eq!(cpu_of(STACKS + 8, 0, 2, ists(), IST), None, "not set up yet");
    }

    #[test]
    fn exception_stacks_by_table() {
        let ists = || [0x5000u64, 0, 0x9000].into_iter();
        assert_eq!(cpu_of(0x5000 + IST, STACKS, 3, ists(), IST), Some(0));
        assert_eq!(cpu_of(0x9008, STACKS, 3, ists(), IST), Some(2));
        assert_eq!(cpu_of(0x9008, STACKS, 2, ists(), IST), None, "beyond the count");
        assert_eq!(cpu_of(0x5000, STACKS, 3, ists(), IST), None);
        assert_eq!(cpu_of(0x10, STACKS, 3, ists(), IST), None);
    }
}
