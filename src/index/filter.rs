//! Key filters: for an index file left unread at open that the key table does not cover (the
//! file of the segment active at open, those sealed since the table was made, or all of them
//! when there is no table), a filter of the keys it holds, kept in memory, so that the first use
//! of a key it does not hold never searches it. (The id tables' hints narrow such a search too,
//! but asking them probes every id table.)
//!
//! A filter answers "perhaps" for every key of the file and "no" for nearly all others; a "no"
//! is final. It stays right while the file is rewritten (a seal, a checkpoint): a rewritten file
//! holds the keys of the one it replaces, and keys that were in memory, which are never looked up
//! in files at their first use. It is made from the file's directory after the store opens, on
//! the thread that keeps the key table, and never written to disk.
//!
//! The filter is split into blocks of 256 bits, one cache line's half: a key sets one bit in each
//! of a block's eight 32-bit words, the block chosen by the high half of its name hash and the
//! bits by the low half, so that a lookup reads one block.

use super::persist::IndexFile;

/// Bits of filter per key: about one "perhaps" in a hundred for a key the file does not hold.
const BITS_PER_KEY: usize = 12;
/// Bits of one block.
const BLOCK_BITS: usize = 256;
/// One odd multiplier per word of a block, each spreading the hash's low half differently to
/// pick that word's bit (any odd constants with well-mixed bits do).
const SPREAD: [u32; 8] = [
    0x9e37_79b1,
    0x85eb_ca77,
    0xc2b2_ae3d,
    0x27d4_eb2f,
    0x1656_67b1,
    0xd3a2_646d,
    0xfd70_46c5,
    0xb55a_4f09,
];

/// The filter of one index file's keys.
pub struct KeyFilter {
    blocks: Box<[[u32; 8]]>,
}

impl KeyFilter {
    /// The filter of every key in `file`, read from its directory (each block checked); `None`
    /// if the directory is damaged, or `stop` says to give up (checked every few thousand keys).
    pub fn of(file: &IndexFile, stop: &dyn Fn() -> bool) -> Option<KeyFilter> {
        let keys = file.run_count();
        let blocks = (keys * BITS_PER_KEY).div_ceil(BLOCK_BITS).max(1);
        let mut filter = KeyFilter {
            blocks: crate::slots::zeroed(blocks, [0u32; 8]).into_boxed_slice(),
        };
        for i in 0..keys {
            if i % 4096 == 0 && stop() {
                return None;
            }
            filter.add(file.hash_at(i).ok()?);
        }
        Some(filter)
    }

    fn block(&self, hash: u64) -> usize {
        // The high half scaled to the number of blocks: uniform, with no division.
        (((hash >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    fn bit(hash: u64, word: usize) -> u32 {
        1 << ((hash as u32).wrapping_mul(SPREAD[word]) >> 27)
    }

    fn add(&mut self, hash: u64) {
        let b = self.block(hash);
        for (w, word) in self.blocks[b].iter_mut().enumerate() {
            *word |= Self::bit(hash, w);
        }
    }

    /// Whether the file may hold a key of name hash `hash`: `false` is certain.
    pub fn may_hold(&self, hash: u64) -> bool {
        let block = &self.blocks[self.block(hash)];
        block
            .iter()
            .enumerate()
            .all(|(w, word)| word & Self::bit(hash, w) != 0)
    }

    /// Bytes of memory the filter takes.
    pub fn bytes(&self) -> usize {
        self.blocks.len() * BLOCK_BITS / 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(mut x: u64) -> u64 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }

    fn filter_of(hashes: impl Iterator<Item = u64>, keys: usize) -> KeyFilter {
        let blocks = (keys * BITS_PER_KEY).div_ceil(BLOCK_BITS).max(1);
        let mut f = KeyFilter {
            blocks: crate::slots::zeroed(blocks, [0u32; 8]).into_boxed_slice(),
        };
        hashes.for_each(|h| f.add(h));
        f
    }

    #[test]
    fn every_key_added_may_be_held_and_few_others_are() {
        let n = 100_000u64;
        let f = filter_of((0..n).map(mix), n as usize);
        assert!((0..n).map(mix).all(|h| f.may_hold(h)));
        let false_hits = (n..11 * n).map(mix).filter(|&h| f.may_hold(h)).count();
        // About 1% at 12 bits per key; 2% leaves room for the blocks' uneven load.
        assert!(
            false_hits < (10 * n / 50) as usize,
            "{false_hits} of {}",
            10 * n
        );
        assert_eq!(f.bytes(), (n as usize * BITS_PER_KEY).div_ceil(256) * 32);
    }

    #[test]
    fn an_empty_filter_holds_nothing() {
        let f = filter_of(std::iter::empty(), 0);
        assert!((0..1000).map(mix).all(|h| !f.may_hold(h)));
    }
}
