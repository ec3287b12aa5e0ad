//! The commands, written against [`Device`] so they can be tested with a
//! fake driver.

use std::io::Write;

use microv_image::{load_file, ImageKind};

use crate::args::{Command, StartOpts};
use crate::device::{Device, IoctlError, StartRequest};
use crate::error::{CliError, Op};
use crate::format::{status_json, status_text};
use crate::size::{check_pool_size, mib};

/// Opens the device; the error is errno.
pub type Opener<'a> = dyn FnMut() -> Result<Box<dyn Device>, i32> + 'a;

/// Size of the buffer `microv log` reads into.
pub const LOG_BUFFER_SIZE: usize = 64 << 10;

fn open(op: Op, opener: &mut Opener<'_>) -> Result<Box<dyn Device>, CliError> {
    opener().map_err(|errno| CliError::open_failed(op, errno))
}

fn failed(op: Op) -> impl Fn(IoctlError) -> CliError {
    move |e| CliError::ioctl_failed(op, e.errno, e.code, e.cpu, e.detail)
}

/// Runs one command; normal output goes to `out`, notes to `err`.
pub fn run(
    cmd: &Command,
    opener: &mut Opener<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        Command::Start(opts) => start(opts, opener, out),
        Command::Stop => {
            open(Op::Stop, opener)?.stop().map_err(failed(Op::Stop))?;
            writeln!(out, "microv: stopped; every CPU is native again")?;
            Ok(())
        }
        Command::Status { json } => {
            let mut dev = open(Op::Status, opener)?;
            let st = dev.status().map_err(failed(Op::Status))?;
            // A driver without the list (ENOTTY) still has a status.
            let vms = dev.list_vms().ok();
            if *json {
                writeln!(out, "{}", status_json(&st, vms.as_ref()))?;
            } else {
                out.write_all(status_text(&st, vms.as_ref()).as_bytes())?;
            }
            Ok(())
        }
        Command::Log => log(opener, out, err),
        Command::Run(opts) => crate::run::run(opts, err),
        Command::TestFault { cpu, kind } => {
            open(Op::TestFault, opener)?
                .test_fault(*cpu, kind.code())
                .map_err(failed(Op::TestFault))?;
            writeln!(
                out,
                "microv: the extension faulted on CPU {cpu} on purpose; `microv status` shows how MicroV stopped"
            )?;
            Ok(())
        }
    }
}

/// Linux's kvm_amd or kvm_intel, if loaded, may turn SVM or VMX on beneath
/// MicroV when it creates a VM; MicroV hides them only from modules loaded
/// later.
fn kvm_loaded(modules: &str) -> bool {
    modules
        .lines()
        .any(|l| l.starts_with("kvm_amd ") || l.starts_with("kvm_intel "))
}

fn start(opts: &StartOpts, opener: &mut Opener<'_>, out: &mut dyn Write) -> Result<(), CliError> {
    let pool_size = opts.pool_size();
    check_pool_size(pool_size)?;
    let kernel = load_file(&opts.kernel_path(), ImageKind::Kernel)?;
    let extension = load_file(&opts.extension_path(), ImageKind::Extension)?;
    let images = (kernel.bytes.len() + extension.bytes.len()) as u64;
    if images >= pool_size {
        return Err(CliError::usage(
            format!(
                "a {} pool cannot hold the images ({}) and MicroV's own structures",
                mib(pool_size),
                mib(images)
            ),
            "start with a larger --pool-size",
        ));
    }

    if kvm_loaded(&std::fs::read_to_string("/proc/modules").unwrap_or_default()) {
        return Err(CliError::hv(Op::Start, microv_abi::StartError::KvmLoaded));
    }
    let mut dev = open(Op::Start, opener)?;
    let req = StartRequest {
        kernel: &kernel,
        extension: &extension,
        pool_size,
        flags: opts.flags(),
    };
    dev.start(&req).map_err(failed(Op::Start))?;

    match dev.status() {
        Ok(st) => {
            let s = if st.cpu_count == 1 { "" } else { "s" };
            writeln!(
                out,
                "microv: started beneath Linux on {} CPU{s} (pool {})",
                st.cpu_count,
                mib(pool_size)
            )?;
        }
        Err(_) => writeln!(
            out,
            "microv: started beneath Linux (pool {})",
            mib(pool_size)
        )?,
    }
    Ok(())
}

fn log(opener: &mut Opener<'_>, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CliError> {
    let mut buf = vec![0u8; LOG_BUFFER_SIZE];
    let read = open(Op::Log, opener)?
        .log(&mut buf)
        .map_err(failed(Op::Log))?;
    if read.lost > 0 {
        writeln!(
            err,
            "microv: the first {} bytes of the log were overwritten (the ring wrapped)",
            read.lost
        )?;
    }
    let text = buf.get(..read.copied).unwrap_or(&[]);
    out.write_all(text)?;
    if text.last().is_some_and(|&b| b != b'\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;
    use microv_abi::ioctl::StartArgs;
    use microv_abi::launch::{EXTENSION_BASE, POOL_VA};
    use microv_abi::StartError;
    use microv_image::flatten;
    use microv_image::testing::{sample_image, SAMPLE_ENTRY_OFFSET};

    use super::*;
    use crate::args::Cli;
    use crate::device::fake::FakeDevice;

    #[test]
    fn recognises_a_loaded_kvm_amd_or_kvm_intel() {
        assert!(kvm_loaded("kvm 1 0 - Live 0x0\nkvm_amd 151552 0 - Live 0x0\n"));
        assert!(kvm_loaded("kvm_intel 409600 0 - Live 0x0\nkvm 1 0 - Live 0x0\n"));
        assert!(!kvm_loaded("kvm 1 0 - Live 0x0\nkvm_amd_extra 1 0\n"));
    }

    #[test]
    fn test_fault_asks_the_driver() {
        let dev = FakeDevice::default();
        let r = run_with(
            &dev,
            &["test-fault", "--cpu", "1", "--kind", "invalid-opcode"],
        );
        assert!(r.out.contains("faulted on CPU 1"), "{}", r.out);
        assert_eq!(dev.0.borrow().test_faults, [(1, 2)]);
    }
    use crate::format::tests::running;

    struct Run {
        result: Result<(), CliError>,
        out: String,
        err: String,
        opened: usize,
    }

    fn run_with(dev: &FakeDevice, args: &[&str]) -> Run {
        let cli =
            Cli::try_parse_from(std::iter::once("microv").chain(args.iter().copied())).unwrap();
        let mut opened = 0;
        let mut opener = || {
            opened += 1;
            Ok(Box::new(dev.clone()) as Box<dyn Device>)
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = run(&cli.command, &mut opener, &mut out, &mut err);
        Run {
            result,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
            opened,
        }
    }

    /// A directory holding the two sample images, sealed.
    struct ImageDir(PathBuf);
    impl ImageDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("microv-cli-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            for kind in ImageKind::ALL {
                std::fs::write(dir.join(kind.file_name()), sample_image(kind)).unwrap();
            }
            ImageDir(dir)
        }
        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for ImageDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn check_image_arg(arg: &microv_abi::ioctl::ImageArg, bytes: &[u8], kind: ImageKind) {
        let flat = flatten(&sample_image(kind), kind).unwrap();
        assert_eq!(bytes, &flat.bytes[..]);
        assert_ne!(arg.user_addr, 0);
        assert_eq!(arg.size, flat.bytes.len() as u64);
        assert_eq!(arg.base, kind.base());
        assert_eq!(arg.entry, kind.base() + SAMPLE_ENTRY_OFFSET);
        assert_eq!(arg.segment_count, 3);
        let segs: Vec<(u64, u64, u64)> = arg
            .segments
            .iter()
            .map(|s| (s.offset, s.size, s.flags))
            .collect();
        assert_eq!(
            &segs[..4],
            &[
                (0, 0x2000, 5),
                (0x2000, 0x1000, 4),
                (0x4000, 0x3000, 6),
                (0, 0, 0)
            ]
        );
    }

    #[test]
    fn start_hands_the_driver_the_flattened_images() {
        let dir = ImageDir::new("start");
        let dev = FakeDevice::default();
        dev.0.borrow_mut().status = Some(running());
        let r = run_with(
            &dev,
            &["start", "--image-dir", dir.path(), "--pool-size", "128M"],
        );
        r.result.unwrap();
        assert_eq!(
            r.out,
            "microv: started beneath Linux on 2 CPUs (pool 128 MiB)\n"
        );
        let s = dev.0.borrow();
        assert_eq!(s.starts.len(), 1);
        let (args, kernel, extension): &(StartArgs, Vec<u8>, Vec<u8>) = &s.starts[0];
        check_image_arg(&args.kernel, kernel, ImageKind::Kernel);
        check_image_arg(&args.extension, extension, ImageKind::Extension);
        assert_eq!(args.kernel.base, POOL_VA);
        assert_eq!(args.extension.base, EXTENSION_BASE);
        assert_eq!(args.pool_size, 128 << 20);
        assert_eq!(args.flags, 0);
        assert_eq!(
            (args.error_code, args.error_cpu, args.error_detail),
            (0, u32::MAX, 0)
        );
    }

    #[test]
    fn start_test_flag_and_explicit_paths() {
        let dir = ImageDir::new("paths");
        let dev = FakeDevice::default();
        let mut st = running();
        st.cpu_count = 1;
        dev.0.borrow_mut().status = Some(st);
        let k = format!("{}/microv-kernel.elf", dir.path());
        let e = format!("{}/microv-extension.elf", dir.path());
        let r = run_with(
            &dev,
            &[
                "start",
                "--image-dir",
                "/nonexistent",
                "--kernel",
                &k,
                "--extension",
                &e,
                "--fail-cpu",
                "1",
            ],
        );
        r.result.unwrap();
        assert_eq!(
            r.out,
            "microv: started beneath Linux on 1 CPU (pool 64 MiB)\n"
        );
        let flags = dev.0.borrow().starts[0].0.flags;
        assert_eq!(flags, microv_abi::launch::boot_flags::FAIL_CPU | (1 << 8));
        assert_eq!(
            dev.0.borrow().starts[0].0.pool_size,
            microv_abi::launch::DEFAULT_POOL_SIZE
        );
    }

    #[test]
    fn start_failure_is_reported_with_cpu_and_advice() {
        let dir = ImageDir::new("fail");
        let dev = FakeDevice::default();
        dev.0.borrow_mut().fail = Some(IoctlError {
            errno: libc::EIO,
            code: StartError::InjectedFailure as u32,
            cpu: 1,
            detail: 0,
        });
        let r = run_with(
            &dev,
            &["start", "--image-dir", dir.path(), "--fail-cpu", "1"],
        );
        assert_eq!(
            r.result.unwrap_err().render(),
            "microv: start failed on CPU 1: bring-up failed on purpose (test flag --fail-cpu)\n\
             hint: this is the start-failure test; start without --fail-cpu\n"
        );
        assert_eq!(r.out, "");
    }

    #[test]
    fn bad_requests_are_refused_before_the_driver_is_asked() {
        let dir = ImageDir::new("usage");
        let dev = FakeDevice::default();
        for size in ["65M", "1G", "0", "1M"] {
            let r = run_with(
                &dev,
                &["start", "--image-dir", dir.path(), "--pool-size", size],
            );
            assert!(matches!(r.result, Err(CliError::Usage { .. })), "{size}");
            assert_eq!(r.opened, 0);
        }
        // Missing images.
        let r = run_with(&dev, &["start", "--image-dir", "/nonexistent-microv"]);
        let text = r.result.unwrap_err().render();
        assert_eq!(
            text,
            "microv: /nonexistent-microv/microv-kernel.elf: no such file\n\
             hint: install MicroV's images, or say where they are with --image-dir \
             (or MICROV_IMAGE_DIR) or --kernel/--extension\n"
        );
        assert_eq!(r.opened, 0);

        // The extension given as the kernel.
        let e = format!("{}/microv-extension.elf", dir.path());
        let r = run_with(&dev, &["start", "--image-dir", dir.path(), "--kernel", &e]);
        let text = r.result.unwrap_err().render();
        assert!(text.contains("microv-extension.elf: linked at 0x40000000, but the microkernel must be linked at 0xffff800000000000"), "{text}");
        assert_eq!(r.opened, 0);

        // A corrupt image.
        let k = dir.0.join("microv-kernel.elf");
        let mut bytes = std::fs::read(&k).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x40;
        std::fs::write(&k, bytes).unwrap();
        let r = run_with(&dev, &["start", "--image-dir", dir.path()]);
        let text = r.result.unwrap_err().render();
        assert!(
            text.contains("microv-kernel.elf: corrupt: checksum mismatch (expected 0x"),
            "{text}"
        );
        assert!(
            text.ends_with("\nhint: reinstall MicroV's images\n"),
            "{text}"
        );
        assert!(dev.0.borrow().starts.is_empty());
    }

    #[test]
    fn missing_device() {
        let cli = Cli::try_parse_from(["microv", "status"]).unwrap();
        let mut opener = || Err(libc::ENOENT);
        let e = run(&cli.command, &mut opener, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert!(e
            .render()
            .starts_with("microv: status failed: the MicroV driver is not loaded"));
    }

    #[test]
    fn stop_status_and_log() {
        let dev = FakeDevice::default();
        let r = run_with(&dev, &["stop"]);
        r.result.unwrap();
        assert_eq!(r.out, "microv: stopped; every CPU is native again\n");
        assert_eq!(dev.0.borrow().stops, 1);

        dev.0.borrow_mut().fail = Some(IoctlError {
            errno: libc::EINVAL,
            code: StartError::NotRunning as u32,
            cpu: u32::MAX,
            detail: 0,
        });
        let e = run_with(&dev, &["stop"]).result.unwrap_err().render();
        assert_eq!(e, "microv: stop failed: MicroV is not running\nhint: nothing to stop; `microv start` starts it\n");

        dev.0.borrow_mut().status = Some(running());
        let r = run_with(&dev, &["status"]);
        r.result.unwrap();
        assert!(r.out.starts_with("state          running\n"), "{}", r.out);
        let r = run_with(&dev, &["status", "--json"]);
        r.result.unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
        assert_eq!(v["cpu_count"], 2);
        assert!(v["vms"].is_null(), "a driver without MV_IOC_LIST_VMS");
        dev.0.borrow_mut().vms = Some(crate::format::tests::two_vms());
        let r = run_with(&dev, &["status"]);
        r.result.unwrap();
        assert!(r.out.contains("\nvms            2\n"), "{}", r.out);
        assert!(r.out.contains("     4242  mv-vm-smoke "), "{}", r.out);
        let r = run_with(&dev, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
        assert_eq!(v["vms"][0]["pid"], 4242);
        assert_eq!(r.opened, 1, "one open for the status and the list");

        dev.0.borrow_mut().log = b"microv: hello\nmicrov: no newline".to_vec();
        dev.0.borrow_mut().lost = 10;
        let r = run_with(&dev, &["log"]);
        r.result.unwrap();
        assert_eq!(r.out, "microv: hello\nmicrov: no newline\n");
        assert!(r.err.contains("first 10 bytes"), "{}", r.err);
        dev.0.borrow_mut().log = vec![b'x'; 2 * LOG_BUFFER_SIZE];
        dev.0.borrow_mut().lost = 0;
        let r = run_with(&dev, &["log"]);
        assert_eq!(r.out.len(), LOG_BUFFER_SIZE + 1);
        assert_eq!(r.err, "");
        dev.0.borrow_mut().log.clear();
        assert_eq!(run_with(&dev, &["log"]).out, "");
    }

    #[test]
    fn image_arg_points_at_the_bytes() {
        let flat = flatten(&sample_image(ImageKind::Kernel), ImageKind::Kernel).unwrap();
        let arg = crate::device::image_arg(&flat);
        assert_eq!(arg.user_addr, flat.bytes.as_ptr() as u64);
    }
}
