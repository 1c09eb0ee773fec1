//! The filesystem seam and the durable file operations, written once.
//!
//! [`Fs`] is every filesystem operation the buffer makes, so tests can put a filesystem that
//! fills up, fails, or records what a power cut would keep under it (tests/buffer_crash.rs);
//! [`Os`] is the real one. On top of its primitives, [`Fs::replace`] is the one atomic
//! replace (temp file, fsync, rename, fsync of the directory) that the buffer's `seq` and
//! `acked` files, the replay memory and the config trial all use.
//!
//! The durability rules the code relies on (and the crash test models): a file's data is
//! durable once the file is fsynced (`sync_data`/`sync_all`); a name (create, rename,
//! unlink) once its directory is fsynced.

use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// An open file, as the buffer uses one: appended to, read at offsets, cut, synced.
pub trait FsFile: Send + Sync {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// fdatasync: the data (and the size) are durable.
    fn sync_data(&self) -> io::Result<()>;
    /// A second handle to the same file (synced outside a lock).
    fn try_clone(&self) -> io::Result<Box<dyn FsFile>>;
}

/// What [`Fs::metadata`] tells.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub is_file: bool,
    pub len: u64,
}

/// The filesystem operations of the buffer.
pub trait Fs: Send + Sync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// fsync of a directory: the names created, renamed or removed in it become durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn metadata(&self, path: &Path) -> io::Result<Meta>;
    fn exists(&self, path: &Path) -> bool {
        self.metadata(path).is_ok()
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates `path`, which must not exist, for appending.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Creates or truncates `path` for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for reading at offsets.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for writing (to cut it).
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// An exclusive advisory lock on `path` (created if missing), held while the value lives.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>>;

    /// Creates `dir` and its missing parents and makes the whole path durable: an fsync of
    /// every directory from the top down to `dir`'s parent. A first boot that creates
    /// `/var/lib/camgw` must not lose it, and everything in it, to a power cut; nor may a
    /// start after one that created it (or `camgw doctor`, or a cut) before syncing it.
    /// A level this call created must sync; one that was there (perhaps on a read-only
    /// system partition) is synced on a best-effort basis.
    fn create_dir_all_durable(&self, dir: &Path) -> io::Result<()> {
        let mut levels = Vec::new();
        let mut p = dir;
        while let Some(q) = p.parent().filter(|q| !q.as_os_str().is_empty()) {
            levels.push((q, self.exists(p)));
            p = q;
        }
        self.create_dir_all(dir)?;
        for (parent, existed) in levels.into_iter().rev() {
            match self.sync_dir(parent) {
                Ok(()) => {}
                Err(e) if existed => {
                    tracing::debug!("cannot sync {}: {e}", parent.display());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes the name of `path` durable (fsync of its directory).
    fn sync_name(&self, path: &Path) -> io::Result<()> {
        self.sync_dir(dir_of(path))
    }

    /// Replaces `path` with `bytes` durably and atomically: after a crash at any moment,
    /// `path` holds the old bytes or the new ones.
    fn replace(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = temp_of(path);
        {
            let mut f = self.create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_data()?;
        }
        self.rename(&tmp, path)?;
        self.sync_name(path)
    }

    /// Removes `path` (nothing to do when it is gone) and makes the removal durable.
    fn unlink(&self, path: &Path) -> io::Result<()> {
        match self.remove_file(path) {
            Ok(()) => self.sync_name(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Os;

struct OsFile(std::fs::File);

impl FsFile for OsFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn try_clone(&self) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(OsFile(self.0.try_clone()?)))
    }
}

impl Fs for Os {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        // An entry that cannot be read (a failing card) is skipped, not the whole listing.
        Ok(std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }
    fn metadata(&self, path: &Path) -> io::Result<Meta> {
        let m = std::fs::metadata(path)?;
        Ok(Meta {
            is_file: m.is_file(),
            len: m.len(),
        })
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        Ok(Box::new(OsFile(f)))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(OsFile(std::fs::File::create(path)?)))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(OsFile(std::fs::File::open(path)?)))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(OsFile(f)))
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a valid, owned descriptor.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
        }
        Ok(Box::new(f))
    }
}

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

/// The temp file [`Fs::replace`] writes beside `path` (a start may find one left by a cut).
pub fn temp_of(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

/// [`Fs::sync_dir`] on the real filesystem.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    Os.sync_dir(dir)
}

/// [`Fs::create_dir_all_durable`] on the real filesystem.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    Os.create_dir_all_durable(dir)
}

/// [`Fs::sync_name`] on the real filesystem.
pub fn sync_name(path: &Path) -> io::Result<()> {
    Os.sync_name(path)
}

/// [`Fs::replace`] on the real filesystem.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    Os.replace(path, bytes)
}

/// [`Fs::unlink`] on the real filesystem.
pub fn unlink(path: &Path) -> io::Result<()> {
    Os.unlink(path)
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

    #[test]
    fn a_second_lock_on_the_same_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let held = Os.lock(&p).unwrap();
        assert_eq!(
            Os.lock(&p).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        drop(held);
        assert!(Os.lock(&p).is_ok());
    }
}
