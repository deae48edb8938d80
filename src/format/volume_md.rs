//! Volume metadata (`<volUUID>.meta` on file domains, a 512-byte slot on block
//! domains): sorted `KEY=value` lines terminated by `EOF`.
//!
//! Version 5 stores the capacity in bytes (`CAP`) and a sequence (`SEQ`);
//! versions 3 and 4 store `SIZE` in 512-byte blocks and `MTIME=0`.

use crate::types::{DiskType, Uuid, VolumeAllocation, VolumeFormat, VolumeLegality, VolumeRole};

/// Metadata must fit one 512-byte block.
pub const METADATA_SIZE: usize = 512;
pub const DESCRIPTION_SIZE: usize = 210;
pub const MAX_GENERATION: u32 = 999;
pub const MAX_SEQUENCE: u64 = u32::MAX as u64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VolumeMetadataError {
    #[error("volume metadata was cleared (NONE)")]
    Cleared,
    #[error("volume metadata is invalid: {0}")]
    Invalid(String),
    #[error("volume metadata is {0} bytes, more than {METADATA_SIZE}")]
    Overflow(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMetadata {
    pub domain: Uuid,
    pub image: Uuid,
    pub parent: Uuid,
    /// Virtual size in bytes.
    pub capacity: u64,
    pub format: VolumeFormat,
    pub allocation: VolumeAllocation,
    pub role: VolumeRole,
    pub disk_type: DiskType,
    pub description: String,
    pub legality: VolumeLegality,
    pub ctime: u64,
    pub generation: u32,
    pub sequence: u64,
}

impl VolumeMetadata {
    /// Serializes for a domain of `version`.
    pub fn render(&self, version: u32) -> Result<Vec<u8>, VolumeMetadataError> {
        self.render_keys(version < 5, version >= 5)
    }

    /// Both versions' size keys (`SIZE`, `MTIME` and `CAP`, no `SEQ`): what
    /// a file domain's volumes hold while the domain goes from version 4 to
    /// 5, readable as either.
    pub fn render_for_upgrade(&self) -> Result<Vec<u8>, VolumeMetadataError> {
        self.render_keys(true, true)
    }

    fn render_keys(&self, legacy: bool, v5: bool) -> Result<Vec<u8>, VolumeMetadataError> {
        let mut lines: Vec<(&str, String)> = vec![
            ("CTIME", self.ctime.to_string()),
            ("DESCRIPTION", self.description.clone()),
            ("DISKTYPE", self.disk_type.name().to_string()),
            ("DOMAIN", self.domain.to_string()),
            ("FORMAT", self.format.name().to_string()),
            ("GEN", self.generation.to_string()),
            ("IMAGE", self.image.to_string()),
            ("LEGALITY", self.legality.name().to_string()),
            ("PUUID", self.parent.to_string()),
            ("TYPE", self.allocation.name().to_string()),
            ("VOLTYPE", self.role.name().to_string()),
        ];
        if v5 {
            lines.push(("CAP", self.capacity.to_string()));
            if !legacy {
                lines.push(("SEQ", self.sequence.to_string()));
            }
        }
        if legacy {
            lines.push(("MTIME", "0".to_string()));
            lines.push(("SIZE", (self.capacity / 512).to_string()));
        }
        lines.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = String::new();
        for (k, v) in lines {
            out.push_str(k);
            out.push('=');
            out.push_str(&v);
            out.push('\n');
        }
        out.push_str("EOF\n");
        if out.len() > METADATA_SIZE {
            return Err(VolumeMetadataError::Overflow(out.len()));
        }
        Ok(out.into_bytes())
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, VolumeMetadataError> {
        let mut md = std::collections::HashMap::new();
        for raw in bytes.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(raw) else {
                continue;
            };
            if line.starts_with("EOF") {
                break;
            }
            if line.trim() == "NONE" {
                return Err(VolumeMetadataError::Cleared);
            }
            if let Some((k, v)) = line.split_once('=') {
                md.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        let get = |k: &str| md.get(k).map(String::as_str).ok_or_else(|| missing(k));
        let uuid = |k: &str| -> Result<Uuid, VolumeMetadataError> {
            let v = get(k)?;
            crate::types::parse_uuid(v).ok_or_else(|| invalid(k, v))
        };
        let num = |k: &str| -> Result<u64, VolumeMetadataError> {
            let v = get(k)?;
            v.parse::<u64>().map_err(|_| invalid(k, v))
        };
        let capacity = match md.get("CAP") {
            Some(_) => num("CAP")?,
            None => num("SIZE")?
                .checked_mul(512)
                .ok_or_else(|| invalid("SIZE", get("SIZE").unwrap_or_default()))?,
        };
        let generation = match md.get("GEN") {
            Some(_) => num("GEN")? as u32,
            None => 0,
        };
        let sequence = match md.get("SEQ") {
            Some(_) => num("SEQ")?,
            None => 0,
        };
        let enum_of = |k: &str| -> Result<&str, VolumeMetadataError> { get(k) };
        Ok(VolumeMetadata {
            domain: uuid("DOMAIN")?,
            image: uuid("IMAGE")?,
            parent: uuid("PUUID")?,
            capacity,
            format: VolumeFormat::from_name(enum_of("FORMAT")?)
                .ok_or_else(|| invalid("FORMAT", get("FORMAT").unwrap_or_default()))?,
            allocation: VolumeAllocation::from_name(enum_of("TYPE")?)
                .ok_or_else(|| invalid("TYPE", get("TYPE").unwrap_or_default()))?,
            role: VolumeRole::from_name(enum_of("VOLTYPE")?)
                .ok_or_else(|| invalid("VOLTYPE", get("VOLTYPE").unwrap_or_default()))?,
            disk_type: DiskType::from_name(enum_of("DISKTYPE")?)
                .ok_or_else(|| invalid("DISKTYPE", get("DISKTYPE").unwrap_or_default()))?,
            description: md.get("DESCRIPTION").cloned().unwrap_or_default(),
            legality: VolumeLegality::from_name(enum_of("LEGALITY")?)
                .ok_or_else(|| invalid("LEGALITY", get("LEGALITY").unwrap_or_default()))?,
            ctime: num("CTIME")?,
            generation,
            sequence,
        })
    }
}

/// Truncates a description to the bytes VDSM keeps, on a character boundary.
pub fn truncate_description(desc: &str) -> String {
    if desc.len() <= DESCRIPTION_SIZE {
        return desc.to_string();
    }
    let mut end = DESCRIPTION_SIZE;
    while !desc.is_char_boundary(end) {
        end -= 1;
    }
    desc[..end].to_string()
}

fn missing(key: &str) -> VolumeMetadataError {
    VolumeMetadataError::Invalid(format!("required key {key} is missing"))
}

fn invalid(key: &str, value: &str) -> VolumeMetadataError {
    VolumeMetadataError::Invalid(format!("invalid {key} value {value:?}"))
}

/// A volume's metadata in its on-storage form for a domain `version`.
pub fn metadata_bytes(
    vol: Uuid,
    md: &VolumeMetadata,
    version: u32,
) -> crate::error::Result<Vec<u8>> {
    md.render(version)
        .map_err(|e| crate::error::Error::VolumeMetadataWrite {
            vol,
            reason: e.to_string(),
        })
}

/// The same as text, for task records.
pub fn metadata_text(vol: Uuid, md: &VolumeMetadata, version: u32) -> crate::error::Result<String> {
    Ok(String::from_utf8(metadata_bytes(vol, md, version)?).expect("volume metadata is text"))
}

/// Checks a COW volume's header against its metadata: qcow2, the same
/// virtual size, no external data file, and a backing file that is exactly
/// its parent in the same directory (or none for a base). Returns why not.
pub fn header_disagreement(
    md: &VolumeMetadata,
    header: &std::io::Result<crate::primitives::probe::ImageHeader>,
) -> Option<String> {
    let h = match header {
        Ok(h) => h,
        Err(e) => return Some(format!("cannot read the image header: {e}")),
    };
    if h.format != crate::primitives::probe::ImageFormat::Qcow2 {
        return Some("metadata says COW but the data is not qcow2".into());
    }
    if h.virtual_size != md.capacity {
        return Some(format!(
            "qcow2 virtual size {} differs from capacity {}",
            h.virtual_size, md.capacity
        ));
    }
    if let Some(df) = &h.data_file {
        return Some(format!("qcow2 names an external data file {df:?}"));
    }
    let expected = (md.parent != crate::types::BLANK_UUID).then(|| md.parent.to_string());
    if h.backing_file != expected {
        return Some(format!(
            "qcow2 backing file {:?} does not match parent {:?}",
            h.backing_file.as_deref().unwrap_or("none"),
            expected.as_deref().unwrap_or("none")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VolumeMetadata {
        VolumeMetadata {
            domain: "b9c4821e-e9c0-4dd4-8393-c59b82c9cd29".parse().unwrap(),
            image: "87f5f391-5b83-4e7f-9072-7f50266559c3".parse().unwrap(),
            parent: Uuid::nil(),
            capacity: 10 << 30,
            format: VolumeFormat::Cow,
            allocation: VolumeAllocation::Sparse,
            role: VolumeRole::Leaf,
            disk_type: DiskType::Data,
            description: "volly".into(),
            legality: VolumeLegality::Legal,
            ctime: 1_700_000_000,
            generation: 3,
            sequence: 1,
        }
    }

    #[test]
    fn v5_layout() {
        let text = String::from_utf8(sample().render(5).unwrap()).unwrap();
        let expected = "CAP=10737418240\nCTIME=1700000000\nDESCRIPTION=volly\nDISKTYPE=DATA\n\
            DOMAIN=b9c4821e-e9c0-4dd4-8393-c59b82c9cd29\nFORMAT=COW\nGEN=3\n\
            IMAGE=87f5f391-5b83-4e7f-9072-7f50266559c3\nLEGALITY=LEGAL\n\
            PUUID=00000000-0000-0000-0000-000000000000\nSEQ=1\nTYPE=SPARSE\nVOLTYPE=LEAF\nEOF\n";
        assert_eq!(text, expected);
        assert_eq!(VolumeMetadata::parse(text.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn upgrade_layout_reads_as_either_version() {
        let md = sample();
        let text = String::from_utf8(md.render_for_upgrade().unwrap()).unwrap();
        for key in ["CAP=", "SIZE=", "MTIME=0"] {
            assert!(text.contains(key), "{text}");
        }
        assert!(!text.contains("SEQ="), "{text}");
        assert_eq!(
            VolumeMetadata::parse(text.as_bytes()).unwrap().capacity,
            md.capacity
        );
    }

    #[test]
    fn v4_layout_uses_blocks() {
        let text = String::from_utf8(sample().render(4).unwrap()).unwrap();
        assert!(text.contains("SIZE=20971520\n"));
        assert!(text.contains("MTIME=0\n"));
        assert!(!text.contains("CAP="));
        let parsed = VolumeMetadata::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.capacity, 10 << 30);
        assert_eq!(parsed.sequence, 0);
    }

    #[test]
    fn longest_metadata_fits_a_block() {
        let mut md = sample();
        md.description = "x".repeat(DESCRIPTION_SIZE);
        md.capacity = u64::MAX;
        md.ctime = u64::MAX;
        md.generation = MAX_GENERATION;
        md.sequence = MAX_SEQUENCE;
        assert!(md.render(5).unwrap().len() <= METADATA_SIZE);
    }

    #[test]
    fn cleared_and_invalid() {
        assert_eq!(
            VolumeMetadata::parse(b"NONE\n"),
            Err(VolumeMetadataError::Cleared)
        );
        assert!(matches!(
            VolumeMetadata::parse(b"FORMAT=COW\nEOF\n"),
            Err(VolumeMetadataError::Invalid(_))
        ));
        let bad = String::from_utf8(sample().render(5).unwrap())
            .unwrap()
            .replace("COW", "QED");
        assert!(VolumeMetadata::parse(bad.as_bytes()).is_err());
    }

    #[test]
    fn description_truncation_respects_utf8() {
        let d = "\u{e9}".repeat(200);
        let t = truncate_description(&d);
        assert!(t.len() <= DESCRIPTION_SIZE);
        assert!(t.chars().all(|c| c == '\u{e9}'));
    }
}
