//! Image files: reading and flattening one, sealing one in place (the CLI
//! and the build; std only).

use core::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::{flatten, seal, FlatImage, ImageError, ImageKind};

/// What went wrong with an image file: it could not be read, or it is not a
/// usable image.
#[derive(Debug)]
pub enum FileErrorKind {
    Io(io::Error),
    Image(ImageError),
}

/// An error about one image file; `Display` starts with the file's path.
#[derive(Debug)]
pub struct FileError {
    pub path: PathBuf,
    pub kind: FileErrorKind,
}

impl FileError {
    /// What the user can do about it.
    pub fn advice(&self) -> &'static str {
        match &self.kind {
            FileErrorKind::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                "install MicroV's images, or say where they are with --image-dir \
                 (or MICROV_IMAGE_DIR) or --kernel/--extension"
            }
            FileErrorKind::Io(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                "run the command as root"
            }
            FileErrorKind::Io(_) => "check the file and try again",
            FileErrorKind::Image(e) => e.advice(),
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        match &self.kind {
            FileErrorKind::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                f.write_str("no such file")
            }
            FileErrorKind::Io(e) => write!(f, "cannot read it: {e}"),
            FileErrorKind::Image(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            FileErrorKind::Io(e) => Some(e),
            FileErrorKind::Image(e) => Some(e),
        }
    }
}

/// Reads and flattens the image file at `path`.
pub fn load_file(path: &Path, kind: ImageKind) -> Result<FlatImage, FileError> {
    let elf = std::fs::read(path).map_err(|e| FileError {
        path: path.to_owned(),
        kind: FileErrorKind::Io(e),
    })?;
    flatten(&elf, kind).map_err(|e| FileError {
        path: path.to_owned(),
        kind: FileErrorKind::Image(e),
    })
}

/// Seals the image file at `path` in place; returns the checksum.
pub fn seal_file(path: &Path, kind: ImageKind) -> Result<u64, FileError> {
    let io = |e| FileError {
        path: path.to_owned(),
        kind: FileErrorKind::Io(e),
    };
    let mut elf = std::fs::read(path).map_err(io)?;
    let sum = seal(&mut elf, kind).map_err(|e| FileError {
        path: path.to_owned(),
        kind: FileErrorKind::Image(e),
    })?;
    std::fs::write(path, &elf).map_err(io)?;
    Ok(sum)
}
