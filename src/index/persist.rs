//! Index files: one per segment, `<base>.idx`, holding that segment's stream runs.
//!
//! An index file is a cache of what its segment says. A missing, damaged or stale one is never
//! an error: opening rebuilds it from the segment.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::SegmentRun;
use crate::log::format::{u16_at, u32_at, u64_at, FORMAT_VERSION, SEGMENT_HEADER_LEN};
use crate::log::segment::create_file;

/// First eight bytes of an index file.
pub const INDEX_MAGIC: [u8; 8] = *b"EVJLIDX\0";
/// Bytes before the first run.
pub const INDEX_HEADER_LEN: usize = 48;
/// Fixed bytes of a run besides its name and offsets: name length (2), first event (8),
/// count (4).
const RUN_FIXED_LEN: usize = 14;

/// The index file name for the segment at `base`.
pub fn index_file_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// What an index file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    /// Offset in the segment up to which the runs are complete; the log after it is scanned.
    pub covered_end: u64,
    /// The runs, one per stream.
    pub runs: Vec<SegmentRun>,
}

/// Encodes the index file bytes for the segment at `base`.
pub fn encode(base: u64, covered_end: u64, runs: &[SegmentRun]) -> Vec<u8> {
    let body_len: usize = runs
        .iter()
        .map(|r| RUN_FIXED_LEN + r.stream.len() + 4 * r.offsets.len())
        .sum();
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + body_len);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&covered_end.to_le_bytes());
    out.extend_from_slice(&(body_len as u64).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]); // body CRC and header CRC, filled below
    for r in runs {
        out.extend_from_slice(&(r.stream.len() as u16).to_le_bytes());
        out.extend_from_slice(r.stream.as_bytes());
        out.extend_from_slice(&r.first_event.to_le_bytes());
        out.extend_from_slice(&(r.offsets.len() as u32).to_le_bytes());
        for off in &r.offsets {
            out.extend_from_slice(&off.to_le_bytes());
        }
    }
    let body_crc = crc32fast::hash(&out[INDEX_HEADER_LEN..]);
    out[40..44].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&out[..44]);
    out[44..48].copy_from_slice(&header_crc.to_le_bytes());
    out
}

/// Decodes an index file for the segment at `base` whose capacity is `capacity`. `None` for
/// anything that is not a whole, matching, well-formed index file.
pub fn decode(bytes: &[u8], base: u64, capacity: u64) -> Option<SegmentIndex> {
    let h = bytes.get(..INDEX_HEADER_LEN)?;
    if h[..8] != INDEX_MAGIC || crc32fast::hash(&h[..44]) != u32_at(h, 44) {
        return None;
    }
    let version = u32_at(h, 8);
    if version == 0 || version > FORMAT_VERSION || u64_at(h, 16) != base {
        return None;
    }
    let covered_end = u64_at(h, 24);
    if covered_end < SEGMENT_HEADER_LEN as u64 || covered_end > capacity {
        return None;
    }
    let body = &bytes[INDEX_HEADER_LEN..];
    if u64_at(h, 32) != body.len() as u64 || crc32fast::hash(body) != u32_at(h, 40) {
        return None;
    }
    let count = u32_at(h, 12) as usize;
    // Each run takes at least RUN_FIXED_LEN bytes, so the body bounds the count.
    if count > body.len() / RUN_FIXED_LEN {
        return None;
    }
    let mut runs = Vec::with_capacity(count);
    let mut at = 0usize;
    for _ in 0..count {
        let name_len = u16_at(body.get(at..at + 2)?, 0) as usize;
        at += 2;
        let name = std::str::from_utf8(body.get(at..at + name_len)?).ok()?;
        at += name_len;
        let first_event = u64_at(body.get(at..at + 8)?, 0);
        let n = u32_at(body.get(at + 8..at + 12)?, 0) as usize;
        at += 12;
        let raw = body.get(at..at.checked_add(n.checked_mul(4)?)?)?;
        at += raw.len();
        let mut offsets = Vec::with_capacity(n);
        let mut prev = 0u32;
        for c in raw.chunks_exact(4) {
            let off = u32_at(c, 0);
            if (off as usize) < SEGMENT_HEADER_LEN || u64::from(off) >= covered_end || off <= prev {
                return None;
            }
            prev = off;
            offsets.push(off);
        }
        if name.is_empty() || n == 0 || first_event.checked_add(n as u64).is_none() {
            return None;
        }
        runs.push(SegmentRun {
            stream: Arc::from(name),
            first_event,
            offsets,
        });
    }
    (at == body.len()).then_some(SegmentIndex { covered_end, runs })
}

/// Reads the index file of the segment at `base`, if there is a valid one.
pub fn load(dir: &Path, base: u64, capacity: u64) -> Option<SegmentIndex> {
    let bytes = fs::read(dir.join(index_file_name(base))).ok()?;
    decode(&bytes, base, capacity)
}

/// Writes the index file of the segment at `base`, replacing any older one atomically.
pub fn save(
    dir: &Path,
    base: u64,
    covered_end: u64,
    runs: &[SegmentRun],
    sync: bool,
) -> std::io::Result<PathBuf> {
    let path = dir.join(index_file_name(base));
    let tmp = dir.join(format!("{}.tmp", index_file_name(base)));
    let mut f = create_file(&tmp)?;
    f.write_all(&encode(base, covered_end, runs))?;
    if sync {
        f.sync_data()?;
    }
    drop(f);
    fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs() -> Vec<SegmentRun> {
        vec![
            SegmentRun {
                stream: Arc::from("account-1"),
                first_event: 3,
                offsets: vec![64, 200, 400],
            },
            SegmentRun {
                stream: Arc::from("b"),
                first_event: 0,
                offsets: vec![128],
            },
        ]
    }

    #[test]
    fn round_trips() {
        let bytes = encode(4096, 512, &runs());
        let back = decode(&bytes, 4096, 8192).unwrap();
        assert_eq!(back.covered_end, 512);
        assert_eq!(back.runs, runs());
    }

    #[test]
    fn rejects_damage_truncation_and_wrong_segment() {
        let bytes = encode(4096, 512, &runs());
        assert!(decode(&bytes, 0, 8192).is_none());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 4096, 8192).is_none(), "cut {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b, 4096, 8192).is_none(), "flip at {i}");
        }
    }
}
