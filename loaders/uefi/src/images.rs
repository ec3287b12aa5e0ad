//! MicroV's two images on the EFI system partition, and what microv.efi
//! says about them.

use alloc::format;
use alloc::string::String;

use microv_image::{flatten, FlatImage, ImageError, ImageKind};

/// Where the microkernel's image is, on the volume microv.efi came from.
pub const KERNEL_PATH: &str = "\\EFI\\microv\\microv-kernel.elf";
/// Where the extension's image is.
pub const EXTENSION_PATH: &str = "\\EFI\\microv\\microv-extension.elf";

/// The images to load, with their kinds.
pub const ALL: [(&str, ImageKind); 2] = [
    (KERNEL_PATH, ImageKind::Kernel),
    (EXTENSION_PATH, ImageKind::Extension),
];

/// Checks one image file's bytes as the CLI does; the image as it is
/// loaded, and the line to print.
pub fn check(path: &str, kind: ImageKind, elf: &[u8]) -> Result<(FlatImage, String), ImageError> {
    let flat = flatten(elf, kind)?;
    let line = format!(
        "{path}: {} bytes in memory, {} segments, checksum {:#018x}",
        flat.bytes.len(),
        flat.segments.len(),
        flat.header().checksum
    );
    Ok((flat, line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use microv_image::testing;

    #[test]
    fn a_sealed_image_is_described_and_a_swapped_one_refused() {
        let elf = testing::sample_image(ImageKind::Kernel);
        let (flat, line) = check(KERNEL_PATH, ImageKind::Kernel, &elf).unwrap();
        assert!(line.contains(&format!("{} bytes in memory", flat.bytes.len())), "{line}");
        assert!(
            line.starts_with("\\EFI\\microv\\microv-kernel.elf: "),
            "{line}"
        );
        assert!(line.contains("checksum 0x"), "{line}");
        let e = check(EXTENSION_PATH, ImageKind::Extension, &elf).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::WrongBase { .. } | ImageError::WrongMagic { .. }
            ),
            "{e:?}"
        );
        assert!(check(KERNEL_PATH, ImageKind::Kernel, &elf[..100]).is_err());
    }
}
