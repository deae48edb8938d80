//! A backup's record carried out of one catalog and into another, as
//! Cinder's `export_record` and `import_record` do: when a catalog is
//! lost, or another pool (or a Cinder with the posix driver) reaches the
//! same backup target, the record makes its files a backup again.
//!
//! The record is Cinder's: its backup object's fields as JSON, in base64.
//! An imported record is untrusted. Its names must stay inside the
//! target, and its files must be there and agree with it (their own
//! backup id, parent and size) before anything is recorded.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::backups::container_name;
use super::records::{timestamp, BackupRecord, BackupStatus};
use super::volumes::{check_metadata, check_text};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::primitives::chunked_backup as chunked;
use crate::types::Uuid;

/// The backup service Cairn's format is: Cinder's posix driver.
pub const BACKUP_SERVICE: &str = "cinder.backup.drivers.posix.PosixBackupDriver";
/// The other names Cinder gives that service.
const SERVICE_ALIASES: [&str; 2] = ["cinder.backup.drivers.posix", "cinder.backup.drivers.nfs"];
/// Far more than any record; bounds what an import decodes.
const MAX_URL: usize = 256 << 10;
const GIB: u64 = 1 << 30;

/// A backup record in Cinder's field names.
#[derive(Debug, Serialize, Deserialize)]
struct CinderRecord {
    id: Uuid,
    volume_id: Uuid,
    size: u64,
    container: String,
    /// The chunked drivers' object prefix.
    service_metadata: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    parent_id: Option<Uuid>,
    #[serde(default)]
    snapshot_id: Option<Uuid>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    display_description: Option<String>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    data_timestamp: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    // Written for Cinder's importer; Cairn reads its own from the files.
    #[serde(default, skip_deserializing)]
    status: String,
    #[serde(default, skip_deserializing)]
    object_count: u64,
    #[serde(default, skip_deserializing)]
    project_id: String,
    #[serde(default, skip_deserializing)]
    user_id: String,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::CatalogInvalid {
        kind: "backup record",
        reason: reason.into(),
    }
}

/// One plain file name: no separator, not `.` or `..`, not hidden.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Engine {
    /// The record of an available backup: the service that reads it and
    /// the record itself, encoded.
    pub fn export_catalog_backup(self: &Arc<Self>, id: Uuid) -> Result<(&'static str, String)> {
        let b = self.catalog()?.backups.get(id)?;
        if b.status != BackupStatus::Available {
            return Err(invalid(format!(
                "Backup status must be available and not {}.",
                b.status.name()
            )));
        }
        let record = CinderRecord {
            id: b.id,
            volume_id: b.volume_id,
            size: b.size,
            container: b.container,
            service_metadata: b.prefix,
            service: Some(BACKUP_SERVICE.into()),
            parent_id: b.parent_id,
            snapshot_id: b.snapshot_id,
            display_name: b.name,
            display_description: b.description,
            availability_zone: Some(b.availability_zone),
            created_at: Some(b.created_at),
            data_timestamp: Some(b.data_timestamp),
            metadata: b.metadata,
            status: b.status.name().into(),
            object_count: b.object_count,
            project_id: b.project,
            user_id: b.user,
        };
        let json = serde_json::to_vec(&record).expect("a record serializes");
        Ok((
            BACKUP_SERVICE,
            base64::engine::general_purpose::STANDARD.encode(json),
        ))
    }

    /// Makes the backup a record describes one of `project`'s again,
    /// once its files on the backup target are found to match it.
    pub fn import_catalog_backup(
        self: &Arc<Self>,
        service: &str,
        url: &str,
        project: &str,
        user: &str,
    ) -> Result<BackupRecord> {
        let cat = self.catalog()?;
        if service != BACKUP_SERVICE && !SERVICE_ALIASES.contains(&service) {
            return Err(invalid(format!(
                "Backup service {service} is not supported: Cairn reads {BACKUP_SERVICE}'s backups."
            )));
        }
        if url.len() > MAX_URL {
            return Err(invalid("the backup URL is too long"));
        }
        // Python's older encoder folds lines.
        let compact: String = url.split_ascii_whitespace().collect();
        let json = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| invalid("Can't decode backup record."))?;
        let r: CinderRecord = serde_json::from_slice(&json)
            .map_err(|e| invalid(format!("Can't parse backup record: {e}")))?;
        let exists = || invalid("Backup already exists in database.");
        if cat.backups.get(r.id).is_ok() {
            return Err(exists());
        }
        if r.size == 0 || r.size > 1 << 20 {
            return Err(invalid(format!("size {} GiB is not a volume's", r.size)));
        }
        if !plain_name(&r.container) && r.container != container_name(r.id, None)? {
            return Err(invalid(format!(
                "container {:?} is neither one plain name nor the backup's default",
                r.container
            )));
        }
        if !plain_name(&r.service_metadata) {
            return Err(invalid(format!(
                "object prefix {:?} is not one plain name",
                r.service_metadata
            )));
        }
        check_text("name", &r.display_name)?;
        check_text("description", &r.display_description)?;
        check_text("availability zone", &r.availability_zone)?;
        check_text("created_at", &r.created_at)?;
        check_text("data_timestamp", &r.data_timestamp)?;
        check_metadata(&r.metadata)?;
        if let Some(p) = r.parent_id {
            let parent = cat.backups.get(p).map_err(|_| {
                invalid(format!(
                    "its parent backup {p} is not here: import the parent first"
                ))
            })?;
            if parent.size != r.size {
                return Err(invalid(format!("its parent backup {p} is of another size")));
            }
        }
        let now = timestamp();
        let created_at = r.created_at.clone().unwrap_or_else(|| now.clone());
        let mut rec = BackupRecord {
            id: r.id,
            project: project.to_string(),
            user: user.to_string(),
            volume_id: r.volume_id,
            snapshot_id: r.snapshot_id,
            name: r.display_name,
            description: r.display_description,
            metadata: r.metadata,
            status: BackupStatus::Available,
            size: r.size,
            object_count: 0,
            container: r.container,
            prefix: r.service_metadata,
            availability_zone: r
                .availability_zone
                .unwrap_or_else(|| super::AVAILABILITY_ZONE.into()),
            data_timestamp: r.data_timestamp.unwrap_or_else(|| created_at.clone()),
            created_at,
            updated_at: Some(now),
            parent_id: r.parent_id,
            fail_reason: None,
            // No layer of this pool was read, and no bitmap follows it:
            // an incremental backup on top of it reads and compares all.
            layer: Uuid::nil(),
            bitmap_on: None,
            read_bytes: 0,
            stored_bytes: 0,
            restoring_to: None,
            restore_error: None,
        };
        rec.object_count = self.check_backup_files(&rec)?;
        let quota = cat.claim_quota(
            project,
            super::Demand {
                backups: 1,
                backup_gigabytes: super::quotas::gib(rec.size),
                ..Default::default()
            },
        )?;
        let rec = cat.backups.insert(rec, |rows| {
            if rows.contains_key(&r.id) {
                return Err(exists());
            }
            Ok(())
        })?;
        drop(quota);
        tracing::info!(backup = %rec.id, container = %rec.container, project, "backup record imported");
        Ok(rec)
    }

    /// Checks that a backup's files are there and are the record's: its
    /// id and parent in their headers, a hash per block of its size,
    /// every object present. Returns the number of objects.
    fn check_backup_files(&self, rec: &BackupRecord) -> Result<u64> {
        let c = self.container_of(rec)?;
        let unreadable =
            |e: std::io::Error| invalid(format!("the backup's files cannot be read: {e}"));
        let (md, hashes) = chunked::read_index(&c).map_err(unreadable)?;
        let mismatch = |what: &str| {
            invalid(format!(
                "the files at {}/{} are not this backup's: {what}",
                rec.container, rec.prefix
            ))
        };
        if md.header.backup_id != rec.id.to_string()
            || hashes.header.backup_id != md.header.backup_id
        {
            return Err(mismatch("another backup id"));
        }
        if md.parent_id != rec.parent_id.map(|p| p.to_string()) {
            return Err(mismatch("another parent"));
        }
        if hashes.sha256s.len() as u64 != (rec.size * GIB).div_ceil(hashes.chunk_size) {
            return Err(mismatch("another size"));
        }
        chunked::check_objects_exist(&c, &md).map_err(unreadable)?;
        Ok(md.objects.iter().map(|o| o.len() as u64).sum())
    }
}
