//! lossfs, the power-loss filesystem the power-cut tests stand on: it loses what it should
//! (data not fsynced, names whose directory was not fsynced) and keeps what it should.
//! Each test mounts its own lossfs (needs root and /dev/fuse; skipped, saying so, otherwise).

#[path = "common/lossfs.rs"]
mod lossfs;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use lossfs::{Faults, LossFs};

fn mount() -> Option<(LossFs, tempfile::TempDir)> {
    if std::env::var_os("CAMGW_TEST_TIME_SCALE").is_some() {
        eprintln!("*** SKIPPED: lossfs runs natively, not under qemu ***");
        return None;
    }
    if let Some(why) = lossfs::unavailable() {
        if std::env::var_os("CAMGW_REQUIRE_LOSSFS").is_some() {
            panic!("lossfs required but unavailable: {why}");
        }
        eprintln!("*** SKIPPED: {why} ***");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fs = LossFs::mount(&tmp.path().join("mnt")).expect("mount lossfs");
    Some((fs, tmp))
}

fn sync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

fn write_synced(p: &Path, bytes: &[u8]) {
    let mut f = File::create(p).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn data_not_fsynced_is_lost_and_fsynced_data_is_kept() {
    let Some((mut fs, _t)) = mount() else { return };
    let p = fs.path().join("a");
    let mut f = File::create(&p).unwrap();
    f.write_all(&[1u8; 10_000]).unwrap();
    f.sync_data().unwrap();
    sync_dir(fs.path());
    f.write_all(&[2u8; 5_000]).unwrap();
    // Read back at once: the live view has everything.
    assert_eq!(fs::read(&p).unwrap().len(), 15_000);
    drop(f);
    let r = fs.cut(|| {}).unwrap();
    let back = fs::read(&p).unwrap();
    assert_eq!(back, vec![1u8; 10_000], "exactly the fsynced bytes");
    assert!(r.volatile_bytes >= 5_000, "{r:?}");
}

#[test]
fn an_overwrite_not_fsynced_leaves_the_old_bytes() {
    let Some((mut fs, _t)) = mount() else { return };
    let p = fs.path().join("a");
    write_synced(&p, b"old old old old");
    sync_dir(fs.path());
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(b"NEW", 4).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"old NEW old old");
    drop(f);
    fs.cut(|| {}).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"old old old old");
}

#[test]
fn a_name_is_lost_until_its_directory_is_fsynced_even_when_its_data_was() {
    let Some((mut fs, _t)) = mount() else { return };
    let kept = fs.path().join("kept");
    let lost = fs.path().join("lost");
    write_synced(&kept, b"k");
    sync_dir(fs.path());
    write_synced(&lost, b"data fsynced, name not");
    let r = fs.cut(|| {}).unwrap();
    assert!(kept.exists());
    assert!(!lost.exists(), "the name was never made durable");
    assert_eq!(r.orphans, 1, "{r:?}");
}

#[test]
fn a_name_made_durable_without_its_data_is_an_empty_file() {
    let Some((mut fs, _t)) = mount() else { return };
    let p = fs.path().join("a");
    File::create(&p)
        .unwrap()
        .write_all(b"never synced")
        .unwrap();
    sync_dir(fs.path());
    fs.cut(|| {}).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"");
}

#[test]
fn rename_and_unlink_are_undone_without_a_directory_fsync() {
    let Some((mut fs, _t)) = mount() else { return };
    let d = fs.path().to_path_buf();
    write_synced(&d.join("a"), b"A");
    write_synced(&d.join("b"), b"B");
    sync_dir(&d);
    fs::rename(d.join("a"), d.join("a2")).unwrap();
    fs::remove_file(d.join("b")).unwrap();
    assert!(!d.join("b").exists());
    fs.cut(|| {}).unwrap();
    assert_eq!(fs::read(d.join("a")).unwrap(), b"A", "the rename is undone");
    assert!(!d.join("a2").exists());
    assert_eq!(
        fs::read(d.join("b")).unwrap(),
        b"B",
        "the unlinked file is back"
    );
    // And with the fsync, they hold.
    fs::rename(d.join("a"), d.join("a2")).unwrap();
    fs::remove_file(d.join("b")).unwrap();
    sync_dir(&d);
    fs.cut(|| {}).unwrap();
    assert_eq!(fs::read(d.join("a2")).unwrap(), b"A");
    assert!(!d.join("a").exists() && !d.join("b").exists());
}

#[test]
fn the_atomic_replace_pattern_keeps_old_or_new() {
    let Some((mut fs, _t)) = mount() else { return };
    let d = fs.path().to_path_buf();
    write_synced(&d.join("seq"), b"1");
    sync_dir(&d);
    // temp, fsync, rename, but the directory not yet synced: the old value.
    write_synced(&d.join("seq.tmp"), b"2");
    fs::rename(d.join("seq.tmp"), d.join("seq")).unwrap();
    fs.cut(|| {}).unwrap();
    assert_eq!(fs::read(d.join("seq")).unwrap(), b"1");
    assert!(!d.join("seq.tmp").exists());
    write_synced(&d.join("seq.tmp"), b"2");
    fs::rename(d.join("seq.tmp"), d.join("seq")).unwrap();
    sync_dir(&d);
    fs.cut(|| {}).unwrap();
    assert_eq!(fs::read(d.join("seq")).unwrap(), b"2");
}

#[test]
fn a_new_directory_is_lost_with_everything_in_it_until_its_parent_is_fsynced() {
    let Some((mut fs, _t)) = mount() else { return };
    let dd = fs.path().join("var/lib/camgw");
    fs::create_dir_all(&dd).unwrap();
    write_synced(&dd.join("f"), b"x");
    sync_dir(&dd);
    fs.cut(|| {}).unwrap();
    assert!(
        !fs.path().join("var").exists(),
        "no durable name reached it"
    );
    fs::create_dir_all(&dd).unwrap();
    write_synced(&dd.join("f"), b"x");
    sync_dir(&dd);
    sync_dir(dd.parent().unwrap());
    sync_dir(&fs.path().join("var"));
    sync_dir(fs.path());
    fs.cut(|| {}).unwrap();
    assert_eq!(fs::read(dd.join("f")).unwrap(), b"x");
}

#[test]
fn a_truncate_is_volatile_until_fsync_and_reads_zeros_where_it_cut() {
    let Some((mut fs, _t)) = mount() else { return };
    let p = fs.path().join("a");
    write_synced(&p, &[7u8; 9000]);
    sync_dir(fs.path());
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(100).unwrap();
    f.write_all_at(b"end", 5000).unwrap();
    let live = fs::read(&p).unwrap();
    assert_eq!(live.len(), 5003);
    assert!(live[..100].iter().all(|b| *b == 7));
    assert!(
        live[100..5000].iter().all(|b| *b == 0),
        "the truncated bytes read as zeros"
    );
    drop(f);
    fs.cut(|| {}).unwrap();
    assert_eq!(
        fs::read(&p).unwrap(),
        vec![7u8; 9000],
        "the truncate was not synced"
    );
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(100).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs.cut(|| {}).unwrap();
    assert_eq!(fs::read(&p).unwrap(), vec![7u8; 100]);
}

#[test]
fn after_the_cut_instant_nothing_succeeds_or_becomes_durable() {
    let Some((mut fs, _t)) = mount() else { return };
    let p = fs.path().join("a");
    write_synced(&p, b"before");
    sync_dir(fs.path());
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    let q = p.clone();
    fs.cut(|| {
        // The process still runs between the cut and its kill: everything fails.
        let e = f
            .write_all(b" after")
            .and_then(|()| f.sync_all())
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        assert!(File::create(q.with_extension("new")).is_err());
    })
    .unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"before");
    assert!(!p.with_extension("new").exists());
}

#[test]
fn appends_in_many_small_writes_survive_exactly_to_the_last_fsync() {
    let Some((mut fs, _t)) = mount() else { return };
    let p = fs.path().join("log");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .unwrap();
    sync_dir(fs.path());
    let mut synced = Vec::new();
    let mut all = Vec::new();
    for i in 0..500u32 {
        let line = format!("record {i} {}\n", "x".repeat((i % 97) as usize));
        f.write_all(line.as_bytes()).unwrap();
        all.extend_from_slice(line.as_bytes());
        if i % 7 == 0 {
            f.sync_data().unwrap();
            synced = all.clone();
        }
    }
    assert_eq!(fs::read(&p).unwrap(), all);
    drop(f);
    fs.cut(|| {}).unwrap();
    assert_eq!(fs::read(&p).unwrap(), synced);
}

#[test]
fn sd_card_faults_eio_on_one_file_enospc_mid_write_and_a_torn_write() {
    let Some((mut fs, _t)) = mount() else { return };
    let d = fs.path().to_path_buf();
    write_synced(&d.join("00000001.seg"), b"segment one");
    write_synced(&d.join("00000002.seg"), b"segment two");
    sync_dir(&d);

    // EIO on reading one segment; the other reads.
    fs.faults(Faults {
        eio_reading: Some("00000001".into()),
        ..Faults::default()
    });
    let mut s = String::new();
    let e = File::open(d.join("00000001.seg"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    assert_eq!(fs::read(d.join("00000002.seg")).unwrap(), b"segment two");

    // ENOSPC in the middle of a write: what fits is written, then the error.
    fs.faults(Faults {
        capacity: Some(22 + 1000),
        ..Faults::default()
    });
    let mut f = File::create(d.join("big")).unwrap();
    let e = f.write_all(&[9u8; 3000]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert_eq!(fs::metadata(d.join("big")).unwrap().len(), 1000);
    drop(f);
    fs::remove_file(d.join("big")).unwrap();
    // An unlinked file's space is free again; a write past the end counts the hole.
    write_synced(&d.join("again"), &[1u8; 1000]);
    let f = File::create(d.join("holey")).unwrap();
    let e = f.write_at(&[2u8; 10], 500).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    drop(f);
    fs::remove_file(d.join("again")).unwrap();
    fs::remove_file(d.join("holey")).unwrap();

    // A torn write: the first bytes of the last unsynced write reach the medium, ending
    // inside a page.
    fs.faults(Faults {
        torn_write_at_cut: true,
        ..Faults::default()
    });
    let mut f = OpenOptions::new()
        .append(true)
        .open(d.join("00000002.seg"))
        .unwrap();
    f.write_all(&[b'T'; 10_000]).unwrap();
    drop(f);
    let r = fs.cut(|| {}).unwrap();
    let (name, n) = r.torn.clone().expect("a torn write");
    assert_eq!(name, "00000002.seg");
    assert!(n > 0 && n < 10_000 && (11 + n) % 4096 != 0, "{r:?}");
    let back = fs::read(d.join("00000002.seg")).unwrap();
    assert_eq!(back.len() as u64, 11 + n);
    assert_eq!(&back[..11], b"segment two");
    assert!(back[11..].iter().all(|b| *b == b'T'));
}
