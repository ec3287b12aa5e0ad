//! `cargo xtask gen-header`: regenerates the C view of the ABI that the Linux
//! driver includes, so the C and Rust sides cannot drift apart.

use anyhow::Context;
use std::path::Path;

pub fn run(root: &Path) -> anyhow::Result<()> {
    let mut header = String::new();
    microv_abi::header::write_c_header(&mut header)
        .context("microv_abi::header::write_c_header failed")?;
    let path = root.join("loaders/linux/microv_abi.h");
    std::fs::write(&path, header).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
