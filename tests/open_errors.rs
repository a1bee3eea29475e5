//! Opening where a store cannot be: every I/O error names the file and what was being done, reads
//! as a sentence, and keeps the operating system's error as its source. Fresh volumes
//! (`lost+found` only) are accepted; any other file in a directory without a store is named.

mod common;

use std::error::Error as _;
use std::path::Path;

use common::*;
use eventjournal::*;

/// Checks the shape every I/O error must have, and returns its OS error code.
fn check_io_error(err: &Error, path_within: &Path) -> Option<i32> {
    let Error::Io { path, source, .. } = err else {
        panic!("expected Error::Io, got {err:?}");
    };
    assert!(
        path.starts_with(path_within),
        "{} is not under {}",
        path.display(),
        path_within.display()
    );
    let text = err.to_string();
    assert!(!text.contains("Os {"), "Display is not a sentence: {text}");
    assert!(
        text.contains(&path_within.display().to_string()),
        "{text} does not name {}",
        path_within.display()
    );
    let os = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the source is the io::Error");
    assert_eq!(os.raw_os_error(), source.raw_os_error());
    os.raw_os_error()
}

#[test]
fn a_path_under_a_regular_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = Store::open(file.join("store"), Options::default())
        .err()
        .unwrap();
    assert_eq!(check_io_error(&err, &file), Some(20)); // ENOTDIR
    let text = err.to_string();
    assert!(text.contains("not a directory"), "{text}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn an_empty_path_is_invalid_input() {
    let err = Store::open("", Options::default()).err().unwrap();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn a_regular_file_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file, Options::default()).err().unwrap();
    assert!(matches!(err, Error::NotAStore { .. }), "{err:?}");
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn a_new_store_on_a_read_only_mount_names_the_file_it_could_not_create() {
    let Some(fs) = TinyFs::mount("1m") else {
        return;
    };
    fs.set_read_only(true);
    let err = Store::open(fs.path(), Options::default()).err().unwrap();
    assert_eq!(check_io_error(&err, fs.path()), Some(30)); // EROFS
    let text = err.to_string();
    assert!(text.starts_with("creating "), "{text}");
    assert!(text.contains("read-only file system"), "{text}");
    // A new directory below the mount point cannot be made either.
    let err = Store::open(fs.path().join("sub"), Options::default())
        .err()
        .unwrap();
    check_io_error(&err, fs.path());
    assert!(err.to_string().starts_with("creating directory"), "{err}");
}

#[test]
fn an_existing_store_on_a_read_only_mount_names_the_file_and_loses_nothing() {
    let Some(fs) = TinyFs::mount("4m") else {
        return;
    };
    let opts = Options::default().segment_size(64 << 10);
    let s = Store::open(fs.path(), opts.clone()).unwrap();
    s.append("a-1", ExpectedVersion::NoStream, events("a-1", 0, 3))
        .unwrap();
    s.close().unwrap();
    // A closed handle keeps its maps until it is dropped; a mount with open files stays writable.
    drop(s);
    fs.set_read_only(true);
    let err = open_after_close(fs.path(), opts.clone()).err().unwrap();
    assert_eq!(check_io_error(&err, fs.path()), Some(30));
    assert!(err.to_string().contains("lock file LOCK in"), "{err}");
    fs.set_read_only(false);
    let s = open_after_close(fs.path(), opts).unwrap();
    assert_eq!(datas(&s, "a-1").len(), 3);
    s.close().unwrap();
}

#[test]
fn a_read_only_directory_names_the_file_when_permissions_apply() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root may write a directory whatever its mode: then the store simply opens.
    let probe = ro.join("probe");
    if std::fs::write(&probe, b"").is_ok() {
        std::fs::remove_file(&probe).unwrap();
        eprintln!("SKIPPED: permissions do not apply to this user (root)");
        return;
    }
    let err = Store::open(&ro, Options::default()).err().unwrap();
    assert_eq!(check_io_error(&err, &ro), Some(13)); // EACCES
    assert!(err.to_string().contains("permission denied"), "{err}");
}

/// A directory nobody may add files to, root included: an immutable directory (`chattr +i`, on
/// the file system the project builds on; skipped with a printed reason where that is refused).
#[test]
fn an_immutable_directory_names_the_file_it_could_not_create() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let set = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(&locked)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !set("+i") {
        eprintln!("SKIPPED: cannot make a directory immutable here (chattr +i refused)");
        return;
    }
    let err = Store::open(&locked, Options::default()).err();
    let listed = std::fs::read_dir(&locked).map(|d| d.count());
    assert!(set("-i"), "chattr -i");
    let err = err.expect("opening a store in an immutable directory fails");
    assert_eq!(check_io_error(&err, &locked), Some(1)); // EPERM
    let text = err.to_string();
    assert!(text.starts_with("creating "), "{text}");
    assert!(text.contains("operation not permitted"), "{text}");
    assert_eq!(listed.unwrap(), 0, "nothing was created");
}

#[test]
fn an_error_while_appending_names_the_segment() {
    let Some(fs) = TinyFs::mount("1m") else {
        return;
    };
    // Segment space is reserved when a segment is created: the second 512 KiB segment does not
    // fit in 1 MiB beside the first.
    let opts = Options::default().segment_size(512 << 10);
    let s = Store::open(fs.path(), opts).unwrap();
    let mut err = None;
    for i in 0..64 {
        let r = s.append(
            "big",
            ExpectedVersion::Any,
            [EventData::new("Chunk", vec![i as u8; 60 << 10])],
        );
        if let Err(e) = r {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the file system filled up");
    assert_eq!(check_io_error(&err, fs.path()), Some(28)); // ENOSPC
    let text = err.to_string();
    assert!(text.contains(".seg.tmp in "), "{text}");
    assert!(
        text.starts_with("reserving space for new segment "),
        "{text}"
    );
}

#[test]
fn a_fresh_volume_with_only_lost_and_found_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lost+found")).unwrap();
    let s = Store::open(dir.path(), Options::default()).unwrap();
    s.append("a-1", ExpectedVersion::NoStream, events("a-1", 0, 2))
        .unwrap();
    s.close().unwrap();
    let s = open_after_close(dir.path(), Options::default()).unwrap();
    assert_eq!(datas(&s, "a-1").len(), 2);
    assert!(dir.path().join("lost+found").is_dir());
}

#[test]
fn a_directory_with_another_file_names_it() {
    for name in [".hidden", "notes.txt"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lost+found")).unwrap();
        std::fs::write(dir.path().join(name), b"keep me").unwrap();
        let err = Store::open(dir.path(), Options::default()).err().unwrap();
        let Error::NotAStore { reason, .. } = &err else {
            panic!("expected NotAStore, got {err:?}");
        };
        assert!(reason.contains(name), "{reason}");
        assert!(err.to_string().contains(name), "{err}");
        assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"keep me");
        let listed: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(listed.len(), 2, "opening created nothing");
    }
}
