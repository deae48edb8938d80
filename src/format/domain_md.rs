//! Domain metadata: sorted `KEY=VALUE` lines sealed by `_SHA_CKSUM`.
//!
//! The seal is SHA-1 over the sorted lines without their newlines, each
//! encoded as ASCII with non-ASCII characters written as XML character
//! references (`&#NNN;`), which is how VDSM computes it. A file without a
//! checksum line is accepted as VDSM does (it predates the seal).

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};

pub const CHECKSUM_KEY: &str = "_SHA_CKSUM";

/// Largest metadata file accepted; VDSM reads the first block only on block
/// domains and real files are a few hundred bytes.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainMetadataError {
    #[error("metadata seal is broken: declared checksum {declared}, computed {computed}")]
    SealBroken { declared: String, computed: String },
    #[error("metadata is not valid UTF-8")]
    NotUtf8,
    #[error("metadata is larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge,
    #[error("metadata is empty")]
    Empty,
    #[error("metadata entry {0:?} is malformed")]
    Malformed(String),
}

/// Parsed, verified domain metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainMetadata(BTreeMap<String, String>);

impl DomainMetadata {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, DomainMetadataError> {
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(DomainMetadataError::TooLarge);
        }
        // Block domains pad the metadata block with NULs.
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = std::str::from_utf8(&bytes[..end]).map_err(|_| DomainMetadataError::NotUtf8)?;
        let pairs = text.lines().filter_map(|line| {
            let (k, v) = line.trim_end_matches('\r').split_once('=')?;
            Some((k.trim().to_string(), v.to_string()))
        });
        Self::from_pairs(pairs)
    }

    /// Metadata from `KEY=VALUE` pairs (the seal among them, if any),
    /// wherever they are kept (a file's lines, a VG's tags).
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, DomainMetadataError> {
        let mut map: BTreeMap<String, String> = pairs.into_iter().collect();
        let declared = map.remove(CHECKSUM_KEY);
        if map.is_empty() {
            return Err(DomainMetadataError::Empty);
        }
        let md = DomainMetadata(map);
        if let Some(declared) = declared {
            let computed = md.checksum();
            if declared != computed {
                return Err(DomainMetadataError::SealBroken { declared, computed });
            }
        }
        Ok(md)
    }

    /// The sealed file contents.
    pub fn render(&self) -> Vec<u8> {
        let mut out = String::new();
        for (k, v) in &self.0 {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        }
        out.push_str(CHECKSUM_KEY);
        out.push('=');
        out.push_str(&self.checksum());
        out.push('\n');
        out.into_bytes()
    }

    pub fn checksum(&self) -> String {
        let mut h = Sha1::new();
        for (k, v) in &self.0 {
            h.update(xml_escape_non_ascii(k).as_bytes());
            h.update(b"=");
            h.update(xml_escape_non_ascii(v).as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.0.insert(key.to_string(), value.into());
    }

    pub fn remove(&mut self, key: &str) {
        self.0.remove(key);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn xml_escape_non_ascii(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii() {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("&#{};", c as u32));
        }
    }
    out.into()
}

/// Metadata values may not contain line breaks or NULs: they would forge keys.
pub fn is_safe_value(s: &str) -> bool {
    !s.contains(['\n', '\r', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_seal() {
        let mut md = DomainMetadata::new();
        md.set("VERSION", "5");
        md.set("SDUUID", "b9c4821e-e9c0-4dd4-8393-c59b82c9cd29");
        md.set("DESCRIPTION", "my local domain");
        let bytes = md.render();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("DESCRIPTION=my local domain\nSDUUID="));
        assert!(text.contains("\n_SHA_CKSUM="));
        assert_eq!(DomainMetadata::parse(&bytes).unwrap(), md);
    }

    #[test]
    fn checksum_matches_vdsm_reference() {
        // sha1("A=1B=2") computed independently.
        let mut md = DomainMetadata::new();
        md.set("B", "2");
        md.set("A", "1");
        assert_eq!(md.checksum(), sha_hex(b"A=1B=2"));
        // Non-ASCII is hashed as XML character references.
        let mut md = DomainMetadata::new();
        md.set("DESCRIPTION", "d\u{e9}");
        assert_eq!(md.checksum(), sha_hex(b"DESCRIPTION=d&#233;"));
    }

    fn sha_hex(b: &[u8]) -> String {
        Sha1::digest(b).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn broken_seal_is_detected() {
        let mut md = DomainMetadata::new();
        md.set("VERSION", "5");
        let text = String::from_utf8(md.render())
            .unwrap()
            .replace("VERSION=5", "VERSION=4");
        assert!(matches!(
            DomainMetadata::parse(text.as_bytes()),
            Err(DomainMetadataError::SealBroken { .. })
        ));
    }

    #[test]
    fn unsealed_and_padded_metadata_is_accepted() {
        let md = DomainMetadata::parse(b"VERSION=3\nROLE=Regular\n\0\0\0\0").unwrap();
        assert_eq!(md.get("VERSION"), Some("3"));
        assert_eq!(
            DomainMetadata::parse(b"\n\n"),
            Err(DomainMetadataError::Empty)
        );
    }
}
