//! The peer of the benchmarks that measure writing: one file written in order, as fast as the
//! file system takes it.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Seconds to write `bytes` to a fresh file at `path` in writes of `block`, then `fdatasync` it.
/// The first 8 bytes of `block` are set to each write's number, so that no two writes are
/// alike. The file is removed afterwards.
pub fn sequential_write(path: &Path, bytes: u64, block: &mut [u8]) -> f64 {
    let start = Instant::now();
    let mut f = std::fs::File::create(path).expect("peer file");
    let mut left = bytes;
    let mut n = 0u64;
    while left > 0 {
        block[..8].copy_from_slice(&n.to_le_bytes());
        n += 1;
        let len = left.min(block.len() as u64) as usize;
        f.write_all(&block[..len]).expect("peer write");
        left -= len as u64;
    }
    f.sync_data().expect("peer sync");
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    secs
}
