//! Small files of fixed-size bytes the server makes once and keeps in its data directory (the
//! file token key, the server's identity): read whole, or made and written whole through a
//! synced temporary file and a rename, so a crash never leaves half a key behind.

use std::io::Write as _;
use std::path::Path;

use zeroize::Zeroize as _;

/// The `N` bytes in `path`, or, if there is no such file, `make()`'s, written there first
/// (mode 0600). A file of another length is an error naming `what` and what deleting it
/// costs (`consequence`).
pub(crate) fn load_or_create<const N: usize>(
    path: &Path,
    what: &str,
    consequence: &str,
    make: impl FnOnce() -> [u8; N],
) -> std::io::Result<[u8; N]> {
    match std::fs::read(path) {
        Ok(mut bytes) => {
            let read = <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} ({what}) must hold exactly {N} bytes; delete it to make a new one \
                         ({consequence})",
                        path.display()
                    ),
                )
            });
            // The copy read may be a secret key.
            bytes.zeroize();
            read
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make();
            write_new(path, &bytes)?;
            tracing::info!(path = %path.display(), "created the {what}");
            Ok(bytes)
        }
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    // A leftover of a crash may hold part of an older attempt, and its mode is whatever it
    // was made with: start from nothing, so the new file gets 0600.
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}
