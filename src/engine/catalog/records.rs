//! What the catalog records: volumes and volume types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::store::{Record, Table};
use crate::error::Result;
use crate::types::Uuid;

/// The type every volume without one gets (Cinder's since Train).
pub const DEFAULT_TYPE: &str = "__DEFAULT__";

/// An enum of Cinder's status words, stored and shown as those words.
macro_rules! statuses {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.name() == s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown status {s:?}")))
            }
        }
    };
}

statuses!(
    /// A volume's status, in Cinder's words.
    VolumeStatus {
        Creating => "creating",
        Available => "available",
        Deleting => "deleting",
        Error => "error",
        ErrorDeleting => "error_deleting",
        Extending => "extending",
        ErrorExtending => "error_extending",
        InUse => "in-use",
        Maintenance => "maintenance",
        AwaitingTransfer => "awaiting-transfer",
        Reverting => "reverting",
        Reserved => "reserved",
        Attaching => "attaching",
        BackingUp => "backing-up",
        RestoringBackup => "restoring-backup",
        ErrorRestoring => "error_restoring",
        Detaching => "detaching",
    }
);

impl VolumeStatus {
    /// A status some work moves the volume out of by itself.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            VolumeStatus::Creating
                | VolumeStatus::Deleting
                | VolumeStatus::Extending
                | VolumeStatus::Reverting
        )
    }
}

/// A named volume: an image of a domain of the pool, its leaf the disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Also the image's UUID.
    pub id: Uuid,
    pub project: String,
    pub user: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// GiB, as Cinder counts.
    pub size: u64,
    pub status: VolumeStatus,
    /// What an extend returns to.
    pub previous_status: Option<VolumeStatus>,
    /// The domain holding it; None when no domain could take it.
    pub domain: Option<Uuid>,
    /// The image's leaf volume.
    pub leaf: Uuid,
    pub type_id: Uuid,
    pub metadata: BTreeMap<String, String>,
    pub bootable: bool,
    pub availability_zone: String,
    pub created_at: String,
    pub updated_at: Option<String>,
    /// The engine task doing the current change.
    pub task: Option<Uuid>,
    /// The size an extend in flight goes to (GiB).
    pub extending_to: Option<u64>,
    /// Why the last change failed, for the user.
    pub fault: Option<String>,
    /// What it was made from: a snapshot, or another volume.
    #[serde(default)]
    pub snapshot_id: Option<Uuid>,
    #[serde(default)]
    pub source_volid: Option<Uuid>,
    /// While it is being filled: the image and volume copied into it.
    #[serde(default)]
    pub copy_from: Option<(Uuid, Uuid)>,
    /// While it is reverted to a snapshot: the snapshot, the leaf thrown
    /// away and the empty one put on the snapshot's layer.
    #[serde(default)]
    pub reverting: Option<(Uuid, Uuid, Uuid)>,
    /// Cinder's `migration_status` of the last move: migrating, success,
    /// error.
    #[serde(default)]
    pub migration_status: Option<String>,
    /// While it moves: the domain it goes to, and its new type (a retype).
    #[serde(default)]
    pub migrating_to: Option<(Uuid, Option<Uuid>)>,
}

impl Record for VolumeRecord {
    const TABLE: &'static str = "volumes";
    const KIND: &'static str = "volume";
    fn id(&self) -> Uuid {
        self.id
    }
}

statuses!(
    /// A snapshot's status, in Cinder's words.
    SnapshotStatus {
        Creating => "creating",
        Available => "available",
        Deleting => "deleting",
        Error => "error",
        ErrorDeleting => "error_deleting",
        BackingUp => "backing-up",
    }
);

impl SnapshotStatus {
    pub fn is_transitional(self) -> bool {
        matches!(self, SnapshotStatus::Creating | SnapshotStatus::Deleting)
    }
}

/// A snapshot: a frozen layer of its volume's chain. Taking it puts a new
/// leaf on the volume; the old leaf, frozen, is the snapshot's layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: Uuid,
    pub volume_id: Uuid,
    pub project: String,
    pub user: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The volume's size when it was taken (GiB).
    pub size: u64,
    pub status: SnapshotStatus,
    /// The frozen volume of the chain holding this point in time.
    pub layer: Uuid,
    /// The volume's new leaf while the snapshot is being taken.
    pub new_leaf: Option<Uuid>,
    /// While it is deleted: the layer above it, merged into it.
    #[serde(default)]
    pub merge_top: Option<Uuid>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub fault: Option<String>,
}

impl Record for SnapshotRecord {
    const TABLE: &'static str = "snapshots";
    const KIND: &'static str = "snapshot";
    fn id(&self) -> Uuid {
        self.id
    }
}

statuses!(
    /// A backup's status, in Cinder's words.
    BackupStatus {
        Creating => "creating",
        Available => "available",
        Deleting => "deleting",
        Error => "error",
        ErrorDeleting => "error_deleting",
        Restoring => "restoring",
    }
);

/// A backup of a volume (or of one of its snapshots) on the backup
/// target, in Cinder's chunked format.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: Uuid,
    pub project: String,
    pub user: String,
    pub volume_id: Uuid,
    pub snapshot_id: Option<Uuid>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub status: BackupStatus,
    /// The volume's size (GiB).
    pub size: u64,
    pub object_count: u64,
    /// Its directory under the backup target, and its files' prefix.
    pub container: String,
    pub prefix: String,
    pub availability_zone: String,
    pub created_at: String,
    pub updated_at: Option<String>,
    /// The point in time it holds.
    pub data_timestamp: String,
    /// The backup it is an increment of.
    pub parent_id: Option<Uuid>,
    pub fail_reason: Option<String>,
    /// The volume of the chain that was read (its top).
    pub layer: Uuid,
    /// The volume whose dirty bitmap, named after this backup, tracks
    /// the changes since.
    pub bitmap_on: Option<Uuid>,
    /// Bytes read from the volume, and bytes of data stored.
    pub read_bytes: u64,
    pub stored_bytes: u64,
    /// While restoring: the volume, and whether it was made for it.
    pub restoring_to: Option<(Uuid, bool)>,
    /// Why the last restore failed (None: it worked).
    #[serde(default)]
    pub restore_error: Option<String>,
}

impl Record for BackupRecord {
    const TABLE: &'static str = "backups";
    const KIND: &'static str = "backup";
    fn id(&self) -> Uuid {
        self.id
    }
}

/// A volume type: extra specs the scheduler matches against domains.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TypeRecord {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    pub extra_specs: BTreeMap<String, String>,
    /// Projects a private type is shared with.
    pub projects: Vec<String>,
    /// The QoS specs associated with it.
    #[serde(default)]
    pub qos_specs_id: Option<Uuid>,
    pub created_at: String,
}

impl Record for TypeRecord {
    const TABLE: &'static str = "types";
    const KIND: &'static str = "volume type";
    fn id(&self) -> Uuid {
        self.id
    }
}

/// A volume on offer to another project: whoever shows the key takes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferRecord {
    pub id: Uuid,
    pub volume_id: Uuid,
    pub name: Option<String>,
    /// The key is never kept: its HMAC-SHA1 under this salt is.
    pub salt: String,
    pub crypt_hash: String,
    pub source_project: String,
    pub no_snapshots: bool,
    pub created_at: String,
}

impl Record for TransferRecord {
    const TABLE: &'static str = "transfers";
    const KIND: &'static str = "transfer";
    fn id(&self) -> Uuid {
        self.id
    }
}

/// A project's own default volume type (Cinder 3.62).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DefaultTypeRecord {
    pub id: Uuid,
    pub project: String,
    pub type_id: Uuid,
}

impl Record for DefaultTypeRecord {
    const TABLE: &'static str = "default-types";
    const KIND: &'static str = "default type";
    fn id(&self) -> Uuid {
        self.id
    }
}

statuses!(
    /// Where an attachment is: reserved for a consumer, connected to its
    /// host, or in use.
    AttachStatus {
        Reserved => "reserved",
        Attaching => "attaching",
        Attached => "attached",
    }
);

/// A volume's attachment to a consumer (a VM) on a host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub id: Uuid,
    pub volume_id: Uuid,
    pub project: String,
    pub instance: Option<String>,
    pub status: AttachStatus,
    /// "rw" or "ro".
    pub mode: String,
    /// The consumer's host description (os-brick's connector).
    pub connector: Option<serde_json::Value>,
    /// The path the volume was prepared at on this host.
    pub device_path: Option<String>,
    /// The iSCSI target it is served through to another host.
    #[serde(default)]
    pub iscsi: Option<IscsiExport>,
    /// The share another host mounts to reach it (NFS, GlusterFS).
    #[serde(default)]
    pub share: Option<ShareExport>,
    pub attached_at: Option<String>,
    pub created_at: String,
}

/// A file domain's volume reached by another host through the domain's
/// own share: os-brick mounts `export` and opens `name` below it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareExport {
    /// os-brick's connector: "nfs" or "glusterfs".
    pub driver: String,
    pub export: String,
    pub name: String,
    /// "qcow2" or "raw".
    pub format: String,
}

/// A volume served to another host as LUN 1 of a tgtd target, behind a
/// CHAP account of its own, to the connector's initiator only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IscsiExport {
    pub tid: u32,
    pub iqn: String,
    pub portal: String,
    pub user: String,
    pub password: String,
}

impl Record for AttachmentRecord {
    const TABLE: &'static str = "attachments";
    const KIND: &'static str = "attachment";
    fn id(&self) -> Uuid {
        self.id
    }
}

/// QoS specs: limits a type's volumes get. Front-end ones are for the
/// consumer of the volume (qemu's throttling, passed at attach time),
/// back-end ones for the storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QosRecord {
    pub id: Uuid,
    pub name: String,
    /// "front-end", "back-end" or "both".
    pub consumer: String,
    pub specs: BTreeMap<String, String>,
    pub created_at: String,
}

impl Record for QosRecord {
    const TABLE: &'static str = "qos";
    const KIND: &'static str = "QoS specs";
    fn id(&self) -> Uuid {
        self.id
    }
}

/// A naive UTC timestamp with microseconds, as Cinder prints them.
pub fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    )
}

/// Creates the default type on a new catalog.
pub(super) fn ensure_default_type(types: &Table<TypeRecord>) -> Result<()> {
    if types.find(|t| t.name == DEFAULT_TYPE).is_some() {
        return Ok(());
    }
    let rec = TypeRecord {
        id: Uuid::new_v4(),
        name: DEFAULT_TYPE.into(),
        description: Some("Default Volume Type".into()),
        is_public: true,
        extra_specs: BTreeMap::new(),
        projects: Vec::new(),
        qos_specs_id: None,
        created_at: timestamp(),
    };
    types.insert(rec, |_| Ok(()))?;
    Ok(())
}
