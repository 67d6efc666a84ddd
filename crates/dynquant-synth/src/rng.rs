//! A small seeded generator (xoshiro256** seeded through splitmix64) with the distributions
//! the synthetic weights need. Deterministic on every platform: only integer arithmetic and
//! IEEE f64 operations whose results are exactly specified (`ln`/`sqrt`/`cos` are used only
//! through Box-Muller, whose outputs are rounded to f32 afterwards).

/// The generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`, further keyed by a stream name (so each tensor gets an
    /// independent stream that does not depend on generation order).
    pub fn new(seed: u64, stream: &str) -> Self {
        let mut x = seed;
        for b in stream.bytes() {
            x = x.rotate_left(5) ^ u64::from(b);
            splitmix64(&mut x);
        }
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Rng { s }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Student-t with `nu` degrees of freedom, scaled to unit variance (nu > 2): heavy tails.
    pub fn student_t(&mut self, nu: u32) -> f64 {
        let z = self.normal();
        let chi2: f64 = (0..nu).map(|_| self.normal().powi(2)).sum();
        let t = z / (chi2 / f64::from(nu)).sqrt();
        t * ((f64::from(nu) - 2.0) / f64::from(nu)).sqrt()
    }

    /// Log-normal multiplier with median 1 and log-space deviation `sigma`.
    pub fn log_normal(&mut self, sigma: f64) -> f64 {
        (sigma * self.normal()).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(1, "x").next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(1, "x").next_u64(), Rng::new(1, "y").next_u64());
        assert_ne!(Rng::new(1, "x").next_u64(), Rng::new(2, "x").next_u64());
    }

    #[test]
    fn student_t_has_unit_variance_and_heavy_tails() {
        let mut r = Rng::new(7, "t");
        let xs: Vec<f64> = (0..200_000).map(|_| r.student_t(4)).collect();
        let var = xs.iter().map(|x| x * x).sum::<f64>() / xs.len() as f64;
        assert!((var - 1.0).abs() < 0.15, "variance {var}");
        let kurt = xs.iter().map(|x| x.powi(4)).sum::<f64>() / xs.len() as f64;
        assert!(kurt > 4.0, "kurtosis {kurt} should exceed a normal's 3");
    }
}
