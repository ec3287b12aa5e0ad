//! The application: configuration, the CPU, images, memory, then the OS.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use uefi::boot::{
    self, LoadImageSource, SearchType, MemoryType, OpenProtocolAttributes, OpenProtocolParams, ScopedProtocol,
};
use uefi::fs::FileSystem;
use uefi::mem::memory_map::MemoryMap;
use uefi::proto::device_path::build::{media::FilePath, DevicePathBuilder};
use uefi::proto::device_path::DevicePath;
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::pi::mp::MpServices;
use uefi::proto::media::fs::SimpleFileSystem;
use uefi::proto::BootPolicy;
use uefi::proto::ProtocolPointer;
use uefi::runtime::{self, VariableAttributes, VariableVendor};
use uefi::{println, CStr16, CString16, Handle, Identify, Status};

use super::aps;
use super::start;
use crate::bootopt;
use crate::config::{self, Boot, Config};
use crate::images;
use crate::pool;
use crate::record;
use crate::svm;
use microv_arch::cpuid::CpuidResult;
use microv_arch::{instr, msr};

/// The CPU microv.efi runs on (the bootstrap processor), in ring 0 under
/// the firmware.
struct BootCpu;

impl svm::Cpu for BootCpu {
    fn cpuid(&self, leaf: u32) -> CpuidResult {
        instr::cpuid(leaf, 0)
    }
    fn vm_cr(&self) -> u64 {
        // SAFETY: UEFI applications run in ring 0; `svm::check` reads VM_CR
        // only after CPUID showed SVM, so the MSR exists.
        unsafe { instr::rdmsr(msr::VM_CR) }
    }
    fn efer(&self) -> u64 {
        // SAFETY: ring 0; EFER exists on every x86-64 CPU.
        unsafe { instr::rdmsr(msr::EFER) }
    }
}

/// What microv.efi returns to hand the machine to the firmware's next boot
/// entry: a boot option that returns an error makes the boot manager try
/// the next one in BootOrder (EDK2's BDS shows its menu after a success).
const NEXT_ENTRY: Status = Status::ABORTED;

/// Called by `efi_main` once the image is relocated.
pub(super) extern "efiapi" fn efi_rust_main(
    image: Handle,
    system_table: *const uefi_raw::table::system::SystemTable,
) -> Status {
    // SAFETY: the firmware's own handle for this image, passed to its entry.
    unsafe { boot::set_image_handle(image) };
    // SAFETY: the firmware's system table, valid while boot services run,
    // which is all of this application's life.
    unsafe { uefi::table::set_system_table(system_table) };
    // The firmware's hand-off, in TSC ticks since reset (instructions under
    // QEMU's -icount shift=0): a machine's init can stamp its own and tell
    // how long the boot took from here.
    let handed_off = instr::rdtsc();
    let mut report = Report(String::new());
    report.say(&format!(
        "MicroV {} (early boot), TSC {handed_off}",
        env!("CARGO_PKG_VERSION")
    ));
    if start::microv_runs() {
        // Started again by the boot entry after the one that started
        // MicroV (say, the firmware's default path is this file too).
        report.say("MicroV already runs beneath this CPU; back to the firmware");
        return NEXT_ENTRY;
    }
    aps::forget_previous_outcome();
    match run(image, &mut report) {
        Ok(status) => status,
        Err(why) => {
            report.say(&why);
            // Never back to the firmware with MicroV on this CPU alone (the
            // others native) or with the ExitBootServices wrapper in place
            // (the firmware unloads microv.efi once it returns).
            leave_microv(&mut report);
            report.say("back to the firmware, which boots its next boot entry");
            report.publish();
            NEXT_ENTRY
        }
    }
}

/// What microv.efi did, line by line: printed on the console as it
/// happens, and left for the OS in a volatile variable
/// ([`record::VARIABLE`]) just before it boots.
pub(super) struct Report(String);

impl Report {
    pub(super) fn say(&mut self, line: &str) {
        println!("microv.efi: {line}");
        self.0.push_str(line);
        self.0.push('\n');
    }

    fn publish(&mut self) {
        let written = ucs2(record::VARIABLE).and_then(|name| {
            runtime::set_variable(
                &name,
                &VariableVendor(record::VENDOR),
                VariableAttributes::BOOTSERVICE_ACCESS | VariableAttributes::RUNTIME_ACCESS,
                self.0.as_bytes(),
            )
            .map_err(|e| e.to_string())
        });
        if let Err(why) = written {
            println!("microv.efi: cannot leave this report for the OS: {why}");
        }
    }
}

fn run(image: Handle, report: &mut Report) -> Result<Status, String> {
    let volume =
        boot::get_image_file_system(image).map_err(|e| format!("cannot open my volume: {e}"))?;
    let mut fs = FileSystem::new(volume);
    let text = fs
        .read_to_string(ucs2(config::PATH)?.as_ref())
        .map_err(|e| format!("cannot read {}: {e}", config::PATH))?;
    let config = config::parse(&text).map_err(|e| e.to_string())?;
    let started = if config.start {
        start_microv(&mut fs, &config, report)
    } else {
        Err(format!("microv = off in {}", config::PATH))
    };
    match started {
        Ok(()) => report.say("MicroV is running"),
        Err(why) => report.say(&format!(
            "MicroV not started: {why}; booting the OS natively"
        )),
    }
    boot_os(image, &config, report)
}

/// Checks the CPU, loads and checks both images, lists the OS's RAM, then
/// starts MicroV on this CPU (`start`).
fn start_microv(fs: &mut FileSystem, config: &Config, report: &mut Report) -> Result<(), String> {
    svm::check(&BootCpu).map_err(|e| format!("{} ({})", e.message(), e.advice()))?;
    report.say("this CPU has SVM with nested paging, enabled and unused");
    let mut flat = Vec::new();
    for (path, kind) in images::ALL {
        let elf = fs
            .read(ucs2(path)?.as_ref())
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        let (image, line) = images::check(path, kind, &elf).map_err(|e| format!("{path}: {e}"))?;
        report.say(&line);
        flat.push(image);
    }
    let [kernel, extension] = <[_; 2]>::try_from(flat).map_err(|_| "two images expected")?;
    let map = boot::memory_map(MemoryType::LOADER_DATA)
        .map_err(|e| format!("cannot read the memory map: {e}"))?;
    let ram = pool::ram_ranges(map.entries().map(|d| (d.ty, d.phys_start, d.page_count)))
        .ok_or("the memory map has more RAM ranges than MicroV can list")?;
    let bytes: u64 = ram.iter().map(|[first, last]| last - first + 1).sum();
    report.say(&format!(
        "RAM for the OS: {} MiB in {} ranges",
        bytes >> 20,
        ram.len()
    ));
    let cpus = cpu_count()?;
    let armed = start::start(&kernel, &extension, &ram, config, cpus, report, |for_aps| {
        (cpus > 1).then(|| aps::prepare(for_aps, config.silent_cpu)).transpose()
    })?;
    if let Some(armed) = armed {
        if !aps::arm(armed) {
            leave_microv(report);
            return Err("the firmware's boot services table cannot be reached".into());
        }
        report.say(&format!(
            "the other {} CPUs enter MicroV when the OS exits boot services",
            cpus - 1
        ));
    }
    Ok(())
}

/// How many CPUs the firmware's MP Services count (enabled ones).
fn cpu_count() -> Result<usize, String> {
    let handle = boot::get_handle_for_protocol::<MpServices>()
        .map_err(|e| format!("cannot count the CPUs (no MP Services): {e}"))?;
    let mp = protocol::<MpServices>(handle).map_err(|e| format!("cannot open MP Services: {e}"))?;
    let count = mp
        .get_number_of_processors()
        .map_err(|e| format!("cannot count the CPUs: {e}"))?;
    Ok(count.enabled)
}

fn boot_os(image: Handle, config: &Config, report: &mut Report) -> Result<Status, String> {
    let (kernel, cmdline) = match (&config.boot, config.boot.linux_cmdline()) {
        (Boot::Linux { kernel, .. }, Some(cmdline)) => (kernel, cmdline),
        _ => return boot_next(image, report),
    };
    let device = protocol::<LoadedImage>(image)
        .map_err(|e| format!("cannot find my own image: {e}"))?
        .device()
        .ok_or("my image has no device")?;
    let path = file_on(device, &ucs2(kernel)?)?;
    let child = boot::load_image(
        image,
        LoadImageSource::FromDevicePath {
            device_path: &path,
            boot_policy: BootPolicy::ExactMatch,
        },
    )
    .map_err(|e| format!("cannot load {kernel}: {e}"))?;
    let options = ucs2(&cmdline)?;
    {
        let mut loaded = protocol::<LoadedImage>(child)
            .map_err(|e| format!("cannot set {kernel}'s command line: {e}"))?;
        // SAFETY: `options` is a NUL-terminated UCS-2 string that outlives
        // the kernel's use of it: StartImage below runs while it is alive,
        // and a Linux EFI stub copies its command line before it returns
        // or exits boot services.
        unsafe { loaded.set_load_options(options.as_ptr().cast(), options.num_bytes() as u32) };
    }
    report.say(&format!("starting {kernel} with \"{cmdline}\""));
    report.publish();
    let returned = boot::start_image(child);
    Err(format!("{kernel} returned: {returned:?}"))
}

/// `boot = next`: starts the boot entries after the one that started
/// microv.efi, in `BootOrder`, until one boots, rather than returning to the
/// firmware, which would unload microv.efi (its ExitBootServices wrapper
/// must be there when that OS exits boot services). If none boots, MicroV
/// is stopped (the firmware must not boot on with one CPU beneath it and
/// the others native) and the firmware gets control back.
fn boot_next(image: Handle, report: &mut Report) -> Result<Status, String> {
    let global = VariableVendor::GLOBAL_VARIABLE;
    let current = runtime::get_variable_boxed(&ucs2("BootCurrent")?, &global)
        .ok()
        .and_then(|(v, _)| Some(u16::from_le_bytes(v.get(..2)?.try_into().ok()?)));
    let order = runtime::get_variable_boxed(&ucs2("BootOrder")?, &global)
        .map(|(v, _)| bootopt::order(&v))
        .unwrap_or_default();
    for n in bootopt::after_current(&order, current) {
        let name = bootopt::variable(n);
        let Ok((bytes, _)) = runtime::get_variable_boxed(&ucs2(&name)?, &global) else {
            continue;
        };
        let Some(option) = bootopt::parse(&bytes).filter(|o| o.active) else {
            continue;
        };
        // efibootmgr's entries are short-form (`HD(…)/File(…)`): made
        // whole as the firmware's boot manager would.
        let volumes = volume_paths();
        let volumes: Vec<&[u8]> = volumes.iter().map(Vec::as_slice).collect();
        let expanded = bootopt::expand(option.device_path, &volumes);
        let Ok(path) = <&DevicePath>::try_from(expanded.as_deref().unwrap_or(option.device_path))
        else {
            report.say(&format!("{name}: its device path is malformed; skipped"));
            continue;
        };
        let child = match boot::load_image(
            image,
            LoadImageSource::FromDevicePath {
                device_path: path,
                boot_policy: BootPolicy::BootSelection,
            },
        ) {
            Ok(child) => child,
            Err(e) => {
                report.say(&format!("{name} \"{}\" cannot be loaded: {e}", option.description));
                continue;
            }
        };
        if !option.optional_data.is_empty() {
            let Ok(mut loaded) = protocol::<LoadedImage>(child) else {
                report.say(&format!("{name}: cannot give it its load options; skipped"));
                let _ = boot::unload_image(child);
                continue;
            };
            // SAFETY: `bytes` holds the options and outlives StartImage
            // below; an image that keeps them copies them first.
            unsafe {
                loaded.set_load_options(
                    option.optional_data.as_ptr().cast(),
                    option.optional_data.len() as u32,
                )
            };
        }
        report.say(&format!("starting the next boot entry, {name} \"{}\"", option.description));
        report.publish();
        let returned = boot::start_image(child);
        report.say(&format!("{name} returned: {returned:?}"));
    }
    Err("no boot entry after this one booted".into())
}

/// The device paths of the volumes the firmware has (file systems).
fn volume_paths() -> Vec<Vec<u8>> {
    let Ok(handles) = boot::locate_handle_buffer(SearchType::ByProtocol(&SimpleFileSystem::GUID))
    else {
        return Vec::new();
    };
    handles
        .iter()
        .filter_map(|&h| protocol::<DevicePath>(h).ok().map(|p| p.as_bytes().to_vec()))
        .collect()
}

/// Takes MicroV off this CPU (the only one in it before the OS exits boot
/// services) and puts the firmware's ExitBootServices back, if it runs.
fn leave_microv(report: &mut Report) {
    if !start::microv_runs() {
        return;
    }
    aps::disarm();
    match start::stop() {
        Ok(()) => report.say("MicroV stopped (its memory stays reserved until the next restart)"),
        Err(why) => report.say(&format!("MicroV could not be stopped: {why}")),
    }
}

/// `path` (UCS-2) on the volume `device`: the volume's device path with a
/// file path node.
fn file_on(device: Handle, path: &CStr16) -> Result<Box<DevicePath>, String> {
    let volume = protocol::<DevicePath>(device).map_err(|e| format!("no device path: {e}"))?;
    let mut buf = Vec::new();
    let mut builder = DevicePathBuilder::with_vec(&mut buf);
    for node in volume.node_iter() {
        builder = builder
            .push(&node)
            .map_err(|e| format!("device path: {e:?}"))?;
    }
    let full = builder
        .push(&FilePath { path_name: path })
        .and_then(|b| b.finalize())
        .map_err(|e| format!("device path: {e:?}"))?;
    Ok(full.to_boxed())
}

/// Opens protocol `P` on `handle` without taking it over (what
/// HandleProtocol does): the volume stays its drivers'.
fn protocol<P: ProtocolPointer + ?Sized>(handle: Handle) -> uefi::Result<ScopedProtocol<P>> {
    let params = OpenProtocolParams {
        handle,
        agent: boot::image_handle(),
        controller: None,
    };
    // SAFETY: GetProtocol opens without exclusive access; nothing here
    // uninstalls the protocol while the scoped handle lives.
    unsafe { boot::open_protocol::<P>(params, OpenProtocolAttributes::GetProtocol) }
}

fn ucs2(text: &str) -> Result<CString16, String> {
    CString16::try_from(text).map_err(|_| format!("`{text}` is not UCS-2 text"))
}
