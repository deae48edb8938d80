//! Domain and volume metadata parsers on arbitrary bytes: never panic, and
//! whatever parses renders back to something that parses the same.
#![no_main]

use cairn::format::domain_md::DomainMetadata;
use cairn::format::volume_md::VolumeMetadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(md) = DomainMetadata::parse(data) {
        if md.iter().all(|(k, v)| !k.contains(['=', '\n', '\r']) && !k.trim().is_empty() && k.trim() == k && cairn::format::domain_md::is_safe_value(v)) {
            assert_eq!(DomainMetadata::parse(&md.render()).unwrap(), md);
        }
    }
    if let Ok(md) = VolumeMetadata::parse(data) {
        if let Ok(bytes) = md.render(5) {
            if cairn::format::domain_md::is_safe_value(&md.description) {
                assert_eq!(VolumeMetadata::parse(&bytes).unwrap(), md);
            }
        }
    }
});
