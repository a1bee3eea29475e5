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

/// Every event of `$all`, a page at a time, as (position, stream, event number, data): what a
/// copy of the store must hold the same of.
pub fn listing(store: &Store) -> Vec<(u64, String, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store.read_all_forward(from, 500).expect("read $all");
        let before = out.len();
        for e in page {
            let e = e.expect("event");
            out.push((
                e.position().0,
                e.stream().to_string(),
                e.event_number(),
                e.data().to_vec(),
            ));
            from = e.next_position();
        }
        if out.len() == before {
            return out;
        }
    }
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
        // Not the lock, nor a writer's handover socket.
        // A file the live store renamed or removed since the listing (a temporary index or
        // id table) is not part of the image.
        let Ok(kind) = e.file_type() else { continue };
        if e.file_name() != "LOCK" && kind.is_file() {
            match fs::copy(e.path(), to.join(e.file_name())) {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => panic!("copy {}: {err}", e.path().display()),
            }
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

// ---------------------------------------------------------------------------------------------
// Index files (layout 2), read and written here from FORMAT.md, independently of the crate.
// ---------------------------------------------------------------------------------------------

/// Bytes of an index file header.
pub const IDX_HEADER_LEN: usize = 64;
/// Bytes of one index file directory entry.
pub const IDX_ENTRY_LEN: usize = 40;

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// One run of an index file: a stream's events in the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxRun {
    pub stream: String,
    pub first_event: u64,
    /// Segment offset of each event's record.
    pub offsets: Vec<u32>,
}

/// What an index file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxFile {
    pub base: u64,
    pub covered_end: u64,
    pub runs: Vec<IdxRun>,
}

/// The name hash that orders an index directory, as FORMAT.md defines it.
pub fn idx_name_hash(name: &str) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64 ^ (name.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for chunk in name.as_bytes().chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h.max(1)
}

/// Bytes per checksummed block of an index file's directory and names.
pub const IDX_BLOCK_LEN: usize = 512;

/// Where the parts of an index file lie: (names start, offsets start, block checksums start).
fn idx_layout(bytes: &[u8]) -> (usize, usize, usize) {
    let count = le_u32(bytes, 12) as usize;
    let names_start = IDX_HEADER_LEN + count * IDX_ENTRY_LEN;
    let offsets_at = (names_start + le_u64(bytes, 32) as usize).next_multiple_of(4);
    (
        names_start,
        offsets_at,
        offsets_at + 4 * le_u64(bytes, 40) as usize,
    )
}

/// Recomputes the block checksums and the header checksums of an index file whose directory,
/// names or offsets were changed.
pub fn reseal_idx(bytes: &mut [u8]) {
    let (_, offsets_at, crcs_at) = idx_layout(bytes);
    let blocks = (offsets_at - IDX_HEADER_LEN).div_ceil(IDX_BLOCK_LEN);
    for b in 0..blocks {
        let from = IDX_HEADER_LEN + b * IDX_BLOCK_LEN;
        let to = (from + IDX_BLOCK_LEN).min(offsets_at);
        let crc = crc32(&bytes[from..to]);
        bytes[crcs_at + 4 * b..][..4].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32(&bytes[crcs_at..]);
    bytes[48..52].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Where the offsets array of each run sits in an index file: (byte offset, count), in directory
/// order. The file must be a valid one (see [`decode_idx`]).
pub fn idx_run_arrays(bytes: &[u8]) -> Vec<(usize, usize)> {
    let count = le_u32(bytes, 12) as usize;
    let (_, offsets_at, _) = idx_layout(bytes);
    (0..count)
        .map(|i| {
            let e = IDX_HEADER_LEN + i * IDX_ENTRY_LEN;
            let at = offsets_at + 4 * le_u32(bytes, e + 28) as usize;
            (at, le_u32(bytes, e + 16) as usize)
        })
        .collect()
}

/// Decodes an index file of layout 4, asserting every rule FORMAT.md gives for one: the
/// lengths, the zero fields, the order of the directory, names and arrays, and every checksum.
pub fn decode_idx(bytes: &[u8]) -> IdxFile {
    assert!(
        bytes.len() >= IDX_HEADER_LEN,
        "index file shorter than its header"
    );
    assert_eq!(&bytes[..8], b"EVJLIDX\0", "magic");
    assert_eq!(le_u32(bytes, 8), 4, "layout version");
    assert_eq!(crc32(&bytes[..60]), le_u32(bytes, 60), "header checksum");
    assert!(
        bytes[52..60].iter().all(|&b| b == 0),
        "reserved header bytes"
    );
    let count = le_u32(bytes, 12) as usize;
    let names_len = le_u64(bytes, 32) as usize;
    let offsets_count = le_u64(bytes, 40) as usize;
    let (names_start, offsets_at, crcs_at) = idx_layout(bytes);
    let names_end = names_start + names_len;
    let blocks = (offsets_at - IDX_HEADER_LEN).div_ceil(IDX_BLOCK_LEN);
    assert_eq!(crcs_at, offsets_at + 4 * offsets_count);
    assert_eq!(bytes.len(), crcs_at + 4 * blocks, "file length");
    assert!(
        bytes[names_end..offsets_at].iter().all(|&b| b == 0),
        "padding"
    );
    assert_eq!(
        crc32(&bytes[crcs_at..]),
        le_u32(bytes, 48),
        "block checksums' checksum"
    );
    for b in 0..blocks {
        let from = IDX_HEADER_LEN + b * IDX_BLOCK_LEN;
        let to = (from + IDX_BLOCK_LEN).min(offsets_at);
        assert_eq!(
            crc32(&bytes[from..to]),
            le_u32(bytes, crcs_at + 4 * b),
            "block {b} checksum"
        );
    }
    let (mut name_at, mut offset_index) = (0usize, 0usize);
    let mut runs = Vec::with_capacity(count);
    let mut prev = (0u64, String::new());
    for i in 0..count {
        let e = &bytes[IDX_HEADER_LEN + i * IDX_ENTRY_LEN..][..IDX_ENTRY_LEN];
        let n = le_u32(e, 16) as usize;
        let name_len = le_u16(e, 20) as usize;
        assert!(n > 0 && name_len > 0, "run {i}: empty");
        assert_eq!(le_u16(e, 22), 0, "run {i}: reserved");
        assert_eq!(le_u32(e, 36), 0, "run {i}: reserved");
        assert_eq!(le_u32(e, 24) as usize, name_at, "run {i}: name_at");
        assert_eq!(
            le_u32(e, 28) as usize,
            offset_index,
            "run {i}: offset_index"
        );
        let array = &bytes[offsets_at + 4 * offset_index..][..4 * n];
        assert_eq!(crc32(array), le_u32(e, 32), "run {i}: offsets checksum");
        let stream = String::from_utf8(
            bytes[names_start + name_at..names_start + name_at + name_len].to_vec(),
        )
        .unwrap();
        let key = (le_u64(e, 0), stream.clone());
        assert_eq!(key.0, idx_name_hash(&stream), "run {i}: name hash");
        assert!(i == 0 || key > prev, "run {i}: directory order");
        prev = key;
        runs.push(IdxRun {
            stream,
            first_event: le_u64(e, 8),
            offsets: array.chunks_exact(4).map(|c| le_u32(c, 0)).collect(),
        });
        name_at += name_len;
        offset_index += n;
    }
    assert_eq!(name_at, names_len, "names blob used up");
    assert_eq!(offset_index, offsets_count, "offsets used up");
    IdxFile {
        base: le_u64(bytes, 16),
        covered_end: le_u64(bytes, 24),
        runs,
    }
}

/// Encodes an index file of layout 4 (the runs in any order: they are sorted as the layout
/// orders them).
pub fn encode_idx(f: &IdxFile) -> Vec<u8> {
    let mut runs: Vec<&IdxRun> = f.runs.iter().collect();
    runs.sort_by_key(|r| (idx_name_hash(&r.stream), r.stream.clone()));
    let count = runs.len();
    let names_len: usize = runs.iter().map(|r| r.stream.len()).sum();
    let offsets_count: usize = runs.iter().map(|r| r.offsets.len()).sum();
    let names_start = IDX_HEADER_LEN + count * IDX_ENTRY_LEN;
    let offsets_at = (names_start + names_len).next_multiple_of(4);
    let blocks = (offsets_at - IDX_HEADER_LEN).div_ceil(IDX_BLOCK_LEN);
    let mut out = vec![0u8; offsets_at + 4 * offsets_count + 4 * blocks];
    out[..8].copy_from_slice(b"EVJLIDX\0");
    out[8..12].copy_from_slice(&4u32.to_le_bytes());
    out[12..16].copy_from_slice(&(count as u32).to_le_bytes());
    out[16..24].copy_from_slice(&f.base.to_le_bytes());
    out[24..32].copy_from_slice(&f.covered_end.to_le_bytes());
    out[32..40].copy_from_slice(&(names_len as u64).to_le_bytes());
    out[40..48].copy_from_slice(&(offsets_count as u64).to_le_bytes());
    let (mut name_at, mut offset_index) = (0usize, 0usize);
    for (i, r) in runs.iter().enumerate() {
        let array_at = offsets_at + 4 * offset_index;
        for (k, off) in r.offsets.iter().enumerate() {
            out[array_at + 4 * k..][..4].copy_from_slice(&off.to_le_bytes());
        }
        let crc = crc32(&out[array_at..array_at + 4 * r.offsets.len()]);
        let e = IDX_HEADER_LEN + i * IDX_ENTRY_LEN;
        out[e..e + 8].copy_from_slice(&idx_name_hash(&r.stream).to_le_bytes());
        out[e + 8..e + 16].copy_from_slice(&r.first_event.to_le_bytes());
        out[e + 16..e + 20].copy_from_slice(&(r.offsets.len() as u32).to_le_bytes());
        out[e + 20..e + 22].copy_from_slice(&(r.stream.len() as u16).to_le_bytes());
        out[e + 24..e + 28].copy_from_slice(&(name_at as u32).to_le_bytes());
        out[e + 28..e + 32].copy_from_slice(&(offset_index as u32).to_le_bytes());
        out[e + 32..e + 36].copy_from_slice(&crc.to_le_bytes());
        out[names_start + name_at..][..r.stream.len()].copy_from_slice(r.stream.as_bytes());
        name_at += r.stream.len();
        offset_index += r.offsets.len();
    }
    reseal_idx(&mut out);
    out
}

/// The directory indices of the runs that opening spot-checks in a file of `n` runs (the rest
/// are verified on first use): every `ceil(n / 16)`-th, and the last. Mirrors `sample_matches`
/// in `src/startup.rs`.
pub fn spot_checked_runs(n: usize) -> Vec<usize> {
    let step = n.div_ceil(16).max(1);
    let mut v: Vec<usize> = (0..n).step_by(step).collect();
    if n > 0 && !v.contains(&(n - 1)) {
        v.push(n - 1);
    }
    v
}

/// A small tmpfs mounted for one test, unmounted on drop.
pub struct TinyFs {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TinyFs {
    /// Mounts a tmpfs of `size` (e.g. "2m"); `None`, with the reason printed, where this process
    /// may not mount (not root, or no mount command).
    pub fn mount(size: &str) -> Option<TinyFs> {
        let dir = tempfile::tempdir().ok()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(TinyFs {
                path: dir.path().to_path_buf(),
                _dir: dir,
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    /// Makes the file system read-only (or writable again).
    pub fn set_read_only(&self, read_only: bool) {
        let mode = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let status = std::process::Command::new("mount")
            .args(["-o", mode])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "mount -o {mode} failed");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// `Store::open`, tried again while it fails with `Error::Locked` (up to 5 s): for a reopen after
/// `close` in a test binary whose other tests spawn processes, since a child forked while the
/// store was open holds its lock until the child calls `exec` (see README, Known limits).
pub fn open_after_close(dir: &Path, options: Options) -> Result<Store> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, options.clone()) {
            Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}
