//! Shared by the fault-injection and power-loss tests: a deterministic workload of batches, the
//! check of a store against it, fault injectors, and a model of what a file system keeps across
//! a power loss.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use eventjournal::fault::{Fault, FaultInjector, FileOp};
use eventjournal::*;
use parking_lot::Mutex;

/// `EVJ_FAULT_SCALE` (default 1): how many times larger the fault and power-loss workloads are,
/// for long runs.
pub fn scale() -> usize {
    std::env::var("EVJ_FAULT_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Small segments, so that a short workload seals several of them (and saves their index files).
pub const SEGMENT_SIZE: u64 = 16 * 1024;

/// One append: to one stream, or to several atomically (`append_multi`).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Which writer (thread) issues it.
    pub writer: usize,
    /// Its place in that writer's sequence.
    pub seq: usize,
    /// (stream, number of events, payload size of each).
    pub writes: Vec<(String, usize, usize)>,
}

impl Batch {
    /// Every event of the batch, in write order: (stream, index within that stream's write).
    pub fn events(&self) -> Vec<(String, usize)> {
        self.writes
            .iter()
            .flat_map(|(s, n, _)| (0..*n).map(move |i| (s.clone(), i)))
            .collect()
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A seeded generator for tests that need randomness.
pub struct Random(Rng);

impl Random {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Random {
        Random(Rng(seed ^ 0x5eed))
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
}

/// `batches` batches for each of `writers` writers, over streams private to each writer. Payloads
/// range from a few bytes to a few kilobytes, so records cross pages and batches fill segments.
pub fn workload(seed: u64, writers: usize, batches: usize) -> Vec<Vec<Batch>> {
    let mut rng = Rng(seed);
    (0..writers)
        .map(|writer| {
            (0..batches)
                .map(|seq| {
                    let streams = if rng.below(5) == 0 { 2 } else { 1 };
                    let mut names: Vec<String> = Vec::new();
                    while names.len() < streams {
                        let name = format!("w{writer}-s{}", rng.below(3));
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                    let writes = names
                        .into_iter()
                        .map(|s| {
                            let n = 1 + rng.below(4) as usize;
                            let size = match rng.below(4) {
                                0 => 3000 + rng.below(2000) as usize,
                                _ => 10 + rng.below(300) as usize,
                            };
                            (s, n, size)
                        })
                        .collect();
                    Batch {
                        writer,
                        seq,
                        writes,
                    }
                })
                .collect()
        })
        .collect()
}

/// The payload of event `i` of `stream` in batch (`writer`, `seq`): it names itself, so a read
/// can tell which event it is and whether every byte is right.
pub fn payload(writer: usize, seq: usize, stream: &str, i: usize, size: usize) -> Vec<u8> {
    let mut v = format!("{writer}/{seq}/{stream}/{i}/").into_bytes();
    let fill = b'a' + ((writer * 7 + seq * 13 + i) % 26) as u8;
    v.resize(v.len().max(size), fill);
    v
}

fn event_id(writer: usize, seq: usize, stream: &str, i: usize) -> EventId {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&(writer as u32).to_le_bytes());
    id[4..8].copy_from_slice(&(seq as u32).to_le_bytes());
    id[8..12].copy_from_slice(&(i as u32).to_le_bytes());
    let h = stream
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    id[12..].copy_from_slice(&h.to_le_bytes());
    EventId(id)
}

/// Appends `batch` with `ExpectedVersion::Any`.
pub fn submit(store: &Store, batch: &Batch) -> Result<()> {
    let writes: Vec<StreamWrite> = batch
        .writes
        .iter()
        .map(|(s, n, size)| {
            let events = (0..*n)
                .map(|i| {
                    EventData::new("E", payload(batch.writer, batch.seq, s, i, *size))
                        .with_id(event_id(batch.writer, batch.seq, s, i))
                })
                .collect();
            StreamWrite::new(s.clone(), ExpectedVersion::Any, events)
        })
        .collect();
    if writes.len() == 1 {
        let w = writes.into_iter().next().unwrap();
        store.append(&w.stream, w.expected, w.events).map(|_| ())
    } else {
        store.append_multi(writes).map(|_| ())
    }
}

/// The batch an event belongs to and its place in it, parsed from its payload.
fn parse(data: &[u8]) -> Option<(usize, usize, String, usize)> {
    let text = std::str::from_utf8(data.get(..data.len().min(64))?).ok()?;
    let mut parts = text.splitn(5, '/');
    let writer = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let stream = parts.next()?.to_string();
    let i = parts.next()?.parse().ok()?;
    Some((writer, seq, stream, i))
}

/// Checks a store against the workload: every event reads back byte for byte; each batch is
/// visible whole or not at all (in `$all`, contiguous, and in every stream it wrote); each
/// writer's visible batches are a prefix of its sequence that includes every acknowledged batch;
/// each stream holds its batches' events, numbered from 0 without gaps. Returns how many batches
/// of each writer are visible.
pub fn check(
    store: &Store,
    batches: &[Vec<Batch>],
    acked: &[usize],
    ctx: &str,
) -> std::result::Result<Vec<usize>, String> {
    let all: Vec<RecordedEvent> = store
        .read_all_forward(Position::START, usize::MAX)
        .map_err(|e| format!("{ctx}: read $all: {e}"))?
        .collect::<Result<Vec<_>>>()
        .map_err(|e| format!("{ctx}: read $all: {e}"))?;
    let mut visible = vec![0usize; batches.len()];
    let mut at = 0;
    while at < all.len() {
        let e = &all[at];
        let (writer, seq, _, _) =
            parse(e.data()).ok_or_else(|| format!("{ctx}: unrecognised event at {at}"))?;
        let batch = batches
            .get(writer)
            .and_then(|b| b.get(seq))
            .ok_or_else(|| format!("{ctx}: event of unknown batch {writer}/{seq}"))?;
        if seq != visible[writer] {
            return Err(format!(
                "{ctx}: writer {writer}: batch {seq} visible after {} batches (a gap or a repeat)",
                visible[writer]
            ));
        }
        for (stream, i) in batch.events() {
            let size = batch.writes.iter().find(|w| w.0 == stream).unwrap().2;
            let Some(e) = all.get(at) else {
                return Err(format!(
                    "{ctx}: batch {writer}/{seq} cut short at the end of $all"
                ));
            };
            if e.stream() != stream
                || e.data() != payload(writer, seq, &stream, i, size).as_slice()
                || e.id() != event_id(writer, seq, &stream, i)
            {
                return Err(format!(
                    "{ctx}: batch {writer}/{seq}: event {stream}/{i} is not what was written \
                     (found stream {}, {} bytes)",
                    e.stream(),
                    e.data().len()
                ));
            }
            at += 1;
        }
        visible[writer] += 1;
    }
    for (writer, &n) in acked.iter().enumerate() {
        if visible[writer] < n {
            return Err(format!(
                "{ctx}: writer {writer}: {n} batches acknowledged, {} visible",
                visible[writer]
            ));
        }
    }
    let mut by_stream: BTreeMap<String, Vec<&RecordedEvent>> = BTreeMap::new();
    for e in &all {
        by_stream.entry(e.stream().to_string()).or_default().push(e);
    }
    let names: BTreeSet<String> = store.streams().unwrap().into_iter().collect();
    if names != by_stream.keys().cloned().collect::<BTreeSet<_>>() {
        return Err(format!("{ctx}: stream list {names:?} differs from $all"));
    }
    for (name, expected) in &by_stream {
        let got: Vec<RecordedEvent> = store
            .read_stream_forward(name, 0, usize::MAX)
            .map_err(|e| format!("{ctx}: read {name}: {e}"))?
            .collect::<Result<Vec<_>>>()
            .map_err(|e| format!("{ctx}: read {name}: {e}"))?;
        if got.len() != expected.len() {
            return Err(format!(
                "{ctx}: stream {name}: {} events, $all has {}",
                got.len(),
                expected.len()
            ));
        }
        for (k, (g, x)) in got.iter().zip(expected).enumerate() {
            if g.event_number() != k as u64 || g.position() != x.position() || g.data() != x.data()
            {
                return Err(format!("{ctx}: stream {name}: event {k} differs from $all"));
            }
        }
        if store.stream_version(name).unwrap() != Some(got.len() as u64 - 1) {
            return Err(format!("{ctx}: stream {name}: wrong version"));
        }
    }
    Ok(visible)
}

/// An error of the kind a full disk gives.
pub fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc_enospc())
}

fn libc_enospc() -> i32 {
    28
}

/// An I/O error.
pub fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

/// How an injected fault fails its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `EIO`, nothing done.
    Eio,
    /// `ENOSPC`, nothing done.
    NoSpace,
    /// Half of a write done, then `ENOSPC`.
    ShortWrite,
}

/// The kind of a file operation and the file it is on, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpInfo {
    /// `Write`, `Sync`, ...
    pub kind: &'static str,
    /// File name (the rename target's, for a rename).
    pub file: String,
}

impl OpInfo {
    fn of(op: &FileOp<'_>) -> OpInfo {
        let (kind, path): (&'static str, &Path) = match op {
            FileOp::Create { path } => ("Create", path),
            FileOp::Open { path } => ("Open", path),
            FileOp::Read { path, .. } => ("Read", path),
            FileOp::Write { path, .. } => ("Write", path),
            FileOp::MapWrite { path, .. } => ("MapWrite", path),
            FileOp::Allocate { path, .. } => ("Allocate", path),
            FileOp::SetLen { path, .. } => ("SetLen", path),
            FileOp::Punch { path, .. } => ("Punch", path),
            FileOp::Sync { path } => ("Sync", path),
            FileOp::SyncDir { path } => ("SyncDir", path),
            FileOp::Rename { to, .. } => ("Rename", to),
            FileOp::Remove { path } => ("Remove", path),
            FileOp::CreateDir { path } => ("CreateDir", path),
            _ => ("Other", Path::new("")),
        };
        OpInfo {
            kind,
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// Whether it writes (so that a short write differs from a plain failure).
    pub fn is_write(&self) -> bool {
        self.kind == "Write" || self.kind == "MapWrite"
    }

    /// Whether the operation is on a cache of the log (a stream index file, an event-id table or
    /// the manifest), whose failure may go unreported.
    pub fn is_cache_file(&self) -> bool {
        self.file.contains(".idx")
            || self.file.contains(".ids")
            || self.file.contains("eventjournal.manifest")
    }
}

/// Counts operations and fails the one numbered `fail_at` (counting from 0).
pub struct FailAt {
    count: AtomicUsize,
    fail_at: usize,
    kind: Kind,
    /// Every operation seen, in order.
    pub seen: Mutex<Vec<OpInfo>>,
    /// The operation that was failed, once it has been.
    pub fired: Mutex<Option<OpInfo>>,
}

impl FailAt {
    /// Fails operation `fail_at` with `kind` (`usize::MAX`: none, only count).
    pub fn new(fail_at: usize, kind: Kind) -> Arc<FailAt> {
        Arc::new(FailAt {
            count: AtomicUsize::new(0),
            fail_at,
            kind,
            seen: Mutex::new(Vec::new()),
            fired: Mutex::new(None),
        })
    }

    /// Operations seen so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl FaultInjector for FailAt {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        let info = OpInfo::of(op);
        self.seen.lock().push(info.clone());
        if n != self.fail_at {
            return None;
        }
        *self.fired.lock() = Some(info);
        Some(match self.kind {
            Kind::Eio => Fault::Error(eio()),
            Kind::NoSpace => Fault::Error(enospc()),
            Kind::ShortWrite => {
                let len = match op {
                    FileOp::Write { bytes, .. } | FileOp::MapWrite { bytes, .. } => bytes.len(),
                    _ => 0,
                };
                Fault::Short {
                    done: len / 2,
                    error: enospc(),
                }
            }
        })
    }
}

/// A change to a file, as recorded for the power-loss model.
#[derive(Debug, Clone)]
pub enum Change {
    /// Bytes written at an offset.
    Write(u64, Vec<u8>),
    /// Length set (cut or extended with zeros).
    SetLen(u64),
    /// Extended with zeros to at least this length.
    Allocate(u64),
    /// A range zeroed (a hole punched), the length kept.
    Zero(u64, u64),
}

/// A recorded operation: a change to the files, or a mark made by the test.
#[derive(Debug, Clone)]
pub enum Rec {
    /// A file created (or truncated).
    Create(String),
    /// A change to a file's bytes or length.
    Change(String, Change),
    /// The file's bytes made durable.
    Sync(String),
    /// The directory's entries made durable.
    SyncDir,
    /// A rename.
    Rename(String, String),
    /// A removal.
    Remove(String),
    /// The test's mark: this writer's batch `seq` was acknowledged.
    Acked(usize, usize),
}

/// Records every change to the store's files, in order, failing none.
#[derive(Default)]
pub struct Recorder {
    /// The journal.
    pub log: Mutex<Vec<Rec>>,
}

impl Recorder {
    /// Adds a mark of the test to the journal.
    pub fn mark(&self, rec: Rec) {
        self.log.lock().push(rec);
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl FaultInjector for Recorder {
    fn before(&self, op: &FileOp<'_>) -> Option<Fault> {
        let rec = match op {
            FileOp::Create { path } => Rec::Create(name_of(path)),
            FileOp::Write {
                path,
                offset,
                bytes,
            }
            | FileOp::MapWrite {
                path,
                offset,
                bytes,
            } => Rec::Change(name_of(path), Change::Write(*offset, bytes.to_vec())),
            FileOp::Allocate { path, len } => Rec::Change(name_of(path), Change::Allocate(*len)),
            FileOp::SetLen { path, len } => Rec::Change(name_of(path), Change::SetLen(*len)),
            FileOp::Punch { path, offset, len } => {
                Rec::Change(name_of(path), Change::Zero(*offset, *len))
            }
            FileOp::Sync { path } => Rec::Sync(name_of(path)),
            FileOp::SyncDir { .. } => Rec::SyncDir,
            FileOp::Rename { from, to } => Rec::Rename(name_of(from), name_of(to)),
            FileOp::Remove { path } => Rec::Remove(name_of(path)),
            _ => return None,
        };
        self.log.lock().push(rec);
        None
    }
}

/// One file in the model: what is durable, what the running process sees, and the changes made
/// since the last sync.
#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    unsynced: Vec<Change>,
}

fn apply(bytes: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write(off, data) => {
            let end = *off as usize + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[*off as usize..end].copy_from_slice(data);
        }
        Change::SetLen(len) => bytes.resize(*len as usize, 0),
        Change::Zero(off, len) => {
            let end = (off + len).min(bytes.len() as u64) as usize;
            if let Some(range) = bytes.get_mut((*off as usize).min(end)..end) {
                range.fill(0);
            }
        }
        Change::Allocate(len) => {
            if bytes.len() < *len as usize {
                bytes.resize(*len as usize, 0);
            }
        }
    }
}

/// What a power loss keeps of the bytes that were not synced.
#[derive(Debug, Clone, Copy)]
pub enum Loss {
    /// Nothing.
    Unsynced,
    /// A random prefix of each file's unsynced changes, the last one cut at a random byte.
    Prefix(u64),
    /// All of them, except that the last page the last write touched keeps its old bytes from a
    /// random 512-byte sector boundary on (inside the bytes the write covered).
    TornPage(u64),
    /// Each page the unsynced writes changed, kept or lost independently: write-back in any
    /// order. Only a store that syncs each group before writing the next can promise to open
    /// cleanly from this (see the README's known limits).
    Pages(u64),
}

/// A file system as a power loss sees it: file contents and directory entries, each with a
/// durable and a current version.
#[derive(Debug, Clone, Default)]
pub struct ModelFs {
    inodes: Vec<Inode>,
    current: BTreeMap<String, usize>,
    durable: BTreeMap<String, usize>,
}

impl ModelFs {
    /// Applies one recorded operation.
    pub fn apply(&mut self, rec: &Rec) {
        match rec {
            Rec::Create(name) => match self.current.get(name) {
                Some(&ino) => {
                    let change = Change::SetLen(0);
                    apply(&mut self.inodes[ino].current, &change);
                    self.inodes[ino].unsynced.push(change);
                }
                None => {
                    self.inodes.push(Inode::default());
                    self.current.insert(name.clone(), self.inodes.len() - 1);
                }
            },
            Rec::Change(name, change) => {
                let ino = self.current[name];
                apply(&mut self.inodes[ino].current, change);
                self.inodes[ino].unsynced.push(change.clone());
            }
            Rec::Sync(name) => {
                let inode = &mut self.inodes[self.current[name]];
                inode.durable = inode.current.clone();
                inode.unsynced.clear();
            }
            Rec::SyncDir => self.durable = self.current.clone(),
            Rec::Rename(from, to) => {
                let ino = self.current.remove(from).expect("rename of a missing file");
                self.current.insert(to.clone(), ino);
            }
            Rec::Remove(name) => {
                self.current.remove(name);
            }
            Rec::Acked(..) => {}
        }
    }

    /// Writes into `dir` the files a power loss now would leave, losing unsynced bytes as `loss`
    /// says.
    pub fn crash_image(&self, dir: &Path, loss: Loss) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, &ino) in &self.durable {
            let inode = &self.inodes[ino];
            let mut bytes = inode.durable.clone();
            match loss {
                Loss::Unsynced | Loss::Pages(_) => {}
                Loss::Prefix(seed) => {
                    let mut rng = Rng(seed ^ ino as u64);
                    let keep = rng.below(inode.unsynced.len() as u64 + 1) as usize;
                    for (k, change) in inode.unsynced.iter().take(keep).enumerate() {
                        match change {
                            Change::Write(off, data) if k + 1 == keep && !data.is_empty() => {
                                let cut = rng.below(data.len() as u64 + 1) as usize;
                                apply(&mut bytes, &Change::Write(*off, data[..cut].to_vec()));
                            }
                            c => apply(&mut bytes, c),
                        }
                    }
                }
                Loss::TornPage(seed) => {
                    let mut rng = Rng(seed ^ ino as u64);
                    let before_last = bytes.clone();
                    let mut old = before_last;
                    // The last write that changed something: tearing zeros written over
                    // zeros would test nothing.
                    let mut last_write = None;
                    let mut probe = bytes.clone();
                    for (k, change) in inode.unsynced.iter().enumerate() {
                        if let Change::Write(off, d) = change {
                            let at = *off as usize;
                            let before = probe.get(at..at + d.len());
                            if !d.is_empty() && before != Some(d.as_slice()) {
                                last_write = Some(k);
                            }
                        }
                        apply(&mut probe, change);
                    }
                    for (k, change) in inode.unsynced.iter().enumerate() {
                        if Some(k) == last_write {
                            old = bytes.clone();
                        }
                        apply(&mut bytes, change);
                    }
                    if let Some(Change::Write(off, data)) = last_write.map(|k| &inode.unsynced[k]) {
                        let end = *off as usize + data.len();
                        let page = (end - 1) / 4096 * 4096;
                        // A sector boundary inside the written part of the page: at least
                        // one sector of the write is lost.
                        let sectors = (end - page).div_ceil(512) as u64;
                        let from = (page + 512 * rng.below(sectors) as usize).max(*off as usize);
                        for at in from..end.min(bytes.len()) {
                            bytes[at] = old.get(at).copied().unwrap_or(0);
                        }
                    }
                }
            }
            if let Loss::Pages(seed) = loss {
                let mut rng = Rng(seed ^ ino as u64);
                let old = bytes.clone();
                for change in &inode.unsynced {
                    apply(&mut bytes, change);
                }
                for (k, page) in bytes.chunks_mut(4096).enumerate() {
                    let at = k * 4096;
                    if rng.below(2) == 0 {
                        for (i, b) in page.iter_mut().enumerate() {
                            *b = old.get(at + i).copied().unwrap_or(0);
                        }
                    }
                }
            }
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
