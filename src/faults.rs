//! Fault injection, for the tests that prove a panic in one camera's task is contained and
//! that a full disk loses nothing. Built only with the `sim` feature (tests, demo); in the
//! firmware [`panic_point`] is empty and [`buffer_fs`] is the real filesystem.
//!
//! `CAMGW_FAULTS="probe=cam02:2,stream=cam03"`: the named point panics for that camera the
//! first N times it is reached (no `:N`: every time). Points: `probe` (a health round, as a
//! parser bug on a camera's bytes would) and `stream` (an event-stream connection).
//!
//! `CAMGW_FAULTS="die=update_installed"`: the process aborts there ([`die_point`]), for the
//! tests of a kill at each stage of an update.
//!
//! `CAMGW_FAULTS="disk_full=/path/flag"`: while the file `/path/flag` exists, every write the
//! buffer makes fails with ENOSPC, as on a full disk (no root or tmpfs needed to test it).

#[cfg(feature = "sim")]
mod imp {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    /// (point, camera) → how many more times it fires (`u64::MAX`: always).
    fn plan() -> &'static Mutex<HashMap<(String, String), u64>> {
        static PLAN: OnceLock<Mutex<HashMap<(String, String), u64>>> = OnceLock::new();
        PLAN.get_or_init(|| Mutex::new(parse(&std::env::var("CAMGW_FAULTS").unwrap_or_default())))
    }

    pub(super) fn parse(spec: &str) -> HashMap<(String, String), u64> {
        let mut m = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((point, rest)) = item.split_once('=') else {
                continue;
            };
            let (cam, n) = match rest.split_once(':') {
                Some((c, n)) => (c, n.parse().unwrap_or(u64::MAX)),
                None => (rest, u64::MAX),
            };
            m.insert((point.to_string(), cam.to_string()), n);
        }
        m
    }

    pub fn panic_point(point: &str, camera: &str) {
        let fire = {
            let mut plan = plan().lock().unwrap_or_else(|e| e.into_inner());
            match plan.get_mut(&(point.to_string(), camera.to_string())) {
                Some(0) | None => false,
                Some(n) => {
                    if *n != u64::MAX {
                        *n -= 1;
                    }
                    true
                }
            }
        };
        if fire {
            panic!("injected fault at {point} for {camera}");
        }
    }

    pub fn die_point(point: &str) {
        let fire = plan()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&("die".to_string(), point.to_string()));
        if fire {
            eprintln!("injected fault: dying at {point}");
            std::process::abort();
        }
    }
}

#[cfg(feature = "sim")]
pub use imp::{die_point, panic_point};

/// The filesystem the agent's buffer runs on: the real one, or (sim builds, `disk_full=`)
/// one that is full while a flag file exists.
pub fn buffer_fs() -> std::sync::Arc<dyn crate::durable::Fs> {
    #[cfg(feature = "sim")]
    if let Some(flag) = std::env::var("CAMGW_FAULTS").ok().and_then(|spec| {
        spec.split(',').find_map(|i| {
            i.trim()
                .strip_prefix("disk_full=")
                .map(std::path::PathBuf::from)
        })
    }) {
        return std::sync::Arc::new(full::FullWhile { flag: flag.into() });
    }
    std::sync::Arc::new(crate::durable::Os)
}

#[cfg(feature = "sim")]
mod full {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use crate::durable::{Fs, FsFile, Meta, Os};

    /// The real filesystem, full (ENOSPC on every write) while `flag` exists.
    pub struct FullWhile {
        pub flag: Arc<PathBuf>,
    }

    fn full(flag: &Path) -> io::Result<()> {
        if flag.exists() {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    struct FullFile {
        inner: Box<dyn FsFile>,
        flag: Arc<PathBuf>,
    }

    impl FsFile for FullFile {
        fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
            full(&self.flag)?;
            self.inner.write_all(bytes)
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.inner.read_exact_at(buf, offset)
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.inner.sync_data()
        }
        fn try_clone(&self) -> io::Result<Box<dyn FsFile>> {
            Ok(Box::new(FullFile {
                inner: self.inner.try_clone()?,
                flag: self.flag.clone(),
            }))
        }
    }

    impl FullWhile {
        fn wrap(&self, f: Box<dyn FsFile>) -> Box<dyn FsFile> {
            Box::new(FullFile {
                inner: f,
                flag: self.flag.clone(),
            })
        }
    }

    impl Fs for FullWhile {
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            Os.create_dir_all(dir)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            Os.sync_dir(dir)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            Os.list(dir)
        }
        fn metadata(&self, path: &Path) -> io::Result<Meta> {
            Os.metadata(path)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            Os.read(path)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            Os.remove_file(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            Os.rename(from, to)
        }
        fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            full(&self.flag)?;
            Ok(self.wrap(Os.create_new(path)?))
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            full(&self.flag)?;
            Ok(self.wrap(Os.create(path)?))
        }
        fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Os.open_read(path)
        }
        fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
            Ok(self.wrap(Os.open_write(path)?))
        }
        fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
            Os.lock(path)
        }
    }
}

/// Firmware builds: no fault injection.
#[cfg(not(feature = "sim"))]
#[inline(always)]
pub fn panic_point(_point: &str, _camera: &str) {}

/// `CAMGW_FAULTS="die=POINT"` (sim builds): the process aborts at that point, with no
/// cleanup, as a kill -9 or a power cut would stop it. Points: `update_downloaded`,
/// `update_installed`, `update_handover`.
#[cfg(not(feature = "sim"))]
pub fn die_point(_point: &str) {}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::imp::parse;

    #[test]
    fn a_full_disk_refuses_writes_while_its_flag_exists() {
        let d = tempfile::tempdir().unwrap();
        let flag = d.path().join("full");
        let fs = super::full::FullWhile {
            flag: flag.clone().into(),
        };
        use crate::durable::Fs;
        let mut f = fs.create(&d.path().join("a")).unwrap();
        f.write_all(b"x").unwrap();
        std::fs::write(&flag, b"").unwrap();
        let e = f.write_all(b"y").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(fs.replace(&d.path().join("b"), b"z").is_err());
        std::fs::remove_file(&flag).unwrap();
        f.write_all(b"y").unwrap();
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"xy");
    }

    #[test]
    fn the_spec_names_points_cameras_and_counts() {
        let m = parse(" probe=cam02:2, stream=cam03 ,junk,");
        assert_eq!(m[&("probe".into(), "cam02".into())], 2);
        assert_eq!(m[&("stream".into(), "cam03".into())], u64::MAX);
        assert_eq!(m.len(), 2);
    }
}
