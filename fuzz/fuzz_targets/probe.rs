//! The qcow2/raw header probe on arbitrary bytes: never panics, and a
//! NeedMore answer always asks for more than it was given.
#![no_main]

use cairn::primitives::probe::{parse, ProbeError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file_len = data.len() as u64 + 4096;
    if let Err(ProbeError::NeedMore(n)) = parse(data, file_len) {
        assert!(n > data.len());
    }
});
