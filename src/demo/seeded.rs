//! A small deterministic generator (xorshift64*) for the demo paths and the benches: the seed
//! decides every draw, so a run can be repeated.

/// Draws from a seed.
#[derive(Debug, Clone)]
pub struct Seeded(u64);

impl Seeded {
    /// Starts from `state` as given (made odd: xorshift's state may not be zero).
    pub fn from_state(state: u64) -> Seeded {
        Seeded(state | 1)
    }

    /// Starts from `seed` spread over the bits first (a golden-ratio multiply), so that nearby
    /// seeds draw unrelated sequences.
    pub fn new(seed: u64) -> Seeded {
        Seeded::from_state(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
