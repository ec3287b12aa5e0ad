//! Why starting or running MicroV failed. One code space is shared by the
//! microkernel (written into a CPU's landing page), the driver (returned by
//! the start ioctl) and the CLI (which prints [`StartError::advice`]).

macro_rules! start_errors {
    ($( $variant:ident = $value:literal : $msg:literal, $advice:literal ),* $(,)?) => {
        /// A reason MicroV could not start, or stopped on its own.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum StartError {
            $( #[doc = $msg] $variant = $value, )*
        }

        impl StartError {
            /// All codes in numbering order.
            pub const ALL: &'static [StartError] = &[$( StartError::$variant, )*];
            /// Reads a code; `None` for 0 (no error) or an unknown value.
            pub const fn from_u32(v: u32) -> Option<StartError> {
                match v { $( $value => Some(StartError::$variant), )* _ => None }
            }
            /// What went wrong.
            pub const fn message(self) -> &'static str {
                match self { $( StartError::$variant => $msg, )* }
            }
            /// What the user can do about it.
            pub const fn advice(self) -> &'static str {
                match self { $( StartError::$variant => $advice, )* }
            }
        }
    };
}

start_errors! {
    AlreadyRunning = 1 : "MicroV is already running",
        "run `microv stop` first, or `microv status` to see it",
    NotRunning = 2 : "MicroV is not running",
        "nothing to stop; `microv start` starts it",
    BadImage = 3 : "a hypervisor image is not valid (wrong magic, version, size or entry point)",
        "reinstall MicroV's images, or pass the right ones with --kernel/--extension",
    PoolTooSmall = 4 : "the memory pool is too small for the images and one CPU's structures",
        "start with a larger --pool-size",
    OutOfMemory = 5 : "the hypervisor ran out of pool memory while starting",
        "start with a larger --pool-size",
    SvmUnsupported = 6 : "this CPU has no AMD SVM with nested paging",
        "MicroV needs an AMD CPU with AMD-V and nested paging (RVI)",
    SvmDisabled = 7 : "SVM is disabled by the firmware (VM_CR.SVMDIS)",
        "enable SVM / AMD-V in the firmware setup",
    SvmInUse = 8 : "another hypervisor is using SVM on this CPU",
        "stop the other hypervisor's VMs (or unload kvm_amd) and try again",
    UnsupportedCpuState = 9 : "the CPU is in a state MicroV cannot virtualize (for example 5-level paging)",
        "report the detail value; it names the register and value refused",
    ExtensionFault = 10 : "the extension (host ring 3) faulted; MicroV stopped",
        "this is a MicroV bug: report the fault record from `microv status` and `microv log`",
    KernelFault = 11 : "the microkernel (host ring 0) faulted; MicroV stopped",
        "this is a MicroV bug: report the fault record from `microv status` and `microv log`",
    ExtensionError = 12 : "the extension refused to start on this CPU",
        "see `microv log` for the extension's reason",
    TooManyCpus = 13 : "more CPUs are online than MicroV supports",
        "take CPUs offline or rebuild MicroV with a larger MAX_CPUS",
    InjectedFailure = 14 : "bring-up failed on purpose (test flag --fail-cpu)",
        "this is the start-failure test; start without --fail-cpu",
    NoDevice = 15 : "the MicroV driver is not loaded (/dev/microv is missing)",
        "load it: `modprobe microv` or `insmod /usr/lib/microv/microv.ko`",
    NotPermitted = 16 : "only root may start, stop or query MicroV",
        "run the command as root",
    BadRequest = 17 : "the driver refused a malformed request",
        "the CLI and the driver are from different builds; reinstall both",
    CpuHotplug = 18 : "the set of online CPUs changed while starting",
        "try again",
    Unresponsive = 19 : "a CPU did not answer the stop request",
        "see `microv log`; the machine may need a reboot",
    NotATestImage = 20 : "the running extension does not serve test faults",
        "start with --extension /usr/lib/microv/microv-extension-test.elf (built by `cargo xtask build --test-hooks`)",
    NoSuchCpu = 21 : "MicroV does not run on that CPU",
        "`microv status` lists the CPUs MicroV runs on",
    KvmLoaded = 22 : "Linux's kvm_amd or kvm_intel module is loaded and could start using SVM or VMX beneath MicroV",
        "unload it first: `rmmod kvm_amd` (or `rmmod kvm_intel`)",
    RootShutdown = 23 : "the root VM shut down (a triple fault, which resets a machine without MicroV); MicroV stepped aside",
        "the root's own kernel failed, not MicroV: see `microv log` for where",
    StopRefused = 24 : "not every CPU joined the stop in time (MicroV waited about a second for all of them); nothing changed, MicroV keeps running on every CPU",
        "run `microv stop` again; if it keeps being refused, look for a CPU stuck with interrupts off (`dmesg`) and see `microv log`",
    PageTableIsolation = 25 : "kernel page-table isolation (pti=on) is active; MicroV's hand-back path needs the kernel mapped in every page table",
        "boot with pti=off (AMD CPUs are not affected by Meltdown and do not need it; on an Intel CPU that is, pti=off gives up the kernel's Meltdown protection)",
    VmsRunning = 26 : "micro VMs are running; stopping MicroV would pull the hypervisor from under them",
        "end them first (`microv status` lists them with their VMM's pid), then stop",
    EarlyBoot = 27 : "MicroV was started at boot, before Linux (early boot), and runs until the machine restarts",
        "to run without it, boot the OS's own entry instead of microv.efi (see docs/early-boot.md)",
    VmxUnsupported = 28 : "this CPU has no Intel VMX with EPT, VPID and unrestricted guest",
        "MicroV needs an Intel CPU with VT-x, EPT and unrestricted guest (Westmere or later), or an AMD CPU with AMD-V and nested paging",
    VmxDisabled = 29 : "VMX is disabled by the firmware (IA32_FEATURE_CONTROL)",
        "enable Intel VT-x (Virtualization Technology) in the firmware setup",
    VmxInUse = 30 : "another hypervisor is using VMX on this CPU (CR4.VMXE is set)",
        "stop the other hypervisor's VMs (or unload kvm_intel) and try again",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_read_well() {
        for &e in StartError::ALL {
            assert_eq!(StartError::from_u32(e as u32), Some(e));
            assert!(!e.message().is_empty() && !e.advice().is_empty());
            assert!(!e.message().ends_with('.'), "{e:?}: messages are fragments");
        }
        assert_eq!(StartError::from_u32(0), None);
        assert_eq!(StartError::from_u32(10_000), None);
    }
}
