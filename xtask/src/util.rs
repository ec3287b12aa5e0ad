//! Small helpers shared by the subcommands: where things are, running
//! commands with useful errors, copying files.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root. xtask is always built from inside the workspace, so
/// its own manifest directory is a reliable anchor regardless of the cwd.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `target/microv/`: every artifact that goes into the emulated machine.
pub fn stage_dir(root: &Path) -> PathBuf {
    root.join("target/microv")
}

/// The cargo that runs us (`cargo xtask` sets `CARGO`), so nested builds use
/// the same toolchain.
pub fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// Prints the command, runs it with inherited stdio and fails with the
/// command line in the message if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    eprintln!("[xtask] $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// A readable one-line form of a command (program and arguments only).
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(&arg.to_string_lossy()));
    }
    s
}

/// Quotes a word for POSIX sh (used both for display and for the guest's
/// command line).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Copies `src` to `dst` only if the contents differ, so unchanged files keep
/// their mtime and `make` does not rebuild them. Returns whether it copied.
pub fn copy_if_changed(src: &Path, dst: &Path) -> Result<bool> {
    let new = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    if fs::read(dst).ok().as_deref() == Some(&new[..]) {
        return Ok(false);
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    Ok(true)
}

/// Copies a file, directory tree or symlink to `dst`, keeping permission
/// bits (scripts stay executable) and symlinks as symlinks.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).with_context(|| format!("{} not found", src.display()))?;
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if meta.file_type().is_symlink() {
        let target = fs::read_link(src)?;
        let _ = fs::remove_file(dst);
        std::os::unix::fs::symlink(&target, dst)
            .with_context(|| format!("creating symlink {}", dst.display()))?;
    } else if meta.is_dir() {
        fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else {
        fs::copy(src, dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// Whether a file has any execute bit set.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc/d-e"), "abc/d-e");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
