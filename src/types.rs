//! Vocabulary shared by every layer: UUIDs and the VDSM enumerations.
//!
//! Each enumeration knows its schema name, the historical integer id older
//! clients send, and the spelling VDSM writes into on-storage metadata.

use std::fmt;

pub use uuid::Uuid;

/// VDSM's "no parent / none" UUID.
pub const BLANK_UUID: Uuid = Uuid::nil();

/// Parses a UUID in the canonical hyphenated form only (36 characters).
///
/// Other spellings the `uuid` crate accepts (braces, `urn:`, no hyphens) are
/// refused: UUIDs become directory names on shared storage, so there must be
/// exactly one spelling for each.
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    let u = Uuid::try_parse(s).ok()?;
    // Lower-case only: another host must find the same directory name.
    (u.hyphenated().to_string() == s).then_some(u)
}

/// Declares a VDSM enumeration: variant => (schema name, integer id, aliases).
macro_rules! vdsm_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => ($text:literal, $id:expr $(, $alias:literal)*)),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used by the API schema.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The historical integer id (None where VDSM never had one).
            pub fn id(self) -> Option<i64> {
                match self { $($name::$variant => $id),+ }
            }

            /// Parses a schema name or alias (case-sensitive, as VDSM).
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($text $(| $alias)* => Some($name::$variant),)+
                    _ => None,
                }
            }

            pub fn from_id(n: i64) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.id() == Some(n))
            }

            /// Accepts a name, or an integer id given as a number or a string.
            pub fn from_json(v: &serde_json::Value) -> Option<Self> {
                match v {
                    serde_json::Value::String(s) => Self::from_name(s)
                        .or_else(|| s.parse::<i64>().ok().and_then(Self::from_id)),
                    serde_json::Value::Number(n) => n.as_i64().and_then(Self::from_id),
                    _ => None,
                }
            }

            /// A human list of accepted values, for error messages.
            pub fn expected() -> String {
                Self::ALL.iter().map(|v| match v.id() {
                    Some(id) => format!("{} ({})", v.name(), id),
                    None => v.name().to_string(),
                }).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::from_name(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{s:?} is not a {}; expected one of {}",
                        stringify!($name),
                        Self::expected()
                    ))
                })
            }
        }
    };
}

vdsm_enum!(
    /// Storage domain (and connection) types.
    DomainType {
        Nfs => ("NFS", Some(1)),
        Fcp => ("FCP", Some(2)),
        Iscsi => ("ISCSI", Some(3)),
        LocalFs => ("LOCALFS", Some(4)),
        Cifs => ("CIFS", Some(5)),
        SharedFs => ("SHAREDFS", Some(6), "POSIXFS"),
        GlusterFs => ("GLUSTERFS", Some(7)),
    }
);

impl DomainType {
    /// The spelling VDSM writes into domain metadata (`TYPE=`).
    pub fn metadata_name(self) -> &'static str {
        match self {
            DomainType::SharedFs => "POSIXFS",
            other => other.name(),
        }
    }

    pub fn is_file(self) -> bool {
        !matches!(self, DomainType::Fcp | DomainType::Iscsi)
    }
}

vdsm_enum!(
    /// `Image.move`'s operation (VDSM's COPY_OP and MOVE_OP).
    ImageMoveOperation {
        Copy => ("COPY", Some(1)),
        Move => ("MOVE", Some(2)),
    }
);

vdsm_enum!(
    /// What a storage domain holds.
    DomainClass {
        Data => ("Data", Some(1)),
        Iso => ("Iso", Some(2)),
        Backup => ("Backup", Some(3)),
    }
);

vdsm_enum!(
    DomainRole {
        Master => ("Master", None),
        Regular => ("Regular", None),
    }
);

vdsm_enum!(
    /// Volume data format.
    VolumeFormat {
        Cow => ("COW", Some(4)),
        Raw => ("RAW", Some(5)),
    }
);

impl VolumeFormat {
    /// The qemu-img format name.
    pub fn qemu_name(self) -> &'static str {
        match self {
            VolumeFormat::Cow => "qcow2",
            VolumeFormat::Raw => "raw",
        }
    }
}

vdsm_enum!(
    /// Volume allocation policy (`TYPE=` in volume metadata).
    VolumeAllocation {
        Preallocated => ("PREALLOCATED", Some(1)),
        Sparse => ("SPARSE", Some(2)),
    }
);

vdsm_enum!(
    /// A volume's place in its chain (`VOLTYPE=`).
    VolumeRole {
        Shared => ("SHARED", Some(6)),
        Internal => ("INTERNAL", Some(7)),
        Leaf => ("LEAF", Some(8)),
    }
);

vdsm_enum!(
    VolumeLegality {
        Legal => ("LEGAL", None),
        Illegal => ("ILLEGAL", None),
        Fake => ("FAKE", None),
    }
);

vdsm_enum!(
    /// Advisory content type of a volume (`DISKTYPE=`).
    /// "2" and "1" are the legacy spellings of DATA found on old domains.
    DiskType {
        Data => ("DATA", None, "2", "1"),
        Isof => ("ISOF", None),
        Memd => ("MEMD", None),
        Memm => ("MEMM", None),
        Ovfs => ("OVFS", None),
        Hevd => ("HEVD", None),
        Hesd => ("HESD", None),
        Hemd => ("HEMD", None),
        Heci => ("HECI", None),
        Scrd => ("SCRD", None),
    }
);

/// Domain format versions Cairn creates.
pub const CREATABLE_DOMAIN_VERSIONS: &[u32] = &[4, 5];
/// Domain format versions Cairn can read.
pub const READABLE_DOMAIN_VERSIONS: &[u32] = &[3, 4, 5];
pub const DEFAULT_DOMAIN_VERSION: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uuid_only_canonical() {
        assert!(parse_uuid("5c84a9d2-be25-49a9-bcb2-2f0f5b9066c0").is_some());
        assert!(parse_uuid("5C84A9D2-BE25-49A9-BCB2-2F0F5B9066C0").is_none());
        assert!(parse_uuid("5c84a9d2be2549a9bcb22f0f5b9066c0").is_none());
        assert!(parse_uuid("{5c84a9d2-be25-49a9-bcb2-2f0f5b9066c0}").is_none());
        assert!(parse_uuid("../../etc/passwd").is_none());
        assert!(parse_uuid("").is_none());
    }

    #[test]
    fn enums_round_trip_through_serde_by_name() {
        for f in VolumeFormat::ALL {
            let text = serde_json::to_string(f).unwrap();
            assert_eq!(text, format!("\"{}\"", f.name()));
            assert_eq!(serde_json::from_str::<VolumeFormat>(&text).unwrap(), *f);
        }
        let err = serde_json::from_str::<VolumeFormat>("\"qcow2\"").unwrap_err();
        assert!(err.to_string().contains("COW (4)"), "{err}");
    }

    #[test]
    fn enums_accept_names_and_ids() {
        assert_eq!(
            DomainType::from_json(&json!("LOCALFS")),
            Some(DomainType::LocalFs)
        );
        assert_eq!(DomainType::from_json(&json!(4)), Some(DomainType::LocalFs));
        assert_eq!(
            DomainType::from_json(&json!("4")),
            Some(DomainType::LocalFs)
        );
        assert_eq!(
            DomainType::from_json(&json!("POSIXFS")),
            Some(DomainType::SharedFs)
        );
        assert_eq!(DomainType::from_json(&json!(6)), Some(DomainType::SharedFs));
        assert_eq!(DomainType::from_json(&json!("localfs")), None);
        assert_eq!(DomainType::from_json(&json!(99)), None);
        assert_eq!(VolumeFormat::from_json(&json!(4)), Some(VolumeFormat::Cow));
        assert_eq!(
            VolumeFormat::from_json(&json!("RAW")),
            Some(VolumeFormat::Raw)
        );
        assert_eq!(
            VolumeAllocation::from_json(&json!(2)),
            Some(VolumeAllocation::Sparse)
        );
        assert_eq!(VolumeRole::from_json(&json!(8)), Some(VolumeRole::Leaf));
        assert_eq!(DomainClass::from_json(&json!(1)), Some(DomainClass::Data));
        assert_eq!(DiskType::from_name("2"), Some(DiskType::Data));
        assert_eq!(VolumeLegality::from_json(&json!(1)), None);
    }
}
