//! The record checksum: CRC-32 with the IEEE 802.3 polynomial, bit-reflected, as `crc32fast`
//! computes it (FORMAT.md, "Records"). By default every replay verifies every record it returns
//! (`Options::verify_checksums`), so this is most of a replay's time: for records of 100–250
//! bytes `crc32fast` spends 14–22 ns on each.
//!
//! On x86-64 CPUs with AVX-512 and `VPCLMULQDQ`, a record whose checksummed part (its bytes
//! after the checksum field) is at most `WIDE_MAX` bytes takes a shorter path, `wide`: instead
//! of folding the record 16 bytes at a time, each folding step waiting for the one before,
//! every 16-byte block is multiplied at once by the power of `x` that carries it past the
//! record's end, four blocks per instruction, and the products are summed; one Barrett
//! reduction ends it. Measured with the `workload` example on 184-byte records (100-byte data,
//! AMD EPYC, Zen 4; the builds before and after alternated): replay of one stream 26–31M to
//! 34–36M events/s, `replay_all` 35–37M to 43–49M. CPUs with `VPCLMULQDQ` and AVX2 but not
//! AVX-512 (Zen 3, Intel's client cores) take the same path with 256-bit registers, two blocks
//! per instruction; on the same machine with the 512-bit function switched off (a scratch
//! build, alternated with the others, two runs; the same records, `replay` of one stream of
//! 100,000 events and `all` over 1,000,000 events of 1,000 streams, warm), replay 31.7–34.4M
//! and `replay_all` 41.8–42.0M,
//! against 29.6–30.0M and 35.6–36.2M with `crc32fast` (which there takes its own AVX-512
//! path) and 35.8–37.8M and 48.6–49.4M with 512-bit registers. Other CPUs and longer records
//! use `crc32fast`. All give the same value for every input: the wide path is affine in its
//! input bits, as the CRC is, and the tests check both of its functions (where the CPU runs
//! them) on the zero input and every one-bit input of every length they take, which
//! determines them.

/// The checksum of `bytes` (a record after its checksum field).
#[inline(always)]
pub(crate) fn record_crc(bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if wide::takes(bytes.len()) {
        // SAFETY: the CPU has the features each function is compiled for (checked once, at
        // `LEVEL`), and `takes` holds for the length.
        match *wide::LEVEL {
            wide::Level::Zmm => return unsafe { wide::crc(bytes) },
            wide::Level::Ymm => return unsafe { wide::crc_ymm(bytes) },
            wide::Level::None => {}
        }
    }
    portable(bytes)
}

/// The same CRC-32 of any bytes, on the wide path where the CPU has it and the input is short
/// enough: the blocks of index files and id tables, and the slots and names of the key table,
/// which a lookup checks as it reads them.
#[inline]
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    record_crc(bytes)
}

/// The checksummed region of a mapped file (an index file's directory and names, an id table's
/// body), cut into blocks of `block` bytes with one little-endian CRC-32 each, stored
/// from `crcs_at`: each block is checked the first time a reader touches it, and remembered, so
/// that a lookup checks the few blocks it reads rather than the file.
pub(crate) struct CheckedBlocks {
    start: usize,
    end: usize,
    crcs_at: usize,
    block: usize,
    /// One bit per block: checked already.
    checked: Vec<std::sync::atomic::AtomicU64>,
}

impl CheckedBlocks {
    /// The region `start..end` of a file, its blocks' checksums at `crcs_at`.
    pub(crate) fn new(start: usize, end: usize, crcs_at: usize, block: usize) -> CheckedBlocks {
        let blocks = end.saturating_sub(start).div_ceil(block.max(1));
        CheckedBlocks {
            start,
            end,
            crcs_at,
            block: block.max(1),
            checked: (0..blocks.div_ceil(64))
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    /// Checks the blocks that bytes `from..to` of `file` lie in. The error is the file offset of
    /// a block that fails its checksum, or `from` for a range outside the region.
    pub(crate) fn check(&self, file: &[u8], from: usize, to: usize) -> Result<(), usize> {
        use std::sync::atomic::Ordering;
        if from < self.start || to > self.end || from > to {
            return Err(from);
        }
        if from == to {
            return Ok(());
        }
        let first = (from - self.start) / self.block;
        let last = (to - 1 - self.start) / self.block;
        for b in first..=last {
            let (word, bit) = (b / 64, 1u64 << (b % 64));
            let Some(seen) = self.checked.get(word) else {
                return Err(from);
            };
            if seen.load(Ordering::Relaxed) & bit != 0 {
                continue;
            }
            let a = self.start + b * self.block;
            let z = (a + self.block).min(self.end);
            let want = file
                .get(self.crcs_at + 4 * b..self.crcs_at + 4 * b + 4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            match (file.get(a..z), want) {
                (Some(bytes), Some(want)) if crc32(bytes) == want => {}
                _ => return Err(a),
            }
            seen.fetch_or(bit, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// `crc32fast`, from a hasher made once: `crc32fast::hash` sets up a hasher on every call,
/// finding out which instructions the CPU has; without that, one stream's replay went from
/// 26.8M to 29.8M events/s (the `workload` example).
#[inline(always)]
fn portable(bytes: &[u8]) -> u32 {
    static HASHER: std::sync::LazyLock<crc32fast::Hasher> =
        std::sync::LazyLock::new(crc32fast::Hasher::new);
    let mut h = HASHER.clone();
    h.update(bytes);
    h.finalize()
}

/// The longest input the wide path takes: its table of fold constants has one entry per 16-byte
/// block of this many bytes.
#[cfg(target_arch = "x86_64")]
const WIDE_MAX: usize = 16 * wide::BLOCKS;

#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;

    /// Blocks of 16 bytes in the longest input taken ([`super::WIDE_MAX`] bytes).
    pub(super) const BLOCKS: usize = 64;

    /// Which of the wide path's functions this CPU can run.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Level {
        /// [`crc`]: AVX-512 (F, BW) and `VPCLMULQDQ`.
        Zmm,
        /// [`crc_ymm`]: AVX2 and `VPCLMULQDQ`, without AVX-512 (Zen 3, Intel's client cores).
        Ymm,
        /// Neither: `crc32fast`.
        None,
    }

    /// The wide path this CPU takes. Asked once.
    pub(super) static LEVEL: std::sync::LazyLock<Level> = std::sync::LazyLock::new(|| {
        let base = is_x86_feature_detected!("vpclmulqdq")
            && is_x86_feature_detected!("pclmulqdq")
            && is_x86_feature_detected!("sse4.1");
        if base && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            Level::Zmm
        } else if base && is_x86_feature_detected!("avx2") {
            Level::Ymm
        } else {
            Level::None
        }
    });

    /// One of the wide path's functions.
    #[cfg(test)]
    pub(super) type Crc = unsafe fn(&[u8]) -> u32;

    /// The wide path's functions this CPU can run, by name: both where it has AVX-512 (which
    /// comes with AVX2), so that the tests check the 256-bit one too.
    #[cfg(test)]
    pub(super) fn runnable() -> Vec<(&'static str, Crc)> {
        match *LEVEL {
            Level::Zmm => vec![("zmm", crc as _), ("ymm", crc_ymm as _)],
            Level::Ymm => vec![("ymm", crc_ymm as _)],
            Level::None => Vec::new(),
        }
    }

    /// Whether [`crc`] takes an input of `len` bytes: records are whole multiples of 8 bytes
    /// (`RECORD_ALIGN`), so an input is a run of 16-byte blocks, perhaps after one of 8.
    #[inline(always)]
    pub(super) fn takes(len: usize) -> bool {
        len.is_multiple_of(8) && (8..=super::WIDE_MAX).contains(&len)
    }

    /// The CRC-32 polynomial without its `x^32` term, in normal bit order (bit `i` is `x^i`).
    const POLY: u32 = 0x04C1_1DB7;

    /// `x^n mod P`, in normal bit order.
    const fn x_pow_mod(n: u32) -> u32 {
        let mut r: u32 = 1;
        let mut i = 0;
        while i < n {
            let carry = r & 0x8000_0000;
            r <<= 1;
            if carry != 0 {
                r ^= POLY;
            }
            i += 1;
        }
        r
    }

    /// The fold constant for `x^n`: bit-reflected, as the data are, and shifted left by one,
    /// because the carry-less product of two reflected operands comes out one bit low.
    const fn fold_constant(n: u32) -> u64 {
        (x_pow_mod(n).reverse_bits() as u64) << 1
    }

    /// Constants that carry a 16-byte block from `d` blocks before the input's last block to
    /// past its end, where the 96-bit value the Barrett reduction takes is: the block's low half
    /// (the earlier bits, in reflected order) times `x^(128d + 96)`, its high half times
    /// `x^(128d + 32)`, both mod `P`. Stored with `d` descending, at `BLOCKS - 1 - d`, so that
    /// four consecutive blocks find theirs in four consecutive entries; the zero entries after
    /// the last block's keep the last load of four in the table (its lanes past the input are
    /// zero already).
    static CARRY: [[u64; 2]; 2 * BLOCKS] = {
        let mut t = [[0u64; 2]; 2 * BLOCKS];
        let mut d = 0;
        while d < BLOCKS {
            let bits = 128 * d as u32;
            t[BLOCKS - 1 - d] = [fold_constant(bits + 96), fold_constant(bits + 32)];
            d += 1;
        }
        t
    };

    /// `floor(x^95 / P)`, reflected: the constant of the Barrett reduction's quotient estimate.
    const BARRETT_MU: u64 = {
        let p: u128 = (1u128 << 32) | POLY as u128;
        let mut rem: u128 = 1u128 << 95;
        let mut q: u64 = 0;
        let mut bit = 95;
        while bit >= 32 {
            if rem & (1u128 << bit) != 0 {
                rem ^= p << (bit - 32);
                q |= 1u64 << (bit - 32);
            }
            bit -= 1;
        }
        q.reverse_bits()
    };

    /// `P` with its `x^32` term, reflected into 33 bits.
    const BARRETT_P: u64 = ((1u64 << 32) | POLY as u64).reverse_bits() >> 31;

    /// The CRC register that, after eight zero bytes, is the CRC's initial register (all ones).
    /// An input of `16k + 8` bytes is checksummed as eight zero bytes and the input, from this
    /// register: a whole number of blocks, with no partial block to handle at the end.
    const INIT_BEFORE_8_ZEROS: u32 = {
        let mut r: u32 = 0xFFFF_FFFF;
        let mut i = 0;
        while i < 64 {
            // One zero bit backward: the forward step shifts right and, if the bit shifted
            // out was one, adds the reflected polynomial, whose top bit is set.
            r = if r & 0x8000_0000 != 0 {
                ((r ^ 0xEDB8_8320) << 1) | 1
            } else {
                r << 1
            };
            i += 1;
        }
        r
    };

    /// The input as whole 16-byte blocks: where they start (eight virtual zero bytes before
    /// the input if its length is an odd number of eight-byte words), where the input starts
    /// and ends from there, the initial register to add to the first four bytes, and the
    /// number of blocks.
    #[inline(always)]
    fn blocks_of(bytes: &[u8]) -> (*const u8, usize, usize, i32, usize) {
        let (len, p) = (bytes.len(), bytes.as_ptr());
        let (base, first, init) = if len % 16 == 8 {
            (p.wrapping_sub(8), 8usize, INIT_BEFORE_8_ZEROS as i32)
        } else {
            (p, 0usize, -1i32)
        };
        (base, first, first + len, init, (first + len) / 16)
    }

    /// The CRC-32 of `bytes`.
    ///
    /// # Safety
    /// The CPU has the features [`Level::Zmm`] stands for, and [`takes`] holds for
    /// `bytes.len()`.
    #[target_feature(
        enable = "avx512f",
        enable = "avx512bw",
        enable = "vpclmulqdq",
        enable = "pclmulqdq",
        enable = "sse4.1"
    )]
    pub(super) unsafe fn crc(bytes: &[u8]) -> u32 {
        debug_assert!(takes(bytes.len()));
        // Loads are masked to the input's own bytes.
        let (base, first, end, init, blocks) = blocks_of(bytes);
        let mut init = _mm512_castsi128_si512(_mm_cvtsi32_si128(init));
        let mut sum = _mm512_setzero_si512();
        let mut at = 0usize;
        while at < end {
            let skip_low = first.saturating_sub(at);
            let upto = (end - at).min(64);
            let keep = if upto == 64 {
                !0u64
            } else {
                (1u64 << upto) - 1
            };
            let mask = keep & !((1u64 << skip_low) - 1);
            // SAFETY: the mask admits only bytes of `bytes` (`first..first + len` from `base`);
            // a masked load reads lane `i` at `base.wrapping_add(at + i)` and only for the
            // lanes the mask admits (LLVM's `masked.load`), so a `base` before `bytes` is not
            // read.
            let x = unsafe { _mm512_maskz_loadu_epi8(mask, base.wrapping_add(at) as *const i8) };
            // The initial register is added to the first four bytes of the (padded) input.
            let x = _mm512_xor_si512(x, init);
            init = _mm512_setzero_si512();
            // SAFETY: `blocks <= BLOCKS` and `at / 16 <= blocks - 1`, so the four entries from
            // `BLOCKS - blocks + at / 16` end within the table's `2 * BLOCKS`.
            let k = unsafe {
                _mm512_loadu_si512(CARRY.as_ptr().add(BLOCKS - blocks + at / 16) as *const _)
            };
            sum = _mm512_ternarylogic_epi64(
                sum,
                _mm512_clmulepi64_epi128(x, k, 0x00),
                _mm512_clmulepi64_epi128(x, k, 0x11),
                0x96, // a ^ b ^ c
            );
            at += 64;
        }
        let half = _mm256_xor_si256(
            _mm512_castsi512_si256(sum),
            _mm512_extracti64x4_epi64(sum, 1),
        );
        reduce(_mm_xor_si128(
            _mm256_castsi256_si128(half),
            _mm256_extracti128_si256(half, 1),
        ))
    }

    /// [`crc`] with 256-bit registers, for CPUs without AVX-512: two blocks per instruction,
    /// loads masked by eight-byte lanes (the input's length and its virtual zeros are whole
    /// lanes).
    ///
    /// # Safety
    /// The CPU has AVX2, `VPCLMULQDQ`, `PCLMULQDQ` and SSE4.1 (so at [`Level::Zmm`] and
    /// [`Level::Ymm`]), and [`takes`] holds for `bytes.len()`.
    #[target_feature(
        enable = "avx2",
        enable = "vpclmulqdq",
        enable = "pclmulqdq",
        enable = "sse4.1"
    )]
    pub(super) unsafe fn crc_ymm(bytes: &[u8]) -> u32 {
        debug_assert!(takes(bytes.len()));
        let (base, first, end, init, blocks) = blocks_of(bytes);
        let mut init = _mm256_zextsi128_si256(_mm_cvtsi32_si128(init));
        let mut sum = _mm256_setzero_si256();
        // Lane `i` of a load at `at` holds bytes `at + 8i..at + 8i + 8` from `base`: read only
        // if they are the input's, `first <= at + 8i < end` (a mask lane's sign bit admits it).
        let (first_v, end_v) = (
            _mm256_set1_epi64x(first as i64),
            _mm256_set1_epi64x(end as i64),
        );
        let mut lanes = _mm256_set_epi64x(24, 16, 8, 0);
        let step = _mm256_set1_epi64x(32);
        let mut at = 0usize;
        while at < end {
            let mask = _mm256_andnot_si256(
                _mm256_cmpgt_epi64(first_v, lanes),
                _mm256_cmpgt_epi64(end_v, lanes),
            );
            lanes = _mm256_add_epi64(lanes, step);
            // SAFETY: the mask admits only lanes of `bytes`; a masked-off lane is not read
            // (`VPMASKMOVQ` neither reads nor faults there), so a `base` before `bytes` is not
            // read.
            let x = unsafe { _mm256_maskload_epi64(base.wrapping_add(at) as *const i64, mask) };
            let x = _mm256_xor_si256(x, init);
            init = _mm256_setzero_si256();
            // SAFETY: as in `crc`: the two entries from `BLOCKS - blocks + at / 16` end within
            // the table.
            let k = unsafe {
                _mm256_loadu_si256(CARRY.as_ptr().add(BLOCKS - blocks + at / 16) as *const _)
            };
            sum = _mm256_xor_si256(
                sum,
                _mm256_xor_si256(
                    _mm256_clmulepi64_epi128(x, k, 0x00),
                    _mm256_clmulepi64_epi128(x, k, 0x11),
                ),
            );
            at += 32;
        }
        reduce(_mm_xor_si128(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        ))
    }

    /// The CRC from the sum of the carried blocks: the input times x^32, as 96 bits congruent
    /// to it mod `P`, reduced by Barrett's method.
    #[target_feature(enable = "pclmulqdq", enable = "sse4.1")]
    #[inline]
    fn reduce(x: __m128i) -> u32 {
        let barrett = _mm_set_epi64x(BARRETT_P as i64, BARRETT_MU as i64);
        let t = _mm_clmulepi64_si128(x, barrett, 0x00);
        let t = _mm_clmulepi64_si128(t, barrett, 0x10);
        !(_mm_extract_epi32(_mm_xor_si128(x, t), 2) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    /// Every length the wide path takes, and the lengths around its bounds, at several
    /// alignments, against `crc32fast`.
    #[test]
    fn record_crc_is_crc32_for_every_length() {
        let buf = bytes(4096, 7);
        for len in 0..=1100 {
            for off in [0, 1, 8, 13, 64] {
                let b = &buf[off..off + len];
                assert_eq!(record_crc(b), crc32fast::hash(b), "length {len} at {off}");
            }
        }
        for b in [vec![0u8; 512], vec![0xFF; 512]] {
            for len in (24..=512).step_by(8) {
                assert_eq!(record_crc(&b[..len]), crc32fast::hash(&b[..len]));
            }
        }
    }

    /// The wide path's functions that can be tested on this CPU (saying so if none: the
    /// dispatch would fall back silently), each as a safe function of an input of a length the
    /// wide path takes.
    #[cfg(target_arch = "x86_64")]
    fn wide_paths() -> Vec<(&'static str, impl Fn(&[u8]) -> u32)> {
        let paths = wide::runnable();
        if paths.is_empty() {
            eprintln!("this CPU lacks VPCLMULQDQ or AVX2: the wide path is not used here");
        }
        paths
            .into_iter()
            .map(|(name, f)| {
                let safe = move |input: &[u8]| {
                    assert!(wide::takes(input.len()));
                    // SAFETY: `runnable` lists only what this CPU runs; the length was just
                    // checked.
                    unsafe { f(input) }
                };
                (name, safe)
            })
            .collect()
    }

    /// The wide path itself, where the CPU has it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn wide_path_matches_crc32fast() {
        for (name, wide_crc) in wide_paths() {
            for seed in 1..40 {
                let buf = bytes(WIDE_MAX + 64, seed);
                for len in (8..=WIDE_MAX).step_by(8) {
                    let off = (seed as usize * 5) % 64;
                    let b = &buf[off..off + len];
                    assert_eq!(wide_crc(b), crc32fast::hash(b), "{name}, length {len}");
                }
            }
        }
        assert!(!wide::takes(WIDE_MAX + 8));
        assert!(!wide::takes(0));
        assert!(!wide::takes(36));
    }

    /// The wide path and the CRC are both affine in the input's bits: agreeing on the zero input
    /// and on every input with one bit set, they agree on every input of that length.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn wide_path_is_the_crc_on_a_basis() {
        for (name, wide_crc) in wide_paths() {
            let mut b = vec![0u8; WIDE_MAX];
            for len in (8..=WIDE_MAX).step_by(8) {
                let input = &mut b[..len];
                assert_eq!(
                    wide_crc(input),
                    crc32fast::hash(input),
                    "{name}, zeros, {len}"
                );
                for bit in 0..len * 8 {
                    input[bit / 8] = 1 << (bit % 8);
                    assert_eq!(
                        wide_crc(input),
                        crc32fast::hash(input),
                        "{name}, bit {bit} of {len}"
                    );
                    input[bit / 8] = 0;
                }
            }
        }
    }

    /// Inputs that start right after, or end right before, a page that cannot be read: the
    /// masked loads read nothing outside the input (a read there would fault).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn wide_path_reads_nothing_around_its_input() {
        let paths = wide_paths();
        if paths.is_empty() {
            return;
        }
        const PAGE: usize = 4096;
        // SAFETY: a fresh private anonymous mapping of three pages, its first and last made
        // unreadable; unmapped at the end, nothing else refers to it.
        let base = unsafe {
            let m = libc::mmap(
                std::ptr::null_mut(),
                3 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(m, libc::MAP_FAILED);
            let m = m.cast::<u8>();
            assert_eq!(libc::mprotect(m.cast(), PAGE, libc::PROT_NONE), 0);
            assert_eq!(
                libc::mprotect(m.add(2 * PAGE).cast(), PAGE, libc::PROT_NONE),
                0
            );
            m
        };
        // SAFETY: the middle page is readable and writable, and only this slice refers to it.
        let page = unsafe { std::slice::from_raw_parts_mut(base.add(PAGE), PAGE) };
        page.copy_from_slice(&bytes(PAGE, 5));
        for (name, wide_crc) in &paths {
            for len in (8..=WIDE_MAX).step_by(8) {
                for input in [&page[..len], &page[PAGE - len..]] {
                    assert_eq!(wide_crc(input), crc32fast::hash(input), "{name}, {len}");
                }
            }
        }
        // SAFETY: the mapping made above, no longer referred to.
        assert_eq!(unsafe { libc::munmap(base.cast(), 3 * PAGE) }, 0);
    }
}
