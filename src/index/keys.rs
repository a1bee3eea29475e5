//! The key table: one file, `keys.tbl`, that finds any key of the index files it covers in one
//! probe, with its number of events, so that the first use of a key since the store opened reads
//! one slot and one name instead of searching an index file per segment (see README, "Millions of
//! streams").
//!
//! The table is derived from index files and nothing else: for each key (stream, category key,
//! event type key) of the files it covers, its name and the end of its last run there (the number
//! of events it has in those segments). Its header lists each covered file by base and stamp, so
//! a table is used only while every file it was made from is still the one in place; any other
//! table is removed and made again. Each slot carries its own checksum, and the checksum of the
//! name it places, so that a lookup checks the few bytes it reads and nothing else: a slot or a
//! name that fails its check is an error for the lookup that reads it, which then searches the
//! index files instead.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header   64 bytes   magic "EVJLKEY\0" (8), layout u32, slot_bits u32, keys u64, names_len u64,
//!                     covered u32, zero u32, covered_crc u32 (the CRC-32 of the covered list),
//!                     zero (16), header_crc u32 (the CRC-32 of bytes 0..60)
//! covered  covered × 32 bytes: base u64, then the file's stamp: inode u64, length u64,
//!                     modification time in nanoseconds u64; in base order
//! slots    (2^slot_bits + 4096) × 32 bytes: name hash u64 (0: free), name place u64 (its
//!                     offset in the names shifted left 16 bits, or'ed with its length),
//!                     events u64, name_crc u32 (the CRC-32 of the name), slot_crc u32 (the
//!                     CRC-32 of the slot's number as a u64, slot_bits as a u32, then the
//!                     slot's bytes 0..28);
//!                     a free slot is zero but for its slot_crc. A key is at its home slot,
//!                     the top slot_bits bits of its hash, or the first free one after it
//! names    names_len bytes: the names, back to back, in slot order
//! ```

use std::path::{Path, PathBuf};

use crate::disk::{Disk, Stamp};
use crate::log::checksum::crc32;
use crate::log::format::{u32_at, u64_at};

use super::persist::{name_hash, Bytes, Damaged, IndexFile};

/// The table's file name, in the store's directory.
pub const KEYS_FILE: &str = "keys.tbl";
/// First eight bytes of the file.
pub const KEYS_MAGIC: [u8; 8] = *b"EVJLKEY\0";
/// Layout version this build writes and reads; a table of another layout is made again.
/// (Layout 1 checked 512-byte blocks of the body against an array of checksums at the end of
/// the file: a lookup then read and checked a whole block for each slot and name it read.)
pub const KEYS_LAYOUT: u32 = 2;
/// Bytes of the header.
pub const KEYS_HEADER_LEN: usize = 64;
/// Bytes of one covered file's entry.
pub const COVERED_LEN: usize = 32;
/// Bytes of one slot: one half of a 64-byte cache line, so that a slot is read in one.
pub const SLOT_LEN: usize = 32;
/// Where a slot's name checksum sits, and the bytes its own checksum covers (all but itself).
const NAME_CRC_AT: usize = 24;
const SLOT_CRC_AT: usize = 28;
/// Where the header's own checksum sits.
const HEADER_CRC_AT: usize = KEYS_HEADER_LEN - 4;
/// Longest name a slot can place (16 bits of length).
const MAX_NAME: usize = u16::MAX as usize;
/// Most slot bits a table may claim: 2^40 slots is far past any store.
const MAX_SLOT_BITS: u32 = 40;

/// A covered file: its base and stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Covered {
    /// Base of the segment.
    pub base: u64,
    /// The index file's stamp when the table was made.
    pub stamp: Stamp,
}

/// Slots past the last home slot, for the keys placed after it (see [`write`](fn@write)): far more than a
/// table at most three quarters full needs.
const SPILL: usize = 4096;
/// Bytes gathered before each write of the slots or the names.
const CHUNK: usize = 1 << 20;

/// Where a table is written: a file, or (for tests) memory.
pub enum Sink<'a> {
    /// A file being written, with its path and the disk its operations go through.
    File(&'a std::fs::File, &'a Path, &'a Disk),
    /// Bytes in memory.
    #[cfg(test)]
    Memory(Vec<u8>),
}

impl Sink<'_> {
    fn write_at(&mut self, at: usize, bytes: &[u8]) -> crate::error::Result<()> {
        match self {
            Sink::File(f, path, disk) => disk.write_all_at(f, path, bytes, at as u64),
            #[cfg(test)]
            Sink::Memory(v) => {
                if v.len() < at + bytes.len() {
                    v.resize(at + bytes.len(), 0);
                }
                v[at..at + bytes.len()].copy_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// A sequence of bytes written to consecutive places of a sink, in chunks.
struct Stream {
    at: usize,
    buf: Vec<u8>,
}

impl Stream {
    fn push(&mut self, sink: &mut Sink<'_>, bytes: &[u8]) -> crate::error::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush(sink)?;
        }
        Ok(())
    }

    fn flush(&mut self, sink: &mut Sink<'_>) -> crate::error::Result<()> {
        sink.write_at(self.at, &self.buf)?;
        self.at += self.buf.len();
        self.buf.clear();
        Ok(())
    }
}

/// Writes to `sink` the table of `files` (base, file and the file's stamp, in base order): every
/// key of every file, with the end of its run in the newest file that has one. `Ok(false)`, with
/// nothing worth keeping written, if a file is damaged, holds a name too long to place, or
/// `stop` says so between two keys' files; the caller then makes no table.
///
/// The directories, each in hash order, are merged, so that the keys come in hash order: each
/// goes to its home slot (the top bits of its hash) or, taken, to the first free one after it,
/// and the slots and the names are written front to back. Memory stays that of the merge and two
/// chunks, whatever the number of keys.
pub fn write(
    sink: &mut Sink<'_>,
    files: &[(u64, &IndexFile, Stamp)],
    stop: &dyn Fn() -> bool,
) -> crate::error::Result<bool> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    if files.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Ok(false);
    }
    let total: usize = files.iter().map(|(_, f, _)| f.run_count()).sum();
    // At most three quarters full.
    let slot_bits = (total.max(1) * 4)
        .div_ceil(3)
        .next_power_of_two()
        .trailing_zeros()
        .max(1);
    let homes = 1usize << slot_bits;
    let slots = homes + SPILL;
    let covered_len = files.len() * COVERED_LEN;
    let slots_at = KEYS_HEADER_LEN + covered_len;
    let names_at = slots_at + slots * SLOT_LEN;
    let mut covered = Vec::with_capacity(covered_len);
    for &(base, _, st) in files {
        for v in [base, st.ino, st.len, st.mtime_ns] {
            covered.extend_from_slice(&v.to_le_bytes());
        }
    }
    sink.write_at(KEYS_HEADER_LEN, &covered)?;
    // The next directory entry of each file, least first.
    let mut heap = BinaryHeap::new();
    // A file's entry in the merge: its name's hash and name, the file, the entry.
    type Head<'n> = Reverse<(u64, &'n str, usize, usize)>;
    // A damaged directory: the file is removed, so that the next open rebuilds it from the log
    // rather than try (and fail) to make a table from it again.
    let entry = |file: &IndexFile, i: usize| file.entry(i).inspect_err(|_| file.remove()).ok();
    let head = |f: usize, i: usize| -> Option<Option<Head<'_>>> {
        let file = files[f].1;
        if i >= file.run_count() {
            return Some(None);
        }
        let e = entry(file, i)?;
        let name = file.name(&e);
        Some(Some(Reverse((name_hash(name), name, f, i))))
    };
    for f in 0..files.len() {
        if stop() {
            return Ok(false);
        }
        let Some(h) = head(f, 0) else {
            return Ok(false);
        };
        heap.extend(h);
    }
    let mut slots_out = Stream {
        at: slots_at,
        buf: Vec::with_capacity(CHUNK + SLOT_LEN),
    };
    let mut names_out = Stream {
        at: names_at,
        buf: Vec::with_capacity(CHUNK + MAX_NAME),
    };
    let (mut next_free, mut names_len, mut keys, mut popped) = (0usize, 0usize, 0u64, 0usize);
    while let Some(Reverse((hash, name, f, i))) = heap.pop() {
        // The key's entries in every file, adjacent in the merge: the end of the newest run.
        let mut end = 0u64;
        let mut take = |f: usize, i: usize, heap: &mut BinaryHeap<_>| -> Option<()> {
            let file = files[f].1;
            let e = entry(file, i)?;
            end = end.max(e.first_event + u64::from(e.count));
            heap.extend(head(f, i + 1)?);
            Some(())
        };
        if take(f, i, &mut heap).is_none() {
            return Ok(false);
        }
        while let Some(Reverse((h2, n2, f2, i2))) = heap.peek().copied() {
            if (h2, n2) != (hash, name) {
                break;
            }
            heap.pop();
            if take(f2, i2, &mut heap).is_none() {
                return Ok(false);
            }
        }
        popped += 1;
        if popped % 4096 == 0 && stop() {
            return Ok(false);
        }
        if name.len() > MAX_NAME {
            return Ok(false);
        }
        let home = (hash >> (64 - slot_bits)) as usize;
        let slot = home.max(next_free);
        if slot >= slots {
            return Ok(false);
        }
        for free in next_free..slot {
            slots_out.push(sink, &slot_bytes(free, slot_bits, [0; 3], 0))?;
        }
        let place = (names_len as u64) << 16 | name.len() as u64;
        let name_crc = crc32(name.as_bytes());
        slots_out.push(
            sink,
            &slot_bytes(slot, slot_bits, [hash, place, end], name_crc),
        )?;
        names_out.push(sink, name.as_bytes())?;
        names_len += name.len();
        next_free = slot + 1;
        keys += 1;
    }
    for free in next_free..slots {
        slots_out.push(sink, &slot_bytes(free, slot_bits, [0; 3], 0))?;
    }
    slots_out.flush(sink)?;
    names_out.flush(sink)?;
    let mut h = [0u8; KEYS_HEADER_LEN];
    h[..8].copy_from_slice(&KEYS_MAGIC);
    h[8..12].copy_from_slice(&KEYS_LAYOUT.to_le_bytes());
    h[12..16].copy_from_slice(&slot_bits.to_le_bytes());
    h[16..24].copy_from_slice(&keys.to_le_bytes());
    h[24..32].copy_from_slice(&(names_len as u64).to_le_bytes());
    h[32..36].copy_from_slice(&(files.len() as u32).to_le_bytes());
    h[40..44].copy_from_slice(&crc32(&covered).to_le_bytes());
    let header_crc = crc32(&h[..HEADER_CRC_AT]);
    h[HEADER_CRC_AT..].copy_from_slice(&header_crc.to_le_bytes());
    sink.write_at(0, &h)?;
    Ok(true)
}

/// Slot `number`'s bytes in a table of `2^bits` home slots: `words` (hash, place, events; all
/// zero for a free slot), the name's checksum, and the slot's own.
fn slot_bytes(number: usize, bits: u32, words: [u64; 3], name_crc: u32) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    for (k, w) in words.iter().enumerate() {
        b[8 * k..8 * k + 8].copy_from_slice(&w.to_le_bytes());
    }
    b[NAME_CRC_AT..SLOT_CRC_AT].copy_from_slice(&name_crc.to_le_bytes());
    let crc = slot_crc(number, bits, &b);
    b[SLOT_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The checksum of slot `number` whose bytes are `slot`, in a table of `2^bits` home slots: of
/// the number and of `bits`, so that a slot read at the wrong place, or through a header that
/// claims another size (which moves every key's home), fails; and of the bytes before it.
fn slot_crc(number: usize, bits: u32, slot: &[u8]) -> u32 {
    let mut b = [0u8; 12 + SLOT_CRC_AT];
    b[..8].copy_from_slice(&(number as u64).to_le_bytes());
    b[8..12].copy_from_slice(&bits.to_le_bytes());
    b[12..].copy_from_slice(&slot[..SLOT_CRC_AT]);
    crc32(&b)
}

/// An opened key table.
pub struct KeyTable {
    /// The file, for errors.
    pub path: PathBuf,
    /// Where removing it (when damage is found) goes through.
    disk: Disk,
    bytes: Bytes,
    covered: Vec<Covered>,
    slots_at: usize,
    slot_bits: u32,
    slots: usize,
    names_at: usize,
    names_len: usize,
}

impl KeyTable {
    /// Reads a table's header and covered list, checked; `None` if they are not what this
    /// layout's writer makes.
    fn parse(path: PathBuf, bytes: Bytes) -> Option<KeyTable> {
        let b: &[u8] = &bytes;
        let h = b.get(..KEYS_HEADER_LEN)?;
        if h[..8] != KEYS_MAGIC
            || u32_at(h, 8) != KEYS_LAYOUT
            || crc32(&h[..HEADER_CRC_AT]) != u32_at(h, HEADER_CRC_AT)
            || u32_at(h, 36) != 0
            || h[44..HEADER_CRC_AT].iter().any(|&x| x != 0)
        {
            return None;
        }
        let slot_bits = u32_at(h, 12);
        if slot_bits == 0 || slot_bits > MAX_SLOT_BITS {
            return None;
        }
        let names_len = usize::try_from(u64_at(h, 24)).ok()?;
        let covered = u32_at(h, 32) as usize;
        let covered_len = covered.checked_mul(COVERED_LEN)?;
        let slots_len = (1usize << slot_bits)
            .checked_add(SPILL)?
            .checked_mul(SLOT_LEN)?;
        let total = KEYS_HEADER_LEN
            .checked_add(covered_len)?
            .checked_add(slots_len)?
            .checked_add(names_len)?;
        if b.len() != total
            || crc32(&b[KEYS_HEADER_LEN..KEYS_HEADER_LEN + covered_len]) != u32_at(h, 40)
        {
            return None;
        }
        let mut table = KeyTable {
            path,
            disk: Disk::default(),
            covered: Vec::with_capacity(covered),
            slots_at: KEYS_HEADER_LEN + covered_len,
            slot_bits,
            slots: (1usize << slot_bits) + SPILL,
            names_at: KEYS_HEADER_LEN + covered_len + slots_len,
            names_len,
            bytes,
        };
        for i in 0..covered {
            let at = KEYS_HEADER_LEN + i * COVERED_LEN;
            let word = |k: usize| u64_at(&table.bytes, at + 8 * k);
            table.covered.push(Covered {
                base: word(0),
                stamp: Stamp {
                    ino: word(1),
                    len: word(2),
                    mtime_ns: word(3),
                },
            });
        }
        if table.covered.windows(2).any(|w| w[0].base >= w[1].base) {
            return None;
        }
        Some(table)
    }

    /// Removes the file, found damaged, so that the next open makes the table again; best
    /// effort. (A table written since under the same name is removed too: it is made again.)
    pub fn remove(&self) {
        let _ = self.disk.remove(&self.path);
    }

    /// The files the table was made from.
    pub fn covered(&self) -> &[Covered] {
        &self.covered
    }

    /// The number of events `name` has in the covered segments: 0 for a key the table
    /// does not hold. An error if a slot or name the lookup reads fails its checksum, or a slot
    /// is one no writer makes.
    pub fn events(&self, name: &str) -> Result<u64, Damaged> {
        let hash = name_hash(name);
        // The slots hold the keys in hash order, each at its home slot or the first free one
        // after it: a key is before the first free slot, or the first greater hash, from its home.
        for i in (hash >> (64 - self.slot_bits)) as usize..self.slots {
            let at = self.slots_at + i * SLOT_LEN;
            let slot = &self.bytes[at..at + SLOT_LEN];
            if slot_crc(i, self.slot_bits, slot) != u32_at(slot, SLOT_CRC_AT) {
                return Err(Damaged { at });
            }
            let slot_hash = u64_at(slot, 0);
            if slot_hash == 0 {
                if slot[..SLOT_CRC_AT].iter().any(|&b| b != 0) {
                    return Err(Damaged { at });
                }
                return Ok(0);
            }
            if slot_hash > hash {
                return Ok(0);
            }
            if slot_hash == hash {
                let place = u64_at(slot, 8);
                let (name_at, len) = ((place >> 16) as usize, (place & 0xffff) as usize);
                let end = name_at.checked_add(len).filter(|&e| e <= self.names_len);
                let Some(end) = end.filter(|_| len > 0) else {
                    return Err(Damaged { at });
                };
                let stored = &self.bytes[self.names_at + name_at..self.names_at + end];
                if crc32(stored) != u32_at(slot, NAME_CRC_AT) {
                    return Err(Damaged {
                        at: self.names_at + name_at,
                    });
                }
                if stored == name.as_bytes() {
                    return Ok(u64_at(slot, 16));
                }
            }
        }
        Ok(0)
    }
}

/// Opens the key table of `dir`, if there is one of this layout; `None` otherwise.
pub fn open(dir: &Path, disk: &Disk) -> Option<KeyTable> {
    let path = dir.join(KEYS_FILE);
    let file = disk.open(&path, false).ok()?;
    // SAFETY: the table is never written in place once renamed into place (a new table is a new
    // file renamed over it), so the mapped bytes do not change under the map.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let mut table = KeyTable::parse(path, Bytes::Mapped(map))?;
    table.disk = disk.clone();
    Some(table)
}

/// Makes the key table of `dir` from `files` (see [`write`](fn@write)): written to a temporary file,
/// synced first with `sync`, and renamed into place. `Ok(false)` if no table was made.
pub fn save(
    dir: &Path,
    files: &[(u64, &IndexFile, Stamp)],
    stop: &dyn Fn() -> bool,
    sync: bool,
    disk: &Disk,
) -> crate::error::Result<bool> {
    let path = dir.join(KEYS_FILE);
    let tmp = dir.join(format!("{KEYS_FILE}.tmp"));
    let f = disk.create(&tmp)?;
    let written = write(&mut Sink::File(&f, &tmp, disk), files, stop).and_then(|made| {
        if made && sync {
            disk.sync_data(&f, &tmp)?;
        }
        Ok(made)
    });
    drop(f);
    match written {
        Ok(true) => disk.rename(&tmp, &path).map(|()| true),
        other => {
            // Best effort: a leftover temporary file is made again over, or removed at open.
            let _ = disk.remove(&tmp);
            other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::persist::{self, RunToSave};
    use super::*;
    use std::borrow::Cow;

    fn encode(files: &[(u64, &IndexFile, Stamp)], stop: &dyn Fn() -> bool) -> Option<Vec<u8>> {
        let mut sink = Sink::Memory(Vec::new());
        match write(&mut sink, files, stop) {
            Ok(true) => match sink {
                Sink::Memory(v) => Some(v),
                Sink::File(..) => None,
            },
            _ => None,
        }
    }

    fn table(bytes: Vec<u8>) -> Option<KeyTable> {
        KeyTable::parse(PathBuf::from("keys.tbl"), Bytes::Owned(bytes))
    }

    /// The index file of segment `base` with a run of `n` events from `first` for each name.
    fn index_file(base: u64, runs: &[(&str, u64, u32)]) -> IndexFile {
        let runs: Vec<RunToSave<'_>> = runs
            .iter()
            .map(|&(name, first, n)| {
                let offsets: Vec<u32> = (0..n).map(|k| 64 + 256 * k).collect();
                RunToSave::new(Cow::Borrowed(name), first, Cow::<[u32]>::Owned(offsets))
            })
            .collect();
        let bytes = persist::encode(base, 1 << 20, &runs);
        persist::parse(PathBuf::from("x.idx"), bytes, base, 1 << 21).expect("index file")
    }

    /// Names `s-0` to `s-{n-1}`, and the table of one index file holding a run of one event
    /// from `first` for each.
    fn one_file_table(n: usize, first: u64) -> (Vec<String>, Vec<u8>) {
        let names: Vec<String> = (0..n).map(|i| format!("s-{i}")).collect();
        let runs: Vec<(&str, u64, u32)> = names.iter().map(|n| (n.as_str(), first, 1)).collect();
        let f = index_file(0, &runs);
        let bytes = encode(&[(0, &f, stamp(1))], &|| false).expect("encoded");
        (names, bytes)
    }

    fn stamp(ino: u64) -> Stamp {
        Stamp {
            ino,
            len: 100 + ino,
            mtime_ns: 7 * ino,
        }
    }

    #[test]
    fn every_key_is_found_with_the_end_of_its_newest_run() {
        let a = index_file(
            0,
            &[
                ("account-1", 0, 3),
                ("account-2", 0, 1),
                ("$ce-account", 0, 4),
            ],
        );
        let b = index_file(1 << 21, &[("account-1", 3, 2), ("$ce-account", 4, 2)]);
        let bytes =
            encode(&[(0, &a, stamp(1)), (1 << 21, &b, stamp(2))], &|| false).expect("encoded");
        let t = table(bytes).expect("parsed");
        assert_eq!(t.events("account-1"), Ok(5));
        assert_eq!(t.events("account-2"), Ok(1));
        assert_eq!(t.events("$ce-account"), Ok(6));
        assert_eq!(t.events("account-3"), Ok(0));
        assert_eq!(
            t.covered(),
            &[
                Covered {
                    base: 0,
                    stamp: stamp(1)
                },
                Covered {
                    base: 1 << 21,
                    stamp: stamp(2)
                }
            ]
        );
    }

    #[test]
    fn many_keys_are_each_found() {
        let (names, bytes) = one_file_table(5000, 0);
        let t = table(bytes).expect("parsed");
        for n in &names {
            assert_eq!(t.events(n), Ok(1), "{n}");
        }
        assert_eq!(t.events("s-5000"), Ok(0));
    }

    #[test]
    fn damage_is_found_and_never_answers() {
        let (names, good) = one_file_table(300, 2);
        // Every byte of the body flipped in turn: each lookup either answers right or fails.
        let body = KEYS_HEADER_LEN..good.len();
        for at in body.step_by(7) {
            let mut bad = good.clone();
            bad[at] ^= 0x41;
            let Some(t) = table(bad) else { continue };
            for n in names.iter().step_by(13) {
                if let Ok(e) = t.events(n) {
                    assert_eq!(e, 3, "{n} with byte {at} flipped");
                }
            }
        }
        // A damaged header or covered list: no table.
        for at in [0, 9, 13, 17, 33, 41, 61, KEYS_HEADER_LEN + 5] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            assert!(table(bad).is_none(), "byte {at}");
        }
        assert!(table(good[..good.len() - 1].to_vec()).is_none());
    }

    /// Re-signs `b`'s slots, covered list and header, as a forger would.
    fn resign(b: &mut [u8]) {
        let slots = (1usize << u32_at(b, 12)) + SPILL;
        let covered = u32_at(b, 32) as usize * COVERED_LEN;
        let slots_at = KEYS_HEADER_LEN + covered;
        let names_at = slots_at + slots * SLOT_LEN;
        for i in 0..slots {
            let at = slots_at + i * SLOT_LEN;
            let place = u64_at(b, at + 8);
            let (name_at, len) = ((place >> 16) as usize, (place & 0xffff) as usize);
            if let Some(name) = b.get(names_at + name_at..names_at + name_at + len) {
                let crc = crc32(name);
                b[at + NAME_CRC_AT..at + SLOT_CRC_AT].copy_from_slice(&crc.to_le_bytes());
            }
            let crc = slot_crc(i, u32_at(b, 12), &b[at..at + SLOT_LEN]);
            b[at + SLOT_CRC_AT..at + SLOT_LEN].copy_from_slice(&crc.to_le_bytes());
        }
        let crc = crc32(&b[KEYS_HEADER_LEN..slots_at]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        let crc = crc32(&b[..HEADER_CRC_AT]);
        b[HEADER_CRC_AT..KEYS_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn forged_tables_with_valid_checksums_never_panic() {
        let (names, good) = one_file_table(200, 0);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2_000 {
            let mut bad = good.clone();
            for _ in 0..1 + next() % 8 {
                let at = KEYS_HEADER_LEN + (next() as usize) % (bad.len() - KEYS_HEADER_LEN);
                bad[at] = next() as u8;
            }
            resign(&mut bad);
            if let Some(t) = table(bad) {
                for n in names.iter().step_by(17) {
                    let _ = t.events(n);
                }
                let _ = t.events("not-there");
            }
        }
    }

    #[test]
    fn bad_headers_are_refused_without_panics() {
        for len in 0..KEYS_HEADER_LEN + 8 {
            assert!(table(vec![0xff; len]).is_none());
        }
        let mut h = vec![0u8; KEYS_HEADER_LEN];
        h[..8].copy_from_slice(&KEYS_MAGIC);
        h[8..12].copy_from_slice(&KEYS_LAYOUT.to_le_bytes());
        h[12..16].copy_from_slice(&63u32.to_le_bytes());
        let crc = crc32(&h[..HEADER_CRC_AT]);
        h[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert!(table(h).is_none());
    }
}
