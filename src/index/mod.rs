//! The stream index: stream names to stream ids, and per stream, event number to position.
//!
//! Held in memory; [`persist`] saves it as one file per log segment, so opening a store reads
//! those files and scans only what the log holds beyond them.

pub mod persist;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Dense id of a stream inside one open store (its creation order); never written to disk.
pub type StreamId = u32;

struct StreamEntry {
    name: Arc<str>,
    /// `positions[n]` is the global position of event number `n`.
    positions: Vec<u64>,
    /// Base of the segment that holds the stream's newest event, to track which streams each
    /// segment touches.
    last_segment: Option<u64>,
}

/// One stream's events inside one segment: a contiguous run of event numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRun {
    /// Stream name.
    pub stream: Arc<str>,
    /// Event number of the first event of the run.
    pub first_event: u64,
    /// Offsets of the events inside the segment, in event-number order.
    pub offsets: Vec<u32>,
}

/// An event number that does not follow the stream's last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discontinuity {
    /// The stream.
    pub stream: Arc<str>,
    /// The event number the index expected next.
    pub expected: u64,
    /// The one it was given.
    pub found: u64,
}

/// The in-memory index.
#[derive(Default)]
pub struct Index {
    ids: HashMap<Arc<str>, StreamId>,
    streams: Vec<StreamEntry>,
    /// Per segment base: the streams with events in that segment.
    touched: BTreeMap<u64, Vec<StreamId>>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// The id of `stream`, if it has events.
    pub fn lookup(&self, stream: &str) -> Option<StreamId> {
        self.ids.get(stream).copied()
    }

    /// How many events the stream has.
    pub fn len(&self, id: StreamId) -> u64 {
        self.streams
            .get(id as usize)
            .map_or(0, |s| s.positions.len() as u64)
    }

    /// The stream's positions, by event number.
    pub fn positions(&self, id: StreamId) -> &[u64] {
        self.streams
            .get(id as usize)
            .map_or(&[], |s| s.positions.as_slice())
    }

    /// All stream names, in the order the streams were first written.
    pub fn stream_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.streams.iter().map(|s| &s.name)
    }

    /// The stream's name.
    pub fn name(&self, id: StreamId) -> Option<&Arc<str>> {
        self.streams.get(id as usize).map(|s| &s.name)
    }

    /// The id of `stream`, creating an empty entry if it has none.
    pub fn get_or_create(&mut self, stream: &str) -> StreamId {
        if let Some(id) = self.ids.get(stream) {
            return *id;
        }
        let name: Arc<str> = Arc::from(stream);
        let id = self.streams.len() as StreamId;
        self.streams.push(StreamEntry {
            name: name.clone(),
            positions: Vec::new(),
            last_segment: None,
        });
        self.ids.insert(name, id);
        id
    }

    /// Records that event `event_number` of stream `id` is at `position`, in the segment at
    /// `segment_base`. Event numbers must arrive in order.
    pub fn push(
        &mut self,
        id: StreamId,
        event_number: u64,
        position: u64,
        segment_base: u64,
    ) -> Result<(), Discontinuity> {
        let Some(entry) = self.streams.get_mut(id as usize) else {
            return Err(Discontinuity {
                stream: Arc::from(""),
                expected: 0,
                found: event_number,
            });
        };
        let expected = entry.positions.len() as u64;
        if event_number != expected {
            return Err(Discontinuity {
                stream: entry.name.clone(),
                expected,
                found: event_number,
            });
        }
        entry.positions.push(position);
        if entry.last_segment != Some(segment_base) {
            entry.last_segment = Some(segment_base);
            self.touched.entry(segment_base).or_default().push(id);
        }
        Ok(())
    }

    /// The runs of every stream with events in the segment spanning `[base, base + capacity)`.
    pub fn segment_runs(&self, base: u64, capacity: u64) -> Vec<SegmentRun> {
        let Some(ids) = self.touched.get(&base) else {
            return Vec::new();
        };
        let end = base + capacity;
        ids.iter()
            .filter_map(|&id| {
                let s = &self.streams[id as usize];
                let lo = s.positions.partition_point(|&p| p < base);
                let hi = s.positions.partition_point(|&p| p < end);
                (lo < hi).then(|| SegmentRun {
                    stream: s.name.clone(),
                    first_event: lo as u64,
                    offsets: s.positions[lo..hi]
                        .iter()
                        .map(|&p| (p - base) as u32)
                        .collect(),
                })
            })
            .collect()
    }

    /// Drops the bookkeeping of which streams a segment touches, once its index file is final.
    pub fn forget_segment(&mut self, base: u64) {
        self.touched.remove(&base);
    }

    /// Adds runs loaded from a segment's index file.
    pub fn apply_runs(&mut self, base: u64, runs: &[SegmentRun]) -> Result<(), Discontinuity> {
        for run in runs {
            let id = self.get_or_create(&run.stream);
            for (k, &off) in run.offsets.iter().enumerate() {
                self.push(id, run.first_event + k as u64, base + u64::from(off), base)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_checks_continuity_and_tracks_segments() {
        let mut ix = Index::new();
        let a = ix.get_or_create("a");
        let b = ix.get_or_create("b");
        ix.push(a, 0, 64, 0).unwrap();
        ix.push(b, 0, 128, 0).unwrap();
        ix.push(a, 1, 4160, 4096).unwrap();
        assert!(ix.push(a, 5, 4200, 4096).is_err());
        assert_eq!(ix.len(a), 2);
        let runs = ix.segment_runs(0, 4096);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].offsets, vec![64]);
        let runs = ix.segment_runs(4096, 4096);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].first_event, 1);
        assert_eq!(runs[0].offsets, vec![64]);

        let mut again = Index::new();
        again.apply_runs(0, &ix.segment_runs(0, 4096)).unwrap();
        again
            .apply_runs(4096, &ix.segment_runs(4096, 4096))
            .unwrap();
        assert_eq!(again.positions(again.lookup("a").unwrap()), &[64, 4160]);
    }
}
