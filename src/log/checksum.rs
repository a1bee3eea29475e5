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
//! 34–36M events/s, `replay_all` 35–37M to 43–49M. Other CPUs and longer records use
//! `crc32fast`. Both give the same value for every input: the wide path is affine in its input
//! bits, as the CRC is, and the tests check it on the zero input and every one-bit input of
//! every length it takes, which determines it.

/// The checksum of `bytes` (a record after its checksum field).
#[inline(always)]
pub(crate) fn record_crc(bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if wide::takes(bytes.len()) && *wide::AVAILABLE {
        // SAFETY: the CPU has the features `wide::crc` is compiled for (checked once, at
        // `AVAILABLE`), and `takes` holds for the length.
        return unsafe { wide::crc(bytes) };
    }
    portable(bytes)
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

    /// Whether this CPU has the instructions [`crc`] uses. Asked once.
    pub(super) static AVAILABLE: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("vpclmulqdq")
            && is_x86_feature_detected!("pclmulqdq")
            && is_x86_feature_detected!("sse4.1")
    });

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

    /// The CRC-32 of `bytes`.
    ///
    /// # Safety
    /// The CPU has the features [`AVAILABLE`] asks for, and [`takes`] holds for `bytes.len()`.
    #[target_feature(
        enable = "avx512f",
        enable = "avx512bw",
        enable = "vpclmulqdq",
        enable = "pclmulqdq",
        enable = "sse4.1"
    )]
    pub(super) unsafe fn crc(bytes: &[u8]) -> u32 {
        let len = bytes.len();
        debug_assert!(takes(len));
        let p = bytes.as_ptr();
        // The input as whole blocks from `base`: after eight virtual zero bytes if its length
        // is an odd number of eight-byte words. Loads are masked to the input's own bytes.
        let (base, first, init) = if len % 16 == 8 {
            (p.wrapping_sub(8), 8usize, INIT_BEFORE_8_ZEROS as i32)
        } else {
            (p, 0usize, -1i32)
        };
        let blocks = (first + len) / 16;
        let end = first + len;
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
        // The input times x^32, as 96 bits congruent to it mod `P`.
        let x = _mm_xor_si128(
            _mm256_castsi256_si128(half),
            _mm256_extracti128_si256(half, 1),
        );
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

    /// Whether the wide path can be tested on this CPU (saying so if not: the dispatch would
    /// fall back silently).
    #[cfg(target_arch = "x86_64")]
    fn wide_here() -> bool {
        let here = *wide::AVAILABLE;
        if !here {
            eprintln!("this CPU lacks AVX-512 or VPCLMULQDQ: the wide path is not used here");
        }
        here
    }

    /// The wide path's checksum of `input`, of a length it takes, where [`wide_here`].
    #[cfg(target_arch = "x86_64")]
    fn wide_crc(input: &[u8]) -> u32 {
        assert!(*wide::AVAILABLE && wide::takes(input.len()));
        // SAFETY: just checked.
        unsafe { wide::crc(input) }
    }

    /// The wide path itself, where the CPU has it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn wide_path_matches_crc32fast() {
        if !wide_here() {
            return;
        }
        for seed in 1..40 {
            let buf = bytes(WIDE_MAX + 64, seed);
            for len in (8..=WIDE_MAX).step_by(8) {
                let off = (seed as usize * 5) % 64;
                let b = &buf[off..off + len];
                assert_eq!(wide_crc(b), crc32fast::hash(b), "length {len}");
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
        if !wide_here() {
            return;
        }
        let mut b = vec![0u8; WIDE_MAX];
        for len in (8..=WIDE_MAX).step_by(8) {
            let input = &mut b[..len];
            assert_eq!(wide_crc(input), crc32fast::hash(input), "zeros, {len}");
            for bit in 0..len * 8 {
                input[bit / 8] = 1 << (bit % 8);
                assert_eq!(
                    wide_crc(input),
                    crc32fast::hash(input),
                    "bit {bit} of {len}"
                );
                input[bit / 8] = 0;
            }
        }
    }

    /// Inputs that start right after, or end right before, a page that cannot be read: the
    /// masked loads read nothing outside the input (a read there would fault).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn wide_path_reads_nothing_around_its_input() {
        if !wide_here() {
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
        for len in (8..=WIDE_MAX).step_by(8) {
            for input in [&page[..len], &page[PAGE - len..]] {
                assert_eq!(wide_crc(input), crc32fast::hash(input), "{len}");
            }
        }
        // SAFETY: the mapping made above, no longer referred to.
        assert_eq!(unsafe { libc::munmap(base.cast(), 3 * PAGE) }, 0);
    }
}
