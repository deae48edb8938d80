//! Per-project quotas, as Cinder counts them: volumes, gigabytes (volumes
//! and snapshots), snapshots, backups, backup gigabytes, and the largest
//! volume. Unlimited (-1) unless an administrator sets a limit; a change
//! that would pass one is refused before anything is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};

use serde::{Deserialize, Serialize};

use super::records::{BackupStatus, VolumeStatus};
use super::store::Record;
use super::Catalog;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::types::Uuid;

/// The quotas, in Cinder's names.
pub const RESOURCES: [&str; 6] = [
    "volumes",
    "gigabytes",
    "snapshots",
    "backups",
    "backup_gigabytes",
    "per_volume_gigabytes",
];

/// A project's limits that differ from the defaults (unlimited).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub id: Uuid,
    pub project: String,
    pub limits: BTreeMap<String, i64>,
}

impl Record for QuotaRecord {
    const TABLE: &'static str = "quotas";
    const KIND: &'static str = "quota";
    fn id(&self) -> Uuid {
        self.id
    }
}

/// What a change would add to a project's usage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Demand {
    pub volumes: i64,
    pub gigabytes: i64,
    pub snapshots: i64,
    pub backups: i64,
    pub backup_gigabytes: i64,
    /// The size of the one volume made or grown (GiB).
    pub volume_size: Option<i64>,
}

/// A count of GiB as quotas hold it (saturating: no size wraps negative).
pub(super) fn gib(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Catalog {
    pub fn quota_limits(&self, project: &str) -> BTreeMap<String, i64> {
        let mut limits: BTreeMap<String, i64> =
            RESOURCES.iter().map(|r| (r.to_string(), -1)).collect();
        if let Some(q) = self.quotas.find(|q| q.project == project) {
            limits.extend(q.limits);
        }
        limits
    }

    pub fn quota_usage(&self, project: &str) -> BTreeMap<String, i64> {
        let vols: Vec<_> = self
            .volumes
            .all()
            .into_iter()
            .filter(|v| v.project == project && v.status != VolumeStatus::Deleting)
            .collect();
        let snaps: Vec<_> = self
            .snapshots
            .all()
            .into_iter()
            .filter(|s| s.project == project)
            .collect();
        let backups: Vec<_> = self
            .backups
            .all()
            .into_iter()
            .filter(|b| b.project == project && b.status != BackupStatus::Deleting)
            .collect();
        BTreeMap::from([
            ("volumes".to_string(), vols.len() as i64),
            (
                "gigabytes".to_string(),
                gib(vols.iter().map(|v| v.size).sum::<u64>()
                    + snaps.iter().map(|s| s.size).sum::<u64>()),
            ),
            ("snapshots".to_string(), snaps.len() as i64),
            ("backups".to_string(), backups.len() as i64),
            (
                "backup_gigabytes".to_string(),
                gib(backups.iter().map(|b| b.size).sum()),
            ),
            ("per_volume_gigabytes".to_string(), 0),
        ])
    }

    /// Checks `demand` against the project's quotas. The guard keeps other
    /// quota checks out until the caller has recorded its change.
    pub(super) fn claim_quota(&self, project: &str, demand: Demand) -> Result<MutexGuard<'_, ()>> {
        let guard = self.quota_lock.lock().expect("quota lock");
        let limits = self.quota_limits(project);
        let limit = |k: &str| limits.get(k).copied().unwrap_or(-1);
        if let Some(size) = demand.volume_size {
            let max = limit("per_volume_gigabytes");
            if max >= 0 && size > max {
                return Err(Error::CatalogOverQuota(format!(
                    "VolumeSizeExceedsLimit: Requested volume size {size}G is larger than maximum allowed limit {max}G."
                )));
            }
        }
        let used = self.quota_usage(project);
        for (name, want) in [
            ("volumes", demand.volumes),
            ("gigabytes", demand.gigabytes),
            ("snapshots", demand.snapshots),
            ("backups", demand.backups),
            ("backup_gigabytes", demand.backup_gigabytes),
        ] {
            let (max, have) = (limit(name), used[name]);
            if want <= 0 || max < 0 || have + want <= max {
                continue;
            }
            return Err(Error::CatalogOverQuota(match name {
                "gigabytes" => format!("VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested {want}G, quota is {max}G and {have}G has been consumed."),
                "backup_gigabytes" => format!("VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup gigabytes quota. Requested {want}G, quota is {max}G and {have}G has been consumed."),
                "volumes" => format!("VolumeLimitExceeded: Maximum number of volumes allowed ({max}) exceeded for quota 'volumes'."),
                "snapshots" => format!("SnapshotLimitExceeded: Maximum number of snapshots allowed ({max}) exceeded"),
                _ => format!("BackupLimitExceeded: Maximum number of backups allowed ({max}) exceeded"),
            }));
        }
        Ok(guard)
    }
}

impl Engine {
    /// Sets some of a project's limits (-1: unlimited); returns them all.
    pub fn set_catalog_quotas(
        self: &Arc<Self>,
        project: &str,
        set: BTreeMap<String, i64>,
    ) -> Result<BTreeMap<String, i64>> {
        if let Some((k, _)) = set.iter().find(|(k, _)| !RESOURCES.contains(&k.as_str())) {
            return Err(Error::CatalogInvalid {
                kind: "input",
                reason: format!("Bad key(s) in quota set: {k}"),
            });
        }
        if let Some((k, v)) = set.iter().find(|(_, v)| **v < -1) {
            return Err(Error::CatalogInvalid {
                kind: "input",
                reason: format!("Quota limit {v} for {k} must be -1 or greater."),
            });
        }
        let cat = self.catalog()?;
        let _guard = cat.quota_lock.lock().expect("quota lock");
        match cat.quotas.find(|q| q.project == project) {
            Some(q) => {
                cat.quotas.update(q.id, |q| {
                    q.limits.extend(set);
                    Ok(())
                })?;
            }
            None => {
                cat.quotas.insert(
                    QuotaRecord {
                        id: Uuid::new_v4(),
                        project: project.to_string(),
                        limits: set,
                    },
                    |rows| match rows.values().any(|q| q.project == project) {
                        true => Err(Error::CatalogConflict(format!(
                            "quotas of {project} were set meanwhile"
                        ))),
                        false => Ok(()),
                    },
                )?;
            }
        }
        Ok(cat.quota_limits(project))
    }

    /// Puts a project back on the default (unlimited) quotas.
    pub fn reset_catalog_quotas(self: &Arc<Self>, project: &str) -> Result<()> {
        let cat = self.catalog()?;
        if let Some(q) = cat.quotas.find(|q| q.project == project) {
            cat.quotas.remove(q.id, |_| Ok(()))?;
        }
        Ok(())
    }
}
