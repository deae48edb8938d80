//! The pool's catalog: named volumes owned by projects, volume types and
//! their extra specs, as a Cinder-style service keeps them, but on the
//! pool's master domain instead of a database: the SPM opens it, writes it
//! crash-safely, and a new SPM (or a new master) carries it on.
//!
//! A catalog volume is an image; its leaf is the disk. Every status change
//! is a compare-and-swap on the record, and the engine task doing the work
//! is named in it, so after a crash the next SPM finishes or rolls back
//! what was in flight (`recover`) instead of leaving it for an operator.

mod attachments;
mod backup_records;
mod backups;
mod migration;
mod qos;
mod quotas;
mod records;
mod scheduler;
mod snapshots;
mod store;
mod transfers;
mod volumes;

use std::path::Path;
use std::sync::{Arc, Mutex};

pub use backup_records::BACKUP_SERVICE;
pub use backups::{BackupSettings, BackupTarget, NewBackup, RestoreTarget};
pub use quotas::{Demand, QuotaRecord, RESOURCES as QUOTA_RESOURCES};
pub use records::{
    timestamp, AttachStatus, AttachmentRecord, BackupRecord, BackupStatus, DefaultTypeRecord,
    IscsiExport, QosRecord, SnapshotRecord, SnapshotStatus, TransferRecord, TypeRecord,
    VolumeRecord, VolumeStatus, DEFAULT_TYPE,
};
pub use scheduler::{BackendPool, Placement, AVAILABILITY_ZONE, MAX_OVER_SUBSCRIPTION};
pub use snapshots::NewSnapshot;
pub use store::{Record, Table};
pub use volumes::{NewType, NewVolume, Source, TypeChange};

use crate::error::{Error, Result};
use crate::types::Uuid;

use super::Engine;

/// The open catalog of the connected pool.
pub struct Catalog {
    pub pool: Uuid,
    /// The master it was read from: a new master or SPM reopens it.
    key: (Uuid, Uuid, i64),
    pub volumes: Table<VolumeRecord>,
    pub snapshots: Table<SnapshotRecord>,
    pub types: Table<TypeRecord>,
    pub qos: Table<QosRecord>,
    pub transfers: Table<TransferRecord>,
    pub default_types: Table<DefaultTypeRecord>,
    pub attachments: Table<AttachmentRecord>,
    pub backups: Table<BackupRecord>,
    pub quotas: Table<QuotaRecord>,
    /// Held from a quota check until the change is recorded.
    quota_lock: Mutex<()>,
}

impl Catalog {
    fn open(pool: Uuid, key: (Uuid, Uuid, i64), dir: &Path) -> Result<Catalog> {
        store::ensure_dir(dir)?;
        let cat = Catalog {
            pool,
            key,
            volumes: Table::open(dir)?,
            snapshots: Table::open(dir)?,
            types: Table::open(dir)?,
            qos: Table::open(dir)?,
            transfers: Table::open(dir)?,
            default_types: Table::open(dir)?,
            attachments: Table::open(dir)?,
            backups: Table::open(dir)?,
            quotas: Table::open(dir)?,
            quota_lock: Mutex::new(()),
        };
        records::ensure_default_type(&cat.types)?;
        Ok(cat)
    }
}

/// The engine's handle on the catalog.
#[derive(Default)]
pub struct Catalogs {
    open: Mutex<Option<Arc<Catalog>>>,
    backups: backups::Running,
}

impl Engine {
    /// The catalog of the connected pool; this host must be its SPM (the
    /// only writer of the master domain).
    pub fn catalog(self: &Arc<Self>) -> Result<Arc<Catalog>> {
        let pool_id = self.connected_pool_id().ok_or(Error::CatalogUnavailable(
            "this host is connected to no pool".into(),
        ))?;
        let pool = self.require_spm(pool_id).map_err(|e| match e {
            Error::NotSpm(_) => Error::CatalogUnavailable(
                "this host is not the pool's SPM; the catalog is served by the SPM".into(),
            ),
            e => e,
        })?;
        let key = (pool.id, pool.master_sd, pool.master_version);
        let mut open = self.catalogs.open.lock().expect("catalog");
        if let Some(cat) = open.as_ref().filter(|c| c.key == key) {
            return Ok(cat.clone());
        }
        let dir = self.domain(pool.master_sd)?.master_dir()?.join("catalog");
        let cat = Arc::new(Catalog::open(pool.id, key, &dir)?);
        *open = Some(cat.clone());
        drop(open);
        self.recover_catalog(&cat);
        self.recover_snapshots(&cat);
        self.recover_transfers(&cat);
        self.recover_backups(&cat);
        Ok(cat)
    }
}

/// This host's name: the host part of Cinder's `host@backend#pool`, and
/// what a local attachment's connector must name.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// How often a waiter looks at a task or job: at first often (most
/// catalog changes take milliseconds), then less (a copy takes minutes).
const POLL_FIRST: std::time::Duration = std::time::Duration::from_millis(1);
const POLL_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// How a task or job ended: None if this host does not know it (the pool
/// went away under it; the next SPM's recovery takes over).
pub(super) fn outcome(
    tm: &crate::engine::TaskManager,
    id: Uuid,
) -> Option<std::result::Result<(), String>> {
    let mut pause = POLL_FIRST;
    loop {
        match tm.status(id) {
            Ok(st) if st.state == crate::engine::TaskState::Finished => {
                return Some(match st.error {
                    None => Ok(()),
                    Some(e) => Err(e.to_string()),
                })
            }
            Ok(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(POLL_MAX);
            }
            Err(_) => return None,
        }
    }
}

/// Waits for a task or job; its failure as a catalog error.
pub(super) fn wait(tm: &crate::engine::TaskManager, id: Uuid) -> Result<()> {
    match outcome(tm, id) {
        Some(Ok(())) => Ok(()),
        Some(Err(why)) => Err(Error::CatalogInvalid {
            kind: "volume",
            reason: why,
        }),
        None => Err(Error::CatalogUnavailable(
            "the pool went away under the change; the next SPM resumes it".into(),
        )),
    }
}
