//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use eventjournal::*;

/// `n` events of type `Deposited` whose data names their stream and index.
pub fn events(stream: &str, from: usize, n: usize) -> Vec<EventData> {
    (from..from + n)
        .map(|i| EventData::new("Deposited", format!("{stream}:{i}")))
        .collect()
}

/// Everything in `$all`, oldest first.
pub fn all(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all_forward(Position::START, usize::MAX)
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

/// Every event of `stream`, oldest first.
pub fn stream(store: &Store, name: &str) -> Vec<RecordedEvent> {
    store
        .read_stream_forward(name, 0, usize::MAX)
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

/// The data of every event of `stream`, as strings.
pub fn datas(store: &Store, name: &str) -> Vec<String> {
    stream(store, name)
        .iter()
        .map(|e| String::from_utf8(e.data().to_vec()).unwrap())
        .collect()
}

/// Copies the files of a store directory as they are now: what a process crash at this moment
/// would leave on disk (the page cache survives a process crash).
pub fn snapshot(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The single segment file of a store opened with a large segment size.
pub fn first_segment(dir: &Path) -> std::path::PathBuf {
    dir.join("00000000000000000000.seg")
}

/// Overwrites bytes of a file at `offset`.
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Reads `len` bytes of a file at `offset`.
pub fn peek(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// Flips the bits of one byte of a file selected by `mask`.
pub fn flip(path: &Path, offset: u64, mask: u8) {
    let mut b = peek(path, offset, 1);
    b[0] ^= mask;
    patch(path, offset, &b);
}

/// A store of one stream "a" with `n` one-event appends in 4 KiB segments, closed; returns the
/// options, and event `victim` as read before closing.
pub fn closed_single_stream(dir: &Path, n: usize, victim: u64) -> (Options, RecordedEvent) {
    let opts = Options::default().segment_size(4096);
    let s = Store::open(dir, opts.clone()).unwrap();
    for i in 0..n {
        s.append("a", ExpectedVersion::Any, events("a", i, 1))
            .unwrap();
    }
    let v = s.read_event("a", victim).unwrap();
    s.close().unwrap();
    (opts, v)
}

/// CRC-32 (IEEE), as the format uses: computed here independently of the crate.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
