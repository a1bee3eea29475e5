//! A small deterministic generator (xorshift) for the benchmarks that pick streams at random:
//! the same seed gives the same sequence in every run, with no dependency.

pub struct Rng(pub u64);

impl Rng {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
