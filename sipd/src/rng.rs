//! Small fast PRNG (xorshift64*) for tags and branches, seeded by the
//! caller so that the core is deterministic under test, and the one place
//! that asks the OS for random bytes (keys, seeds). The PRNG is not for
//! secrets: nonces use a keyed hash (auth.rs).

pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        // splitmix64 of the seed: any seed (0 included) gives a good state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 16 hex digits.
    pub fn token(&mut self) -> String {
        let mut s = String::with_capacity(16);
        crate::sip::push_hex(&mut s, self.next_u64(), 16);
        s
    }
}

/// Fill `buf` from the OS; should the OS refuse (it does not on Linux),
/// from the addresses of this process's stack and code (ASLR) and its pid.
/// A random 64-bit value from the system's generator.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    fill_random(&mut b);
    u64::from_le_bytes(b)
}

pub fn fill_random(buf: &mut [u8]) {
    if getrandom::getrandom(buf).is_ok() {
        return;
    }
    let local = 0u8;
    let seed = (&local as *const u8 as u64)
        ^ (fill_random as *const () as u64).rotate_left(32)
        ^ u64::from(std::process::id());
    let mut r = Rng::seeded(seed);
    for chunk in buf.chunks_mut(8) {
        let v = r.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_repeatable_and_seeds_differ() {
        let (mut a, mut b, mut c) = (Rng::seeded(7), Rng::seeded(7), Rng::seeded(8));
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert_eq!(Rng::seeded(0).token().len(), 16);
    }

    #[test]
    fn fill_random_fills() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        fill_random(&mut a);
        fill_random(&mut b);
        assert_ne!(a, b);
    }
}
