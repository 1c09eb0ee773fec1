//! The durable file operations, written once: replacing a file atomically (temp file, fsync,
//! rename, fsync of the directory), making a name durable (fsync of its directory), and
//! unlinking durably. A rename or unlink is durable only once its directory is synced; a
//! file's data only once the file is. Used by the buffer (`seq`, `acked`), the replay memory
//! and the config trial, so each gets the same guarantee after a power cut: the old content
//! or the new one, never a mix, never a missing file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory that holds `path` (`.` for a bare name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `path` with `suffix` appended to its file name (`seq` -> `seq.tmp`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// fsync of a directory: the names created, renamed or removed in it become durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes the name of `path` durable (fsync of its directory).
pub fn sync_name(path: &Path) -> io::Result<()> {
    sync_dir(dir_of(path))
}

/// The temp file [`replace`] writes beside `path` (a start may find one left by a cut).
pub fn temp_of(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

/// Replaces `path` with `bytes` durably and atomically: after a crash at any moment, `path`
/// holds the old bytes or the new ones.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_of(path);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_name(path)
}

/// Removes `path` (nothing to do when it is gone) and makes the removal durable.
pub fn unlink(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_name(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_leaves_the_new_bytes_and_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("seq");
        replace(&p, b"one").unwrap();
        replace(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!temp_of(&p).exists());
        unlink(&p).unwrap();
        unlink(&p).unwrap();
        assert!(!p.exists());
        assert_eq!(dir_of(Path::new("bare")), Path::new("."));
        assert_eq!(temp_of(Path::new("a/acked")), Path::new("a/acked.tmp"));
    }
}
