//! Byte slices of a memory map, each holding the map alive: how an event's bytes are handed out
//! without a copy. The log makes them from its segments; the public event types wrap them.

use std::sync::Arc;

use bytes::Bytes;

/// The bytes of a published record (or part of one) in a segment's map, with a handle that keeps
/// the map alive. Published bytes never change, so slices of them stay valid while the writer
/// writes elsewhere in the same map; no slice ever covers bytes that are still being written.
#[derive(Clone)]
pub struct MapSlice {
    map: Arc<memmap2::MmapRaw>,
    start: usize,
    len: usize,
}

impl MapSlice {
    /// Bytes `start..start + len` of `map`, which must lie within it and be published.
    pub(crate) fn new(map: Arc<memmap2::MmapRaw>, start: usize, len: usize) -> MapSlice {
        debug_assert!(start.checked_add(len).is_some_and(|end| end <= map.len()));
        MapSlice { map, start, len }
    }

    /// `bytes`, copied into an anonymous map of their own: how events that do not come from a
    /// segment (another backend's rows) are held, so that `RecordedEvent` keeps one shape.
    pub(crate) fn anonymous(bytes: &[u8]) -> std::io::Result<MapSlice> {
        // A map cannot be empty; the one spare byte is never handed out.
        let mut map = memmap2::MmapMut::map_anon(bytes.len().max(1))?;
        map[..bytes.len()].copy_from_slice(bytes);
        Ok(MapSlice {
            map: Arc::new(memmap2::MmapRaw::from(map)),
            start: 0,
            len: bytes.len(),
        })
    }

    /// `len` bytes from `start` of this slice, sharing the map.
    pub(crate) fn sub(&self, start: usize, len: usize) -> MapSlice {
        let start = start.min(self.len);
        MapSlice {
            map: self.map.clone(),
            start: self.start + start,
            len: len.min(self.len - start),
        }
    }

    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `start + len <= map.len()` (checked when made), the map lives as long as
        // `self.map`, and the range was published (below `data_end`) when made, so nothing
        // writes to it any more.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }

    /// `range` of these bytes as `Bytes` sharing the map: no copy.
    pub fn to_bytes(&self, range: std::ops::Range<usize>) -> Bytes {
        let end = range.end.min(self.len);
        let start = range.start.min(end);
        Bytes::from_owner(MapSlice {
            map: self.map.clone(),
            start: self.start + start,
            len: end - start,
        })
    }
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}
