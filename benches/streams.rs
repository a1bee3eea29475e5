//! Flat with the number of streams ("millions of actors"): the same operations on a store of N
//! streams and on one of 1,000, side by side, so that any cost that grows with the number of
//! streams shows as a gap between the two.
//!
//! Both stores hold streams `account-{i}` of ONE event each (type `Opened`, 100-byte payload),
//! written with `Durability::None` in multi-stream batches of 10,000 `NoStream` writes, and a
//! stream `hot-0` of 1,000 events appended after half of the other streams (in the N store it
//! lands in a sealed segment once N is past a few hundred thousand, a 64 MiB segment holding
//! about 365,000 of these events; in the 1,000 store it is in the active segment). Each store is
//! built fresh in a temporary directory under `std::env::temp_dir()` and closed. Criterion groups
//! (pick one with `cargo bench --bench streams -- <regex>`, matched against `group/benchmark`):
//!
//! - `open/{N}`, `open/1000`: `Store::open` then `close` of the cleanly closed store.
//! - `cold_read/{N}`, `cold_read/1000`: `read_stream_forward(name, 0, 1)` of a stream not read
//!   since the store was opened, and the event consumed.
//! - `cold_append/{N}` against `append/1000`: one 100-byte event appended with
//!   `ExpectedVersion::Exact` to a stream untouched since open among N, and to a random stream
//!   among 1,000 (mostly warm); the goal is within 20% of each other. These run last, since
//!   they add to the stores; an append that fills the active segment pays for sealing it, as an
//!   application's would, so that cost is in the figures.
//! - `cold_append_sync/{N}` against `append_sync/1000`: the same with `Durability::Sync` (the
//!   default), where each append waits for its `fdatasync`.
//! - `replay/{N}`, `replay/1000`: `replay_stream` of `hot-0`'s 1,000 events (warm).
//! - `seal/one_event_streams` against `seal/1000_streams`: `Store::seal` of an active segment
//!   holding 300,000 events, each of its own stream, and of one holding as many events over 1,000
//!   streams (each store built fresh, untimed): what sealing costs per run of the index, which
//!   a store of millions of streams pays for about every event it appends to a stream not yet
//!   in the segment.
//! - `hash_floor/{N}`, `hash_floor/1000`: a lookup of a random name in a `HashMap<String, u64>`
//!   of N names, and of 1,000: the gap between the two is what reaching one random entry of a
//!   structure of N keys costs on this machine, the floor under any first use of a stream. That
//!   map reaches two places per lookup (its slot, then the name's own allocation); so
//!   `probe_floor/{N}`, `probe_floor/1000`: the same lookup in an open-addressing table of the
//!   names' 64-bit hashes (at most half full, linear probing), one place per lookup;
//!   `file_floor/{N}`, `file_floor/1000`: the same table in a mapped file, each slot pointing at
//!   its name in a second mapped file, which the lookup compares: two places per lookup, what a
//!   persistent index that checks the stored name pays.
//!
//! Each store is then opened once more and closed, after its key table (`keys.tbl`, made from
//! the index files by a thread after an open) is in use, untimed: as a store an application has
//! opened before.
//!
//! "Cold" means not yet looked up by this `Store` since it was opened: the files were just
//! written and are in the page cache, so this is the cost of the store's own index, not of the
//! disk. A cold benchmark walks a shuffled order of the streams, and closes and reopens the store
//! (untimed) when it would otherwise run out of untouched streams: after N/2 of them among N (so
//! that most of the store stays cold), after all 1,000 among 1,000.
//!
//! Before the groups, a table of the N store (and the 1,000 store) is printed: build time, size on
//! disk and files, then, in a fresh process, the time to open it and its resident memory
//! (`RssAnon`, `RssFile` from `/proc/self/status`, Linux only) before opening, right after, and
//! after reading one event of each of K = min(N/10, 1,000,000) distinct streams, with the anonymous
//! memory per touched stream: over all K, and over the last nine tenths of them (what one more
//! stream costs, without what the first reads add once, such as the cache of runs read lately).
//!
//! ```sh
//! cargo bench --bench streams                               # N = 1,000,000
//! EVJ_STREAMS=10000000 cargo bench --bench streams          # N = 10,000,000 (builds in 1-1.5 min)
//! EVJ_STREAMS=10000000 cargo bench --bench streams -- cold_ # only the cold groups
//! ```
//!
//! The stores and the memory table are built and printed whatever the filter: every group needs
//! both stores.

#[path = "common/rng.rs"]
mod rng;

#[path = "common/env.rs"]
mod env;
use env::env;

use rng::Rng;
use std::hint::black_box;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use eventjournal::{Durability, EventData, ExpectedVersion, Options, Store, StreamWrite};
use tempfile::TempDir;

const PAYLOAD: [u8; 100] = [0x5a; 100];
const EVENT_TYPE: &str = "Opened";
/// Streams of the reference store.
const SMALL: u64 = 1_000;
/// The stream that `replay` reads, and its events.
const HOT: &str = "hot-0";
const HOT_EVENTS: u64 = 1_000;
/// Streams per `append_multi` while building: large batches, so that building 10M streams is
/// bounded by the store's per-event work, not by one commit per stream.
const BUILD_BATCH: u64 = 10_000;
/// Most streams the memory table touches, whatever N.
const MAX_TOUCHED: u64 = 1_000_000;
/// Set in the child process that measures memory: the store's directory, and its streams.
const MEMORY_CHILD_ENV: &str = "EVJ_STREAMS_MEMORY_CHILD";
const MEMORY_STREAMS_ENV: &str = "EVJ_STREAMS_MEMORY_STREAMS";
/// Seed of the shuffled orders: the same streams in the same order on every run.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn options() -> Options {
    Options::default().durability(Durability::None)
}

fn open(dir: &Path) -> Store {
    open_with(dir, Durability::None)
}

fn open_with(dir: &Path, durability: Durability) -> Store {
    Store::open(dir, options().durability(durability)).expect("open store")
}

fn stream(i: u64) -> String {
    format!("account-{i}")
}

fn event() -> EventData {
    EventData::new(EVENT_TYPE, PAYLOAD)
}

/// The stream indices `0..n` in a shuffled order (Fisher–Yates), as `u32`s: 40 MB for 10M
/// streams, where `Vec<String>` of names would take ten times that and skew the memory table.
fn shuffled(n: u64) -> Vec<u32> {
    let n = u32::try_from(n).expect("EVJ_STREAMS fits in u32");
    let mut order: Vec<u32> = (0..n).collect();
    let mut rng = Rng(SEED);
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// Writes streams `from..to` of one event each, in multi-stream batches.
fn fill(store: &Store, from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let end = (i + BUILD_BATCH).min(to);
        let writes = (i..end)
            .map(|s| StreamWrite::new(stream(s), ExpectedVersion::NoStream, vec![event()]))
            .collect();
        store.append_multi(writes).expect("fill");
        i = end;
    }
}

/// A closed store of `streams` one-event streams and `hot-0`, in a fresh temporary directory;
/// returns it and the seconds building took.
fn build(streams: u64) -> (TempDir, f64) {
    let dir = tempfile::Builder::new()
        .prefix("evj-streams-")
        .tempdir()
        .expect("temporary directory");
    let started = Instant::now();
    let store = open(dir.path());
    // `hot-0` in the middle of the log, so that with enough streams after it its events are in
    // a sealed segment, read through that segment's index file, as an old actor's would be.
    fill(&store, 0, streams / 2);
    let mut expected = ExpectedVersion::NoStream;
    for _ in 0..HOT_EVENTS / 100 {
        expected = store
            .append(HOT, expected, (0..100).map(|_| event()))
            .expect("hot stream")
            .next_expected_version();
    }
    fill(&store, streams / 2, streams);
    // Part of building: with `Durability::None`, closing is when the log reaches the disk.
    store.close().expect("close");
    let built = started.elapsed().as_secs_f64();
    // An application's store has been opened before: its key table is made (untimed), so that
    // the groups below measure stores as they run.
    let store = open(dir.path());
    let waited = Instant::now();
    while store.index_info().index_files >= 3
        && store.index_info().key_table_files == 0
        && waited.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    store.close().expect("close");
    (dir, built)
}

/// Replays `hot-0` the way an actor rebuilds its state; returns the events handed over.
fn replay(store: &Store) -> u64 {
    store
        .replay_stream(HOT, 0, |e| {
            black_box(e.data());
            ControlFlow::Continue(())
        })
        .expect("replay")
}

/// Reads and consumes the first event of stream `name`.
fn read_one(store: &Store, name: &str) {
    let e = store
        .read_stream_forward(name, 0, 1)
        .expect("read")
        .next()
        .expect("an event")
        .expect("event");
    black_box(e.data());
}

/// An open store and a walk over its streams in a shuffled order that only hands out streams not
/// touched since the store was opened: after `limit` of them, the store is closed and opened
/// again, so that all are cold again. The walk goes on where it was (wrapping around), so that
/// successive openings touch different streams.
struct Cold<'a> {
    dir: &'a Path,
    durability: Durability,
    store: Option<Store>,
    order: &'a [u32],
    next: usize,
    /// Streams the walk may still hand out before reopening.
    left: u64,
    limit: u64,
}

impl<'a> Cold<'a> {
    fn new(dir: &'a Path, order: &'a [u32], limit: u64) -> Cold<'a> {
        Cold::with(dir, order, limit, Durability::None)
    }

    fn with(dir: &'a Path, order: &'a [u32], limit: u64, durability: Durability) -> Cold<'a> {
        Cold {
            dir,
            durability,
            store: Some(open_with(dir, durability)),
            order,
            next: 0,
            left: limit,
            limit,
        }
    }

    /// A stream not touched since the store was opened; reopens the store (call it outside the
    /// timed part) if there is none left.
    fn next(&mut self) -> u64 {
        if self.left == 0 {
            if let Some(s) = self.store.take() {
                s.close().expect("close");
            }
            self.store = Some(open_with(self.dir, self.durability));
            self.left = self.limit;
        }
        self.left -= 1;
        let i = self.order[self.next];
        self.next = (self.next + 1) % self.order.len();
        u64::from(i)
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    fn close(mut self) {
        if let Some(s) = self.store.take() {
            s.close().expect("close");
        }
    }
}

/// Cold benchmarks: each iteration uses up a cold stream, so few iterations: about 1.5 s worth,
/// a few hundred thousand at a few µs each, which N/2 covers from N = 1M on; with fewer streams
/// (or slower iterations), `Cold` reopens the store when they run out.
fn cold_settings(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
}

/// The two stores under test, each as label (the benchmark's name), directory and streams.
struct Stores<'a> {
    big: (String, &'a Path, u64),
    small: (String, &'a Path, u64),
}

impl Stores<'_> {
    fn both(&self) -> [(&str, &Path, u64); 2] {
        [
            (self.big.0.as_str(), self.big.1, self.big.2),
            (self.small.0.as_str(), self.small.1, self.small.2),
        ]
    }
}

fn open_group(c: &mut Criterion, stores: &Stores<'_>) {
    let mut group = c.benchmark_group("open");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (label, dir, _) in stores.both() {
        group.bench_function(label, |b| {
            // Closing is timed too: a store opened and closed cleanly is left as it was found,
            // so every iteration opens the same cleanly closed store.
            b.iter(|| open(dir).close().expect("close"));
        });
    }
    group.finish();
}

fn cold_read_group(c: &mut Criterion, stores: &Stores<'_>) {
    let mut group = c.benchmark_group("cold_read");
    cold_settings(&mut group);
    group.throughput(Throughput::Elements(1));
    for (label, dir, streams) in stores.both() {
        let order = shuffled(streams);
        // Among 1,000, all are touched after 1,000 reads: reopen then. Among N, after N/2.
        let limit = if streams <= SMALL {
            streams
        } else {
            streams / 2
        };
        let mut cold = Cold::new(dir, &order, limit);
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let name = stream(cold.next());
                    let store = cold.store();
                    let start = Instant::now();
                    read_one(store, &name);
                    total += start.elapsed();
                }
                total
            });
        });
        cold.close();
    }
    group.finish();
}

/// The append groups, `cold_append` and `append` with `Durability::None`, and (`durable`)
/// `cold_append_sync` and `append_sync` with `Durability::Sync`, the default, where the
/// `fdatasync` of each append is most of its time. The durable groups run after the others and
/// append to the same streams, so they start from versions the others left.
fn append_groups(c: &mut Criterion, stores: &Stores<'_>) {
    let (_, _, big) = stores.big.clone();
    let (_, _, small) = stores.small.clone();
    // Versions as the writer knows them (every stream starts with its event 0), so that the
    // timed part is the append alone, as for an actor that holds its own version.
    let mut versions = [vec![0u64; big as usize], vec![0u64; small as usize]];
    for (suffix, durability) in [("", Durability::None), ("_sync", Durability::Sync)] {
        append_pair(c, stores, suffix, durability, &mut versions);
    }
}

fn append_pair(
    c: &mut Criterion,
    stores: &Stores<'_>,
    suffix: &str,
    durability: Durability,
    versions: &mut [Vec<u64>; 2],
) {
    let (label, dir, streams) = stores.big.clone();
    let order = shuffled(streams);
    let mut group = c.benchmark_group(format!("cold_append{suffix}"));
    cold_settings(&mut group);
    group.throughput(Throughput::Elements(1));
    let mut cold = Cold::with(dir, &order, streams / 2, durability);
    let [big_versions, small_versions] = versions;
    group.bench_function(&label, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let s = cold.next();
                total += timed_append(cold.store(), s, &mut big_versions[s as usize]);
            }
            total
        });
    });
    cold.close();
    group.finish();

    let (label, dir, streams) = stores.small.clone();
    let mut group = c.benchmark_group(format!("append{suffix}"));
    cold_settings(&mut group);
    group.throughput(Throughput::Elements(1));
    let store = open_with(dir, durability);
    let mut rng = Rng(SEED);
    group.bench_function(&label, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let s = rng.below(streams);
                total += timed_append(&store, s, &mut small_versions[s as usize]);
            }
            total
        });
    });
    store.close().expect("close");
    group.finish();
}

/// The memory floor: a lookup of a random name in a `HashMap<String, u64>` of N names (the whole
/// index in memory, as simple as it gets), against one of 1,000 names. A first use of a stream
/// among N cannot cost less than the gap between the two: it is the price of reaching one random
/// entry of a structure that size on this machine (cache and TLB misses), whatever the design.
fn floor_group(c: &mut Criterion, stores: &Stores<'_>) {
    let mut group = c.benchmark_group("hash_floor");
    group.throughput(Throughput::Elements(1));
    for (label, _, streams) in stores.both() {
        let map: std::collections::HashMap<String, u64> =
            (0..streams).map(|i| (stream(i), i)).collect();
        lookups(&mut group, label, streams, |name| map.get(name).copied());
    }
    group.finish();
}

/// One floor benchmark: `get` of a random name among `streams`, the name made outside the timing.
fn lookups(
    group: &mut BenchmarkGroup<'_, WallTime>,
    label: &str,
    streams: u64,
    get: impl Fn(&str) -> Option<u64>,
) {
    let mut rng = Rng(SEED);
    group.bench_function(label, |b| {
        b.iter_batched(
            || stream(rng.below(streams)),
            |name| black_box(get(&name)),
            criterion::BatchSize::SmallInput,
        );
    });
}

/// The one-place floor: a table of names' 64-bit hashes and their values, side by side, in a
/// power-of-two array at most half full, probed linearly from the hash. A lookup hashes the
/// name and reads one slot (rarely the next): what any index reaching a stream's entry in one
/// memory access pays.
struct ProbeTable {
    slots: Vec<(u64, u64)>,
    mask: usize,
}

impl ProbeTable {
    fn hash(name: &str) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        // Never 0, which marks an empty slot.
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(name)
            | 1
    }

    fn new(streams: u64) -> ProbeTable {
        let len = (streams as usize * 2).next_power_of_two();
        let mut t = ProbeTable {
            slots: vec![(0, 0); len],
            mask: len - 1,
        };
        for i in 0..streams {
            let h = Self::hash(&stream(i));
            let mut at = h as usize & t.mask;
            while t.slots[at].0 != 0 {
                at = (at + 1) & t.mask;
            }
            t.slots[at] = (h, i);
        }
        t
    }

    fn get(&self, name: &str) -> Option<u64> {
        let h = Self::hash(name);
        let mut at = h as usize & self.mask;
        loop {
            match self.slots[at] {
                (0, _) => return None,
                (k, v) if k == h => return Some(v),
                _ => at = (at + 1) & self.mask,
            }
        }
    }
}

fn probe_floor_group(c: &mut Criterion, stores: &Stores<'_>) {
    let mut group = c.benchmark_group("probe_floor");
    group.throughput(Throughput::Elements(1));
    for (label, _, streams) in stores.both() {
        let table = ProbeTable::new(streams);
        lookups(&mut group, label, streams, |name| table.get(name));
    }
    group.finish();
}

/// The floor of a table kept in files, as a store's index must be: [`ProbeTable`]'s slots, each
/// a name's hash and where its name lies, in a file, and the names in another, both mapped from
/// the page cache (written, untimed, just before). A lookup reads the slot, then the name, which
/// it compares with the one asked for, since a hash alone never proves a stream's identity: two
/// dependent accesses to mapped pages at random, and what any persistent index that finds a
/// stream's entry in one access and checks its name pays on this machine.
struct FileTable {
    slots: memmap2::Mmap,
    names: memmap2::Mmap,
    mask: usize,
}

impl FileTable {
    fn new(dir: &Path, streams: u64) -> std::io::Result<FileTable> {
        use std::io::Write;
        let len = (streams as usize * 2).next_power_of_two();
        let mut slots = vec![(0u64, 0u64); len];
        let mut names = Vec::new();
        for i in 0..streams {
            let name = stream(i);
            let h = ProbeTable::hash(&name);
            let mut at = h as usize & (len - 1);
            while slots[at].0 != 0 {
                at = (at + 1) & (len - 1);
            }
            slots[at] = (h, (names.len() as u64) << 16 | name.len() as u64);
            names.extend_from_slice(name.as_bytes());
        }
        let bytes: Vec<u8> = slots
            .iter()
            .flat_map(|&(h, v)| h.to_le_bytes().into_iter().chain(v.to_le_bytes()))
            .collect();
        let map = |file: &str, bytes: &[u8]| -> std::io::Result<memmap2::Mmap> {
            let path = dir.join(file);
            std::fs::File::create(&path)?.write_all(bytes)?;
            // SAFETY: a file of this benchmark's own temporary directory, never written again.
            unsafe { memmap2::Mmap::map(&std::fs::File::open(&path)?) }
        };
        Ok(FileTable {
            slots: map("floor.slots", &bytes)?,
            names: map("floor.names", &names)?,
            mask: len - 1,
        })
    }

    fn get(&self, name: &str) -> Option<u64> {
        let h = ProbeTable::hash(name);
        let word = |i: usize| {
            let b = self.slots.get(8 * i..8 * i + 8).unwrap_or(&[0; 8]);
            u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
        };
        let mut at = h as usize & self.mask;
        loop {
            match word(2 * at) {
                0 => return None,
                k if k == h => {
                    let v = word(2 * at + 1);
                    let (from, len) = ((v >> 16) as usize, (v & 0xffff) as usize);
                    if self.names.get(from..from + len) == Some(name.as_bytes()) {
                        return Some(v);
                    }
                }
                _ => {}
            }
            at = (at + 1) & self.mask;
        }
    }
}

fn file_floor_group(c: &mut Criterion, stores: &Stores<'_>) {
    let mut group = c.benchmark_group("file_floor");
    group.throughput(Throughput::Elements(1));
    for (label, _, streams) in stores.both() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let table = FileTable::new(dir.path(), streams).expect("floor files");
        lookups(&mut group, label, streams, |name| table.get(name));
    }
    group.finish();
}

/// Appends one event to stream `s`, whose version is `v`, and returns the time the append took.
fn timed_append(store: &Store, s: u64, v: &mut u64) -> Duration {
    let (name, batch) = (stream(s), vec![event()]);
    let start = Instant::now();
    let r = store
        .append(&name, ExpectedVersion::Exact(*v), batch)
        .expect("append");
    let took = start.elapsed();
    black_box(r);
    *v += 1;
    took
}

fn replay_group(c: &mut Criterion, stores: &Stores<'_>) {
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(HOT_EVENTS));
    for (label, dir, _) in stores.both() {
        let store = open(dir);
        // Untimed: checks the stream and maps its pages; the benchmark is a warm replay.
        assert_eq!(replay(&store), HOT_EVENTS);
        group.bench_function(label, |b| b.iter(|| replay(&store)));
        store.close().expect("close");
    }
    group.finish();
}

// ----- memory ---------------------------------------------------------------------------------

/// `RssAnon` and `RssFile` of this process in bytes, from `/proc/self/status` (zeros where there
/// is no such file).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// Streams the memory table touches in a store of `streams`.
fn touched(streams: u64) -> u64 {
    (streams / 10).min(MAX_TOUCHED)
}

/// In the child: opens the store in `dir`, then reads one event of each of `touched(streams)`
/// streams; prints the open time in ns and `RssAnon RssFile` before opening, right after, and
/// after the reads.
fn memory_child(dir: &str, streams: u64) {
    // Allocated before the first figure, so that only the store's memory is in the differences.
    let order = shuffled(streams);
    let k = touched(streams) as usize;
    let before = rss();
    let start = Instant::now();
    let store = open(Path::new(dir));
    let open_ns = start.elapsed().as_nanos();
    let opened = rss();
    for &i in &order[..k / 10] {
        read_one(&store, &stream(u64::from(i)));
    }
    let tenth = rss();
    for &i in &order[k / 10..k] {
        read_one(&store, &stream(u64::from(i)));
    }
    let after = rss();
    println!(
        "{open_ns} {} {} {} {} {} {} {}",
        before.0, before.1, opened.0, opened.1, after.0, after.1, tenth.0
    );
    store.close().expect("close");
}

/// What the memory table shows of one store.
struct Figures {
    streams: u64,
    build_s: f64,
    disk_bytes: u64,
    /// Segments, index files, id tables, other files.
    files: [u64; 4],
    open_ns: u64,
    /// `RssAnon`, `RssFile`: before opening, right after opening, after touching.
    rss: [(u64, u64); 3],
    /// `RssAnon` after touching the first tenth of the streams.
    tenth_anon: u64,
}

/// Size on disk (files' lengths; segments are preallocated) and files of the store in `dir`.
fn disk(dir: &Path) -> (u64, [u64; 4]) {
    let mut bytes = 0;
    let mut files = [0; 4];
    for entry in std::fs::read_dir(dir).expect("store directory") {
        let entry = entry.expect("directory entry");
        bytes += entry.metadata().expect("metadata").len();
        let name = entry.file_name();
        let kind = match Path::new(&name).extension().and_then(|e| e.to_str()) {
            Some("seg") => 0,
            Some("idx") => 1,
            Some("ids") => 2,
            _ => 3,
        };
        files[kind] += 1;
    }
    (bytes, files)
}

/// Opens the closed store in `dir` in a fresh process, whose memory is not inflated by the build
/// (a freed allocation of the build would be reused by the store, and not show as growth).
fn measure(dir: &Path, streams: u64, build_s: f64) -> Figures {
    let (disk_bytes, files) = disk(dir);
    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .env(MEMORY_CHILD_ENV, dir)
        .env(MEMORY_STREAMS_ENV, streams.to_string())
        .output()
        .expect("memory child");
    assert!(out.status.success(), "memory child failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let n: Vec<u64> = text
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [open_ns, a0, f0, a1, f1, a2, f2, tenth_anon] = n[..] else {
        panic!("memory child printed {text:?}");
    };
    Figures {
        streams,
        build_s,
        disk_bytes,
        files,
        open_ns,
        rss: [(a0, f0), (a1, f1), (a2, f2)],
        tenth_anon,
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Prints the memory table, one column per store, as Markdown.
fn print_table(figures: &[Figures]) {
    let row = |name: &str, cell: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = figures.iter().map(|f| format!("{:>20}", cell(f))).collect();
        println!("| {name:<34} | {} |", cells.join(" | "));
    };
    row("streams (+ hot-0)", &|f| f.streams.to_string());
    let rule: Vec<String> = figures.iter().map(|_| format!("{:->20}", ":")).collect();
    println!("| {:-<34} | {} |", "", rule.join(" | "));
    row("build (append_multi, None) + close", &|f| {
        format!("{:.2} s", f.build_s)
    });
    row("on disk", &|f| mb(f.disk_bytes));
    row("segment / index / id files", &|f| {
        format!("{} / {} / {}", f.files[0], f.files[1], f.files[2])
    });
    row("open (fresh process)", &|f| {
        format!("{:.2} ms", f.open_ns as f64 / 1e6)
    });
    row("RssAnon before open", &|f| mb(f.rss[0].0));
    row("RssAnon after open", &|f| mb(f.rss[1].0));
    row("streams touched (K)", &|f| touched(f.streams).to_string());
    row("RssAnon after touching K", &|f| mb(f.rss[2].0));
    row("anon bytes per touched stream", &|f| {
        let grown = f.rss[2].0.saturating_sub(f.rss[1].0);
        format!("{:.1}", grown as f64 / touched(f.streams).max(1) as f64)
    });
    row("anon bytes per stream, K/10 to K", &|f| {
        let grown = f.rss[2].0.saturating_sub(f.tenth_anon);
        let k = touched(f.streams);
        format!("{:.1}", grown as f64 / (k - k / 10).max(1) as f64)
    });
    row("RssFile before open", &|f| mb(f.rss[0].1));
    row("RssFile after open", &|f| mb(f.rss[1].1));
    row("RssFile after touching K", &|f| mb(f.rss[2].1));
}

/// Events in the segment `seal` seals: one 64 MiB segment holds about 365,000 of them.
const SEAL_EVENTS: u64 = 300_000;

fn seal_group(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    group
        .sample_size(10)
        .sampling_mode(criterion::SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(SEAL_EVENTS));
    for (label, streams) in [("one_event_streams", SEAL_EVENTS), ("1000_streams", SMALL)] {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let dir = TempDir::new().expect("temp dir");
                    let store = open(dir.path());
                    let mut i = 0;
                    while i < SEAL_EVENTS {
                        // One event per stream per batch: `streams` streams, round robin.
                        let end = (i + streams.min(BUILD_BATCH)).min(SEAL_EVENTS);
                        let writes = (i..end)
                            .map(|k| {
                                StreamWrite::new(
                                    stream(k % streams),
                                    ExpectedVersion::Any,
                                    vec![event()],
                                )
                            })
                            .collect();
                        store.append_multi(writes).expect("fill");
                        i = end;
                    }
                    let t = Instant::now();
                    assert!(store.seal().expect("seal"), "the segment had records");
                    timed += t.elapsed();
                    store.close().expect("close");
                }
                timed
            });
        });
    }
    group.finish();
}

fn main() {
    if let Ok(dir) = std::env::var(MEMORY_CHILD_ENV) {
        memory_child(&dir, env(MEMORY_STREAMS_ENV, SMALL));
        return;
    }
    let n = env("EVJ_STREAMS", 1_000_000);
    // Below that, the two stores would be the same benchmark under the same name.
    assert!(n > SMALL, "EVJ_STREAMS must be above {SMALL}");
    let (big, big_s) = build(n);
    let (small, small_s) = build(SMALL);
    println!("streams: {n} and {SMALL} streams of one 100-byte event, plus {HOT} of {HOT_EVENTS}");
    print_table(&[
        measure(big.path(), n, big_s),
        measure(small.path(), SMALL, small_s),
    ]);

    let stores = Stores {
        big: (n.to_string(), big.path(), n),
        small: (SMALL.to_string(), small.path(), SMALL),
    };
    let mut c = Criterion::default().configure_from_args();
    // `open` first, on the stores as built; the appends last, since they add to the stores.
    open_group(&mut c, &stores);
    cold_read_group(&mut c, &stores);
    replay_group(&mut c, &stores);
    append_groups(&mut c, &stores);
    floor_group(&mut c, &stores);
    probe_floor_group(&mut c, &stores);
    file_floor_group(&mut c, &stores);
    seal_group(&mut c);
    c.final_summary();
}
