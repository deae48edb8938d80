//! A quick, deterministic fuzz pass over the native qcow2 header probe: run
//! in every test suite. The coverage-guided target is fuzz/fuzz_targets/probe.rs.

use cairn::primitives::probe::{parse, ProbeError};

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
    // A fixed seed keeps every run (and every failure) reproducible.
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let seeds = [seed_image(false), seed_image(true)];
    let mut parsed = 0;
    for round in 0..50_000 {
        let mut buf = seeds[round % 2].clone();
        let flips = rng.usize(1..=8);
        for _ in 0..flips {
            let pos = rng.usize(..200);
            buf[pos] = rng.u8(..);
        }
        let len = rng.usize(..buf.len());
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
