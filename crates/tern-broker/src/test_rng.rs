//! The deterministic generator the crate's randomized tests draw from (tests only).

/// xorshift64*: deterministic pseudo-random numbers without extra crates. Test modules add
/// their own drawing methods (topics, filters) in `impl` blocks of their own.
pub(crate) struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
