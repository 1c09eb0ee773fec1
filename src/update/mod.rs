//! Over-the-air updates at the edge (issue 16): the install directory under `data_dir`, its
//! durable state, the choice a start makes before anything else runs, and the install of a
//! verified download. The rules themselves are pure, in [`crate::upgrade`]; the download is
//! [`download`].
//!
//! ```text
//! data_dir/update/state.json           upgrade::Installed (replaced atomically, fsynced)
//! data_dir/update/versions/V/camgw     each installed version (kept until superseded)
//! data_dir/update/incoming/V.part      a download in progress (removed at every start)
//! ```
//!
//! The packaged binary (`/usr/bin/camgw`, read-only under `ProtectSystem=strict`) is the
//! launcher: `camgw run` started by systemd or by hand chooses, counts a trial start, and
//! execs the chosen version with the same command line and `CAMGW_LAUNCHER` set to its own
//! path. A version that must stop (its trial ran out, it was just updated) execs the launcher
//! again, which chooses again.

pub mod download;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::Digest as _;

use crate::upgrade::{Installed, Plan, Report};

/// Set by the launcher for the version it hands over to: that process is not the launcher.
pub const LAUNCHER_ENV: &str = "CAMGW_LAUNCHER";

/// Set with it: the installed version the process was started as (its binary must say the same).
pub const VERSION_ENV: &str = "CAMGW_UPDATE_VERSION";

/// The install directory (`data_dir/update`).
#[derive(Debug, Clone)]
pub struct Dir {
    pub root: PathBuf,
}

impl Dir {
    pub fn new(data_dir: &Path) -> Dir {
        Dir {
            root: data_dir.join("update"),
        }
    }

    fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn incoming(&self) -> PathBuf {
        self.root.join("incoming")
    }

    pub fn path_of(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// The state; none yet is an empty one. A damaged file (a bad SD card) is set aside as
    /// `state.json.bad` and read as empty: the packaged binary runs, which always works.
    pub fn load(&self) -> Installed {
        let p = self.state_path();
        match std::fs::read(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Installed::default(),
            Err(e) => {
                tracing::error!(
                    "cannot read {}: {e}; running the packaged binary",
                    p.display()
                );
                Installed::default()
            }
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(
                        "{} is damaged ({e}); set aside as state.json.bad, running the packaged binary",
                        p.display()
                    );
                    let _ = std::fs::rename(&p, crate::durable::with_suffix(&p, ".bad"));
                    Installed::default()
                }
            },
        }
    }

    /// The state as it is, for readers outside the agent (doctor, `--version`): a damaged
    /// file reads as empty and is left where it is.
    pub fn peek(&self) -> Installed {
        std::fs::read(self.state_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn store(&self, i: &Installed) -> io::Result<()> {
        crate::durable::create_dir_all_durable(&self.root)?;
        let bytes = serde_json::to_vec_pretty(i).expect("state serializes");
        crate::durable::replace(&self.state_path(), &bytes)
    }
}

/// What a start of `camgw run` does first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Go on as this binary (`trial`: this start is one of its trial starts).
    Run { trial: bool },
    /// Exec this file (an installed version, or the launcher) with the same command line.
    Exec {
        path: PathBuf,
        version: Option<semver::Version>,
    },
    /// Another `camgw run` uses this data_dir (the service, beside a technician's run): this
    /// one must not start at all.
    Busy,
}

/// Takes the install directory's lock for the rest of this process (an exec lets it go; the
/// next version takes it at its own start). False when another process holds it.
fn lock(dir: &Dir) -> bool {
    use std::os::unix::io::AsRawFd as _;
    static HELD: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    if HELD.get().is_some() {
        return true;
    }
    let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.root.join("run.lock"))
    else {
        // Cannot even open it (read-only data_dir): the buffer will say what is wrong.
        return true;
    };
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    let _ = HELD.set(f);
    true
}

/// The sha256 of a file, read in 64 KiB pieces.
pub fn file_sha256(path: &Path) -> io::Result<[u8; 32]> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// The choice at start, before the buffer or the runtime: `launcher` is the packaged binary's
/// path when this process was handed over to (not the launcher itself). Each installed file
/// is checked against its sha256 before a hand-over; one that does not match is marked failed.
pub fn start(data_dir: &Path, own: &semver::Version, launcher: Option<&Path>) -> Start {
    let dir = Dir::new(data_dir);
    // The lock is taken from the first start on, before any update exists: a download in
    // progress is as much the running agent's as an installed version.
    if crate::durable::create_dir_all_durable(&dir.root).is_err() {
        // A data_dir that cannot be written: nothing was installed there; the buffer says why.
        return Start::Run { trial: false };
    }
    if !lock(&dir) {
        // Another `camgw run` on this data_dir: it must not count a start or remove a download.
        return Start::Busy;
    }
    if launcher.is_none() {
        // A download a crash or a cut interrupted is never resumed: the command is not redone.
        let _ = std::fs::remove_dir_all(dir.incoming());
    }
    let mut st = dir.load();
    for _ in 0..=st.versions.len() + 1 {
        let before = st.clone();
        let plan = st.on_start(own, launcher.is_none());
        let stored = if st != before { dir.store(&st) } else { Ok(()) };
        if let Err(e) = stored {
            // Without the count on disk, a release that crashes would be started for ever.
            tracing::error!(
                "cannot store {}: {e}; running this binary",
                dir.state_path().display()
            );
            return Start::Run { trial: false };
        }
        match plan {
            Plan::Run { trial } => return Start::Run { trial },
            Plan::Fallback => {
                return match launcher {
                    Some(l) => Start::Exec {
                        path: l.to_path_buf(),
                        version: None,
                    },
                    // Cannot happen (the launcher never falls back); run rather than loop.
                    None => Start::Run { trial: false },
                };
            }
            Plan::Exec { version, file } => {
                let path = dir.path_of(&file);
                let want = st
                    .versions
                    .iter()
                    .find(|v| v.version == version)
                    .map(|v| v.sha256.clone())
                    .unwrap_or_default();
                match file_sha256(&path) {
                    Ok(h) if crate::release::hex(&h) == want => {
                        return Start::Exec {
                            path,
                            version: Some(version),
                        }
                    }
                    Ok(_) => st.unusable(
                        &version,
                        "its installed file no longer matches its sha256 (a damaged disk?)",
                    ),
                    Err(e) => {
                        st.unusable(&version, &format!("cannot read its installed file: {e}"))
                    }
                }
                if let Err(e) = dir.store(&st) {
                    tracing::error!("cannot store {}: {e}", dir.state_path().display());
                    return Start::Run { trial: false };
                }
            }
        }
    }
    Start::Run { trial: false }
}

/// The version the launcher would hand over to, with its file checked, without changing the
/// state (for a check, not a start).
pub fn chosen(data_dir: &Path, own: &semver::Version) -> Option<(PathBuf, semver::Version)> {
    let dir = Dir::new(data_dir);
    let st = dir.peek();
    let v = st.choice(own)?;
    let path = dir.path_of(&v.file);
    let h = file_sha256(&path).ok()?;
    (crate::release::hex(&h) == v.sha256).then(|| (path, v.version.clone()))
}

/// The exec of an installed version failed (`why`): it is marked failed so the next choice
/// skips it.
pub fn exec_failed(data_dir: &Path, version: &semver::Version, why: &str) {
    let dir = Dir::new(data_dir);
    let mut st = dir.load();
    st.unusable(version, why);
    if let Err(e) = dir.store(&st) {
        tracing::error!("cannot store {}: {e}", dir.state_path().display());
    }
}

/// The running agent's side: its version, whether this start is a trial, the launcher, and
/// the state file (changed under one lock, each change stored before it is acted on).
#[derive(Debug)]
pub struct Local {
    pub dir: Dir,
    pub own: semver::Version,
    /// This start is a trial start, not yet confirmed.
    trial: std::sync::atomic::AtomicBool,
    /// The packaged binary, which chooses again when this process hands over.
    pub launcher: PathBuf,
    /// This process's own file.
    pub binary: PathBuf,
    lock: Mutex<()>,
}

impl Local {
    pub fn new(
        data_dir: &Path,
        own: semver::Version,
        trial: bool,
        launcher: PathBuf,
        binary: PathBuf,
    ) -> Local {
        Local {
            dir: Dir::new(data_dir),
            own,
            trial: trial.into(),
            launcher,
            binary,
            lock: Mutex::new(()),
        }
    }

    /// Whether this version is on trial (not yet confirmed).
    pub fn on_trial(&self) -> bool {
        self.trial.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The trial confirmed this version (after the state says so).
    pub fn confirmed(&self) {
        self.trial.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this process runs a version installed over the air (not the packaged one).
    pub fn over_the_air(&self) -> bool {
        self.binary != self.launcher
    }

    /// What status and telemetry say about the running software.
    pub fn origin(&self) -> serde_json::Value {
        serde_json::json!({
            "source": if self.over_the_air() { "over_the_air" } else { "package" },
            "binary": self.binary.display().to_string(),
            "trial": self.on_trial(),
        })
    }

    /// Loads, changes and stores the state under the lock (blocking: call off the workers).
    pub fn modify<R>(&self, f: impl FnOnce(&mut Installed) -> R) -> io::Result<R> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = self.dir.load();
        let r = f(&mut st);
        self.dir.store(&st)?;
        Ok(r)
    }

    /// The reports not yet published; each is marked published by [`Local::reported`].
    pub fn pending(&self) -> Vec<Report> {
        if !self.dir.root.exists() {
            return Vec::new();
        }
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.dir.load().pending_reports()
    }

    pub fn reported(&self, r: &Report) -> io::Result<()> {
        self.modify(|st| st.reported(r))
    }

    /// Removes the files of versions no longer needed (failed and reported, confirmed and
    /// superseded), and the entries of superseded confirmed ones.
    pub fn tidy(&self) -> io::Result<()> {
        if !self.dir.root.exists() {
            return Ok(());
        }
        let dir = self.dir.clone();
        let own = self.own.clone();
        self.modify(|st| {
            let gone: Vec<(semver::Version, String, bool)> = st
                .removable()
                .iter()
                .filter(|v| v.version != own)
                .map(|v| {
                    (
                        v.version.clone(),
                        v.file.clone(),
                        v.state == crate::upgrade::State::Confirmed,
                    )
                })
                .collect();
            for (version, file, confirmed) in gone {
                let p = dir.path_of(&file);
                if let Some(d) = p.parent() {
                    let _ = std::fs::remove_dir_all(d);
                }
                if confirmed {
                    st.versions.retain(|v| v.version != version);
                }
            }
        })
    }

    /// Moves a verified download into place and records it on trial. After this, the next
    /// start of the launcher runs it.
    pub fn install(&self, staged: &Path, m: &crate::release::Manifest) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let file = format!("versions/{}/camgw", m.version);
        let dest = self.dir.path_of(&file);
        let vdir = crate::durable::dir_of(&dest).to_path_buf();
        crate::durable::create_dir_all_durable(&vdir)?;
        std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o755))?;
        std::fs::File::open(staged)?.sync_all()?;
        std::fs::rename(staged, &dest)?;
        crate::durable::sync_dir(&vdir)?;
        let hex = crate::release::hex(&m.sha256);
        let from = self.own.clone();
        self.modify(|st| st.install(m.version.clone(), file, hex, from))?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    fn put(dir: &Dir, version: &str, body: &[u8], from: &str) {
        let file = format!("versions/{version}/camgw");
        let p = dir.path_of(&file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        let mut st = dir.load();
        let h: [u8; 32] = sha2::Sha256::digest(body).into();
        st.install(v(version), file, crate::release::hex(&h), v(from));
        dir.store(&st).unwrap();
    }

    #[test]
    fn no_install_directory_runs_the_started_binary() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            start(d.path(), &v("0.1.0"), None),
            Start::Run { trial: false }
        );
    }

    #[test]
    fn the_launcher_hands_over_counts_and_a_damaged_file_is_never_run() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::new(d.path());
        put(&dir, "0.2.0", b"new binary", "0.1.0");
        std::fs::create_dir_all(dir.incoming()).unwrap();
        std::fs::write(dir.incoming().join("0.3.0.part"), b"half").unwrap();
        match start(d.path(), &v("0.1.0"), None) {
            Start::Exec { path, version } => {
                assert_eq!(path, dir.path_of("versions/0.2.0/camgw"));
                assert_eq!(version, Some(v("0.2.0")));
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.incoming().exists(), "a stale download is removed");
        assert_eq!(dir.load().versions[0].starts, 1);
        let launcher = d.path().join("usr-bin-camgw");
        assert_eq!(
            start(d.path(), &v("0.2.0"), Some(&launcher)),
            Start::Run { trial: true }
        );
        // The file is damaged on disk: the launcher marks it failed and runs itself.
        std::fs::write(dir.path_of("versions/0.2.0/camgw"), b"new binarz").unwrap();
        assert_eq!(
            start(d.path(), &v("0.1.0"), None),
            Start::Run { trial: false }
        );
        let st = dir.load();
        assert_eq!(st.versions[0].state, crate::upgrade::State::Failed);
        assert!(st.versions[0]
            .last_failure
            .as_deref()
            .unwrap()
            .contains("sha256"));
    }

    #[test]
    fn a_damaged_state_file_is_set_aside_and_the_packaged_binary_runs() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::new(d.path());
        std::fs::create_dir_all(&dir.root).unwrap();
        std::fs::write(dir.state_path(), b"{\"versions\": [tor").unwrap();
        assert_eq!(
            start(d.path(), &v("0.1.0"), None),
            Start::Run { trial: false }
        );
        assert!(dir.root.join("state.json.bad").exists());
    }

    #[test]
    fn a_failed_version_hands_back_to_the_launcher() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::new(d.path());
        put(&dir, "0.2.0", b"x", "0.1.0");
        let mut st = dir.load();
        st.unusable(&v("0.2.0"), "test");
        dir.store(&st).unwrap();
        let launcher = d.path().join("launcher");
        assert_eq!(
            start(d.path(), &v("0.2.0"), Some(&launcher)),
            Start::Exec {
                path: launcher,
                version: None
            }
        );
    }

    #[test]
    fn tidy_removes_superseded_and_reported_failed_versions_only() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::new(d.path());
        put(&dir, "0.2.0", b"a", "0.1.0");
        put(&dir, "0.3.0", b"b", "0.2.0");
        put(&dir, "0.4.0", b"c", "0.3.0");
        let local = Local::new(
            d.path(),
            v("0.3.0"),
            false,
            "/usr/bin/camgw".into(),
            dir.path_of("versions/0.3.0/camgw"),
        );
        local
            .modify(|st| {
                st.confirm(&v("0.2.0"));
                st.confirm(&v("0.3.0"));
                st.unusable(&v("0.4.0"), "x");
            })
            .unwrap();
        local.tidy().unwrap();
        assert!(!dir.path_of("versions/0.2.0/camgw").exists());
        assert!(dir.path_of("versions/0.3.0/camgw").exists());
        assert!(
            dir.path_of("versions/0.4.0/camgw").exists(),
            "not reported yet"
        );
        for r in local.pending() {
            local.reported(&r).unwrap();
        }
        local.tidy().unwrap();
        assert!(!dir.path_of("versions/0.4.0/camgw").exists());
        let left: Vec<String> = dir
            .load()
            .versions
            .iter()
            .map(|v| v.version.to_string())
            .collect();
        assert_eq!(left, ["0.3.0", "0.4.0"]);
        assert!(local.over_the_air());
    }
}
