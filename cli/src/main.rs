//! `microv`: start, stop and inspect MicroV beneath the running Linux.

mod args;
mod commands;
mod device;
mod error;
mod format;
mod run;
mod size;

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use microv_abi::ioctl::DEVICE_PATH;

use crate::device::{Device, LinuxDevice};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let mut opener =
        || LinuxDevice::open(Path::new(DEVICE_PATH)).map(|d| Box::new(d) as Box<dyn Device>);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = commands::run(&cli.command, &mut opener, &mut out, &mut io::stderr())
        .and_then(|()| out.flush().map_err(CliError::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `microv log | head`: the reader has all it wanted.
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::FAILURE
        }
    }
}
