//! A quick, deterministic fuzz pass over the native qcow2 header probe: run
//! in every test suite. The coverage-guided target is fuzz/fuzz_targets/probe.rs.

use cairn::primitives::probe::{parse, ProbeError};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn seed_image(backing: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    let f = std::fs::File::create(&p).unwrap();
    let b = backing.then_some(("parent-volume", "qcow2"));
    cairn::primitives::qcow2_create::write_empty(&f, 10 << 30, b).unwrap();
    std::fs::read(&p).unwrap()[..4096].to_vec()
}

#[test]
fn mutated_headers_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds = [seed_image(false), seed_image(true)];
    let mut parsed = 0;
    for round in 0..50_000 {
        let mut buf = seeds[round % 2].clone();
        let flips = 1 + rng.next() % 8;
        for _ in 0..flips {
            let pos = (rng.next() % 200) as usize;
            buf[pos] = rng.next() as u8;
        }
        let len = (rng.next() % buf.len() as u64) as usize;
        let cut = if round % 3 == 0 {
            &buf[..len]
        } else {
            &buf[..]
        };
        match parse(cut, 1 << 30) {
            Ok(h) => {
                parsed += 1;
                if let Some(b) = &h.backing_file {
                    assert!(b.len() <= 1023);
                }
            }
            Err(ProbeError::NeedMore(n)) => {
                assert!(n > cut.len(), "NeedMore({n}) with {} bytes", cut.len())
            }
            Err(ProbeError::Invalid(_)) => {}
        }
    }
    assert!(
        parsed > 1000,
        "mutations should still often parse ({parsed})"
    );
}
