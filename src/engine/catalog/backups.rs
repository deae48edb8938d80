//! Catalog backups: a volume (or one of its snapshots) copied to the
//! backup target in Cinder's chunked format, restored into a new or an
//! existing volume.
//!
//! The volume is read through a read-only NBD export of its chain. A full
//! backup reads only the ranges that hold data. After each backup of a
//! qcow2 volume, a persistent dirty bitmap named after the backup is put on
//! its leaf; the next incremental backup reads only what that bitmap marks
//! (Cinder reads and hashes the whole volume). When the bitmap cannot be
//! trusted (the leaf changed: a snapshot, a revert; a RAW volume; the
//! bitmap is gone), the incremental backup reads the data and compares
//! block hashes, as Cinder does.
//!
//! Backups run on the SPM. A crash rolls a backup in flight back (its
//! files removed, the backup in `error` with the reason) and finishes a
//! restore or a delete in flight.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::records::{
    timestamp, BackupRecord, BackupStatus, SnapshotStatus, VolumeRecord, VolumeStatus,
};
use super::volumes::{check_metadata, NewVolume};
use super::{wait, Catalog};
use crate::engine::export::nbd::NbdConfig;
use crate::engine::jobs::VolumeRef;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::primitives::chunked_backup::{self as chunked, Compression, Container, Range};
use crate::primitives::nbd::NbdClient;
use crate::primitives::qemu_img;
use crate::types::{Uuid, VolumeFormat};

/// The prefix of the dirty bitmaps backups leave on volumes.
const BITMAP_PREFIX: &str = "cairn-backup-";
/// How long a restore into a new volume waits for it to be created.
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);

/// Where backups are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupTarget {
    /// A directory of this host (Cinder's posix driver).
    Dir(PathBuf),
    /// A file domain of the pool: every host of the pool reaches it.
    Domain(Uuid),
}

impl BackupTarget {
    /// `domain:<uuid>`, or an absolute directory.
    pub fn parse(s: &str) -> std::result::Result<BackupTarget, String> {
        if let Some(id) = s.strip_prefix("domain:") {
            return crate::types::parse_uuid(id)
                .map(BackupTarget::Domain)
                .ok_or_else(|| format!("{id:?} is not a domain UUID"));
        }
        let path = PathBuf::from(s);
        if !path.is_absolute() {
            return Err(format!(
                "the backup directory {s:?} must be an absolute path"
            ));
        }
        Ok(BackupTarget::Dir(path))
    }
}

#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub target: BackupTarget,
    pub compression: Compression,
}

/// A backup to take.
#[derive(Debug, Clone, Default)]
pub struct NewBackup {
    pub volume_id: Uuid,
    pub snapshot_id: Option<Uuid>,
    pub project: String,
    pub user: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub container: Option<String>,
    pub incremental: bool,
    pub force: bool,
}

/// What a restore writes into.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    /// An available volume at least as large as the backup.
    Existing(Uuid),
    /// A volume made for it (its size, when 0, the backup's).
    New(NewVolume),
}

/// Backups running on this host: recovery leaves them alone.
#[derive(Default)]
pub struct Running(Mutex<HashSet<Uuid>>);

/// Marks a backup as worked on here until dropped.
struct Busy<'a>(&'a Running, Uuid);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0 .0.lock().expect("running backups").remove(&self.1);
    }
}

impl Running {
    fn hold(&self, id: Uuid) -> Option<Busy<'_>> {
        self.0
            .lock()
            .expect("running backups")
            .insert(id)
            .then_some(Busy(self, id))
    }

    fn has(&self, id: Uuid) -> bool {
        self.0.lock().expect("running backups").contains(&id)
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::CatalogInvalid {
        kind: "backup",
        reason: reason.into(),
    }
}

fn bitmap_name(backup: Uuid) -> String {
    format!("{BITMAP_PREFIX}{backup}")
}

/// Cinder's default container: `<id[0:2]>/<id[2:4]>/<id>`; a given one
/// is one plain name.
pub(super) fn container_name(id: Uuid, given: Option<String>) -> Result<String> {
    match given {
        None => {
            let s = id.to_string();
            Ok(format!("{}/{}/{s}", &s[0..2], &s[2..4]))
        }
        Some(c)
            if !c.is_empty()
                && c.len() <= 255
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(c)
        }
        Some(c) => Err(invalid(format!(
            "container {c:?} must be one name of letters, digits, '-', '_' and '.'"
        ))),
    }
}

impl Engine {
    fn backup_root(&self) -> Result<PathBuf> {
        match &self.backup_settings.target {
            BackupTarget::Dir(d) => Ok(d.clone()),
            BackupTarget::Domain(sd) => self.domain(*sd)?.backup_dir(),
        }
    }

    pub(super) fn container_of(&self, b: &BackupRecord) -> Result<Container> {
        Ok(Container {
            dir: self.backup_root()?.join(&b.container),
            prefix: b.prefix.clone(),
        })
    }

    pub fn create_catalog_backup(self: &Arc<Self>, req: NewBackup) -> Result<BackupRecord> {
        let cat = self.catalog()?;
        check_metadata(&req.metadata)?;
        // The target must be reachable before anything changes.
        self.backup_root()?;
        let vol = cat.volumes.get(req.volume_id)?;
        match vol.status {
            VolumeStatus::Available => {}
            VolumeStatus::InUse if !req.force => {
                return Err(invalid(
                    "Backing up an in-use volume must use the force flag.",
                ))
            }
            VolumeStatus::InUse => {
                return Err(invalid(
                    "Cairn backs up an in-use volume from a snapshot: take a snapshot and back it up (snapshot_id)",
                ))
            }
            s => {
                return Err(invalid(format!(
                    "Volume to be backed up must be available or in-use, but the current status is \"{}\".",
                    s.name()
                )))
            }
        }
        let snapshot = req
            .snapshot_id
            .map(|s| -> Result<_> {
                let snap = cat.snapshots.get(s)?;
                if snap.volume_id != vol.id {
                    return Err(invalid(format!("snapshot {s} is not a snapshot of volume {}", vol.id)));
                }
                if snap.status != SnapshotStatus::Available {
                    return Err(invalid(format!(
                        "Snapshot to be backed up must be available, but the current status is \"{}\".",
                        snap.status.name()
                    )));
                }
                Ok(snap)
            })
            .transpose()?;
        let parent = if req.incremental {
            let latest = cat
                .backups
                .all()
                .into_iter()
                .filter(|b| b.volume_id == vol.id && b.status == BackupStatus::Available)
                .max_by(|a, b| a.data_timestamp.cmp(&b.data_timestamp));
            Some(
                latest
                    .ok_or_else(|| invalid("No backups available to do an incremental backup."))?,
            )
        } else {
            None
        };
        let id = Uuid::new_v4();
        let now = timestamp();
        let stamp: String = now.chars().filter(char::is_ascii_digit).take(14).collect();
        let rec = BackupRecord {
            id,
            project: req.project,
            user: req.user,
            volume_id: vol.id,
            snapshot_id: req.snapshot_id,
            name: req.name,
            description: req.description,
            metadata: req.metadata,
            status: BackupStatus::Creating,
            size: snapshot.as_ref().map_or(vol.size, |s| s.size),
            object_count: 0,
            container: container_name(id, req.container)?,
            prefix: format!("volume_{}_{stamp}_backup_{id}", vol.id),
            availability_zone: vol.availability_zone.clone(),
            created_at: now.clone(),
            updated_at: None,
            data_timestamp: now,
            parent_id: parent.as_ref().map(|p| p.id),
            fail_reason: None,
            layer: snapshot.as_ref().map_or(vol.leaf, |s| s.layer),
            bitmap_on: None,
            read_bytes: 0,
            stored_bytes: 0,
            restoring_to: None,
            restore_error: None,
        };
        // The backup first: a crash before the volume moves leaves a
        // `creating` backup for recovery to end, never a stuck volume.
        let quota = cat.claim_quota(
            &rec.project,
            super::Demand {
                backups: 1,
                backup_gigabytes: rec.size as i64,
                ..Default::default()
            },
        )?;
        let rec = cat.backups.insert(rec, |_| Ok(()))?;
        drop(quota);
        let moved = match rec.snapshot_id {
            Some(s) => cat
                .snapshots
                .update(s, |snap| {
                    if snap.status != SnapshotStatus::Available {
                        return Err(invalid("the snapshot changed meanwhile; try again"));
                    }
                    snap.status = SnapshotStatus::BackingUp;
                    Ok(())
                })
                .map(drop),
            None => cat
                .volumes
                .update(vol.id, |v| {
                    if v.status != VolumeStatus::Available {
                        return Err(invalid("the volume changed meanwhile; try again"));
                    }
                    v.status = VolumeStatus::BackingUp;
                    v.updated_at = Some(timestamp());
                    Ok(())
                })
                .map(drop),
        };
        if let Err(e) = moved {
            let _ = cat.backups.remove(id, |_| Ok(()));
            return Err(e);
        }
        self.spawn_backup_work(&cat, id, Self::run_backup);
        Ok(rec)
    }

    /// Runs `work` for backup `id` on a thread of its own, marked running.
    fn spawn_backup_work(
        self: &Arc<Self>,
        cat: &Arc<Catalog>,
        id: Uuid,
        work: fn(&Arc<Engine>, &Arc<Catalog>, Uuid),
    ) {
        let (engine, cat) = (self.clone(), cat.clone());
        std::thread::spawn(move || {
            // One piece of work per backup at a time: a delete waits for
            // the backup being made to notice it.
            let _busy = loop {
                match engine.catalogs.backups.hold(id) {
                    Some(busy) => break busy,
                    None => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            work(&engine, &cat, id)
        });
    }

    fn run_backup(self: &Arc<Self>, cat: &Arc<Catalog>, id: Uuid) {
        let Ok(rec) = cat.backups.get(id) else { return };
        if rec.status != BackupStatus::Creating {
            return;
        }
        let started = Instant::now();
        let outcome = self.take_backup(cat, &rec);
        let outcome = outcome.and_then(|done| {
            crate::failpoint::hit("catalog.backup.written")?;
            Ok(done)
        });
        if let Err(e) = &outcome {
            if let Ok(c) = self.container_of(&rec) {
                if let Err(e) = c.remove() {
                    tracing::warn!(backup = %id, error = %e, "cannot remove a failed backup's files");
                }
            }
            tracing::warn!(backup = %id, error = %e, "backup failed");
        }
        let _ = cat.backups.update(id, |b| {
            if b.status == BackupStatus::Deleting {
                // Force-deleted while it was made: the delete comes next.
                return Ok(());
            }
            match &outcome {
                Ok((stats, bitmap_on)) => {
                    b.status = BackupStatus::Available;
                    b.object_count = stats.objects;
                    b.read_bytes = stats.read;
                    b.stored_bytes = stats.stored;
                    b.bitmap_on = *bitmap_on;
                }
                Err(e) => {
                    b.status = BackupStatus::Error;
                    b.fail_reason = Some(e.to_string());
                }
            }
            b.updated_at = Some(timestamp());
            Ok(())
        });
        release_source(cat, &rec);
        if let Ok((stats, _)) = outcome {
            tracing::info!(backup = %id, volume = %rec.volume_id, incremental = rec.parent_id.is_some(),
                objects = stats.objects, read = stats.read, stored = stats.stored,
                seconds = started.elapsed().as_secs_f64(), "backup done");
        }
    }

    /// Reads the volume and writes the backup; then moves the change
    /// tracking on to it. Returns what was written and where the backup's
    /// bitmap is.
    fn take_backup(
        self: &Arc<Self>,
        cat: &Catalog,
        rec: &BackupRecord,
    ) -> Result<(chunked::Stats, Option<Uuid>)> {
        let vol = cat.volumes.get(rec.volume_id)?;
        let sd = vol
            .domain
            .ok_or_else(|| invalid("the volume has no storage"))?;
        let parent = rec.parent_id.map(|p| cat.backups.get(p)).transpose()?;
        let container = self.container_of(rec)?;
        let baseline = match &parent {
            Some(p) => {
                let (_, hashes) = chunked::read_index(&self.container_of(p)?)
                    .map_err(|e| Error::io("cannot read the parent backup", e))?;
                if hashes.chunk_size != chunked::SHA_BLOCK {
                    return Err(invalid(
                        "the parent backup hashes blocks of another size; do a full backup",
                    ));
                }
                Some(hashes.sha256s)
            }
            None => None,
        };
        // The parent's bitmap tells what changed if it is on this layer
        // and has seen every write since.
        let layer = VolumeRef {
            sd,
            img: vol.id,
            vol: rec.layer,
            generation: None,
        };
        let tracked = parent
            .as_ref()
            .filter(|p| p.bitmap_on == Some(rec.layer))
            .map(|p| bitmap_name(p.id))
            .filter(|name| {
                self.domain(sd)
                    .and_then(|dom| crate::engine::jobs::volume::qcow2_info(&*dom, &layer))
                    .is_ok_and(|info| info.bitmap_is_complete(name))
            });
        let cfg = |bitmap: Option<String>| NbdConfig {
            sd,
            img: vol.id,
            vol: rec.layer,
            readonly: true,
            discard: false,
            detect_zeroes: false,
            backing_chain: true,
            bitmap,
        };
        let server = Uuid::new_v4();
        if rec.parent_id.is_some() && tracked.is_none() {
            tracing::info!(backup = %rec.id, "no complete bitmap since the parent backup; comparing the whole volume's hashes");
        }
        let url = self.start_nbd_server(server, cfg(tracked.clone()))?;
        let written = (|| -> Result<chunked::Stats> {
            let socket = url.strip_prefix("nbd:unix:").expect("a unix socket URL");
            let mut disk = NbdClient::connect(std::path::Path::new(socket))
                .map_err(|e| Error::io("cannot connect to the volume's export", e))?;
            let plan = read_plan(socket, disk.size(), tracked.as_deref(), baseline.is_some())?;
            tracing::info!(backup = %rec.id, volume = %vol.id, bitmap = tracked.as_deref().unwrap_or("none"),
                to_read = plan.iter().map(|r| match r { Range::Read(_, l) => *l, Range::Zero(..) => 0 }).sum::<u64>(),
                "backup started");
            let header = chunked::Header {
                backup_id: rec.id.to_string(),
                volume_id: vol.id.to_string(),
                name: rec.name.clone(),
                description: rec.description.clone(),
                created_at: rec.created_at.clone(),
                parent_id: rec.parent_id.map(|p| p.to_string()),
                volume_meta: volume_meta(&vol),
            };
            let mut last_log = Instant::now();
            chunked::write_backup(
                &mut disk,
                &container,
                &header,
                &plan,
                baseline,
                self.backup_settings.compression,
                |done, total| {
                    if last_log.elapsed() > Duration::from_secs(10) {
                        last_log = Instant::now();
                        tracing::info!(backup = %rec.id, done, total, "backing up");
                    }
                },
                || {
                    cat.backups
                        .get(rec.id)
                        .is_ok_and(|b| b.status != BackupStatus::Creating)
                },
            )
            .map_err(|e| Error::io("cannot write the backup", e))
        })();
        self.stop_nbd_server(server);
        let stats = written?;
        // A snapshot's layer is frozen; only the volume's leaf is tracked.
        let bitmap_on = if rec.snapshot_id.is_none() {
            self.track_changes(sd, vol.id, rec.layer, rec.id)
        } else {
            None
        };
        Ok((stats, bitmap_on))
    }

    /// Puts this backup's bitmap on the volume's leaf and removes older
    /// backups' ones; None if the leaf cannot hold one (a RAW volume).
    fn track_changes(
        self: &Arc<Self>,
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        backup: Uuid,
    ) -> Option<Uuid> {
        let target = VolumeRef {
            sd,
            img,
            vol,
            generation: None,
        };
        let dom = self.domain(sd).ok()?;
        let md = crate::engine::volume::read_in_image(&*dom, img, vol).ok()?;
        if md.format != VolumeFormat::Cow {
            return None;
        }
        self.prune_bitmaps(target, Some(backup));
        let job = Uuid::new_v4();
        match self
            .add_bitmap(job, target, bitmap_name(backup))
            .and_then(|()| wait(&self.jobs, job))
        {
            Ok(()) => Some(vol),
            Err(e) => {
                tracing::warn!(backup = %backup, error = %e, "cannot add the backup's bitmap; the next incremental backup reads the whole volume");
                None
            }
        }
    }

    /// Removes backups' bitmaps from a volume, but `keep`'s.
    fn prune_bitmaps(self: &Arc<Self>, target: VolumeRef, keep: Option<Uuid>) {
        let Ok(dom) = self.domain(target.sd) else {
            return;
        };
        let Ok(info) = crate::engine::jobs::volume::qcow2_info(&*dom, &target) else {
            return;
        };
        let keep = keep.map(bitmap_name);
        for name in info.bitmap_names() {
            if !name.starts_with(BITMAP_PREFIX) || Some(&name) == keep.as_ref() {
                continue;
            }
            let job = Uuid::new_v4();
            if let Err(e) = self
                .remove_bitmap(job, target, name.clone())
                .and_then(|()| wait(&self.jobs, job))
            {
                tracing::warn!(bitmap = %name, error = %e, "cannot remove an old backup bitmap");
            }
        }
    }

    pub fn update_catalog_backup(
        self: &Arc<Self>,
        id: Uuid,
        name: Option<String>,
        description: Option<String>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<BackupRecord> {
        if let Some(m) = &metadata {
            check_metadata(m)?;
        }
        self.catalog()?.backups.update(id, |b| {
            if name.is_some() {
                b.name = name;
            }
            if description.is_some() {
                b.description = description;
            }
            if let Some(m) = metadata {
                b.metadata = m;
            }
            b.updated_at = Some(timestamp());
            Ok(())
        })
    }

    /// An administrator's repair of a backup's status (available or
    /// error); nothing on the target changes.
    pub fn reset_catalog_backup_status(
        self: &Arc<Self>,
        id: Uuid,
        status: BackupStatus,
    ) -> Result<BackupRecord> {
        let cat = self.catalog()?;
        if self.catalogs.backups.has(id) {
            return Err(invalid(
                "the backup is being worked on; it ends by itself (no reset needed)",
            ));
        }
        cat.backups.update(id, |b| {
            b.status = status;
            b.updated_at = Some(timestamp());
            Ok(())
        })
    }

    /// Deletes a backup; `force` also cancels one being made.
    pub fn delete_catalog_backup(self: &Arc<Self>, id: Uuid, force: bool) -> Result<BackupRecord> {
        let cat = self.catalog()?;
        if cat.backups.find(|b| b.parent_id == Some(id)).is_some() {
            return Err(invalid("Incremental backups exist for this backup."));
        }
        let rec = cat.backups.update(id, |b| {
            let deletable = matches!(b.status, BackupStatus::Available | BackupStatus::Error)
                || (force && b.status == BackupStatus::Creating);
            if !deletable {
                return Err(invalid(format!(
                    "Backup status must be available or error{}, but the current status is \"{}\".",
                    if force { " or creating" } else { "" },
                    b.status.name()
                )));
            }
            b.status = BackupStatus::Deleting;
            b.updated_at = Some(timestamp());
            Ok(())
        })?;
        // A backup being made notices and deletes itself.
        self.spawn_backup_work(&cat, id, Self::run_delete);
        Ok(rec)
    }

    fn run_delete(self: &Arc<Self>, cat: &Arc<Catalog>, id: Uuid) {
        let Ok(rec) = cat.backups.get(id) else { return };
        if rec.status != BackupStatus::Deleting {
            return;
        }
        let removed = self.container_of(&rec).and_then(|c| {
            c.remove()
                .map_err(|e| Error::io("cannot remove the backup's files", e))
        });
        match removed {
            Ok(()) => {
                if let (Some(layer), Ok(vol)) = (rec.bitmap_on, cat.volumes.get(rec.volume_id)) {
                    if let (Some(sd), VolumeStatus::Available) = (vol.domain, vol.status) {
                        let target = VolumeRef {
                            sd,
                            img: vol.id,
                            vol: layer,
                            generation: None,
                        };
                        let job = Uuid::new_v4();
                        let _ = self
                            .remove_bitmap(job, target, bitmap_name(id))
                            .and_then(|()| wait(&self.jobs, job));
                    }
                }
                let _ = cat.backups.remove(id, |_| Ok(()));
                tracing::info!(backup = %id, "backup deleted");
            }
            Err(e) => {
                tracing::warn!(backup = %id, error = %e, "backup delete failed");
                let _ = cat.backups.update(id, |b| {
                    b.status = BackupStatus::ErrorDeleting;
                    b.fail_reason = Some(e.to_string());
                    Ok(())
                });
            }
        }
    }

    /// Restores a backup into a volume. Returns the backup and the volume.
    pub fn restore_catalog_backup(
        self: &Arc<Self>,
        id: Uuid,
        into: RestoreTarget,
    ) -> Result<(BackupRecord, VolumeRecord)> {
        let cat = self.catalog()?;
        let b = cat.backups.get(id)?;
        if b.status != BackupStatus::Available {
            return Err(invalid(format!(
                "Backup status must be available, but the current status is \"{}\".",
                b.status.name()
            )));
        }
        // Every backup of the chain must be readable before a byte changes.
        for link in self.backup_chain(&cat, &b)? {
            let c = self.container_of(&link)?;
            let (md, _) =
                chunked::read_index(&c).map_err(|e| Error::io("cannot read the backup", e))?;
            chunked::check_objects_exist(&c, &md)
                .map_err(|e| Error::io("the backup is incomplete", e))?;
        }
        let (target, fresh) = match into {
            RestoreTarget::Existing(v) => {
                let v = cat.volumes.get(v)?;
                if v.status != VolumeStatus::Available {
                    return Err(invalid(format!(
                        "Volume to be restored to must be available, but the current status is \"{}\".",
                        v.status.name()
                    )));
                }
                if v.size < b.size {
                    return Err(invalid(format!(
                        "volume size {} is too small to restore backup of size {}.",
                        v.size, b.size
                    )));
                }
                (v.id, false)
            }
            RestoreTarget::New(mut req) => {
                if req.size == 0 {
                    req.size = b.size;
                } else if req.size < b.size {
                    return Err(invalid(format!(
                        "volume size {} is too small to restore backup of size {}.",
                        req.size, b.size
                    )));
                }
                if req.source.is_some() {
                    return Err(invalid(
                        "a volume restored from a backup has no other source",
                    ));
                }
                req.name = Some(req.name.unwrap_or_else(|| format!("restore_backup_{id}")));
                let made = self.create_catalog_volume(req)?;
                let v = cat
                    .volumes
                    .wait_for(made.id, Instant::now() + CREATE_TIMEOUT, |v| {
                        !v.status.is_transitional()
                    })
                    .ok_or_else(|| invalid("the new volume went away"))?;
                if v.status != VolumeStatus::Available {
                    return Err(invalid(format!(
                        "the volume to restore into could not be created: {}",
                        v.fault.unwrap_or_else(|| v.status.name().into())
                    )));
                }
                (v.id, true)
            }
        };
        let b = cat.backups.update(id, |b| {
            if b.status != BackupStatus::Available {
                return Err(invalid("the backup changed meanwhile; try again"));
            }
            b.status = BackupStatus::Restoring;
            b.restoring_to = Some((target, fresh));
            Ok(())
        })?;
        let moved = cat.volumes.update(target, |v| {
            if v.status != VolumeStatus::Available {
                return Err(invalid("the volume changed meanwhile; try again"));
            }
            v.status = VolumeStatus::RestoringBackup;
            v.updated_at = Some(timestamp());
            Ok(())
        });
        let v = match moved {
            Ok(v) => v,
            Err(e) => {
                let _ = cat.backups.update(id, |b| {
                    b.status = BackupStatus::Available;
                    b.restoring_to = None;
                    Ok(())
                });
                return Err(e);
            }
        };
        self.spawn_backup_work(&cat, id, Self::run_restore);
        Ok((b, v))
    }

    /// The backups a restore applies, the full one first.
    fn backup_chain(&self, cat: &Catalog, b: &BackupRecord) -> Result<Vec<BackupRecord>> {
        let mut chain = vec![b.clone()];
        while let Some(p) = chain.last().expect("not empty").parent_id {
            if chain.len() > 10_000 || chain.iter().any(|c| c.id == p) {
                return Err(invalid("the backup's parents form a loop"));
            }
            chain.push(cat.backups.get(p)?);
        }
        chain.reverse();
        Ok(chain)
    }

    fn run_restore(self: &Arc<Self>, cat: &Arc<Catalog>, id: Uuid) {
        let Ok(b) = cat.backups.get(id) else { return };
        let (BackupStatus::Restoring, Some((target, fresh))) = (b.status, b.restoring_to) else {
            return;
        };
        let started = Instant::now();
        let outcome = self.restore_into(cat, &b, target);
        match &outcome {
            Ok(bytes) => tracing::info!(backup = %id, volume = %target, bytes,
                seconds = started.elapsed().as_secs_f64(), "restore done"),
            Err(e) => tracing::warn!(backup = %id, volume = %target, error = %e, "restore failed"),
        }
        let _ = cat.volumes.update(target, |v| {
            match &outcome {
                Ok(_) => v.status = VolumeStatus::Available,
                Err(e) => {
                    v.status = if fresh {
                        VolumeStatus::Error
                    } else {
                        VolumeStatus::ErrorRestoring
                    };
                    v.fault = Some(format!("restoring backup {id} failed: {e}"));
                }
            }
            v.updated_at = Some(timestamp());
            Ok(())
        });
        let _ = cat.backups.update(id, |b| {
            b.status = BackupStatus::Available;
            b.restoring_to = None;
            b.restore_error = outcome
                .as_ref()
                .err()
                .map(|e| format!("into volume {target}: {e}"));
            Ok(())
        });
    }

    fn restore_into(
        self: &Arc<Self>,
        cat: &Catalog,
        b: &BackupRecord,
        target: Uuid,
    ) -> Result<u64> {
        let vol = cat.volumes.get(target)?;
        let sd = vol
            .domain
            .ok_or_else(|| invalid("the volume has no storage"))?;
        let chain = self.backup_chain(cat, b)?;
        let server = Uuid::new_v4();
        let url = self.start_nbd_server(
            server,
            NbdConfig {
                sd,
                img: vol.id,
                vol: vol.leaf,
                readonly: false,
                discard: false,
                detect_zeroes: false,
                backing_chain: true,
                bitmap: None,
            },
        )?;
        let restored = (|| -> Result<u64> {
            let socket = url.strip_prefix("nbd:unix:").expect("a unix socket URL");
            let mut disk = NbdClient::connect(std::path::Path::new(socket))
                .map_err(|e| Error::io("cannot connect to the volume's export", e))?;
            // The old contents go (or what an interrupted try wrote): zero
            // clusters on qcow2, a zeroed range on RAW, its space kept.
            disk.write_zeroes(0, disk.size())
                .map_err(|e| Error::io("cannot clear the volume", e))?;
            crate::failpoint::hit("catalog.restore.cleared")?;
            let mut bytes = 0;
            for link in &chain {
                let c = self.container_of(link)?;
                let (md, hashes) =
                    chunked::read_index(&c).map_err(|e| Error::io("cannot read the backup", e))?;
                bytes += chunked::restore_objects(
                    &mut disk,
                    &c,
                    &md,
                    &hashes,
                    |_, _| {},
                    || {
                        cat.backups
                            .get(b.id)
                            .is_ok_and(|r| r.status != BackupStatus::Restoring)
                    },
                )
                .map_err(|e| Error::io(&format!("cannot restore backup {}", link.id), e))?;
            }
            Ok(bytes)
        })();
        self.stop_nbd_server(server);
        restored
    }

    /// Ends what a crash or an SPM change interrupted: a backup being made
    /// is rolled back, a restore or a delete runs again.
    pub(super) fn recover_backups(self: &Arc<Self>, cat: &Arc<Catalog>) {
        for b in cat.backups.all() {
            if self.catalogs.backups.has(b.id) {
                continue;
            }
            match b.status {
                BackupStatus::Creating => {
                    if let Ok(c) = self.container_of(&b) {
                        let _ = c.remove();
                    }
                    let _ = cat.backups.update(b.id, |r| {
                        r.status = BackupStatus::Error;
                        r.fail_reason = Some("cairnd stopped while making the backup; its partial files were removed".into());
                        Ok(())
                    });
                    release_source(cat, &b);
                    tracing::info!(backup = %b.id, "rolled back an interrupted backup");
                }
                BackupStatus::Restoring => {
                    tracing::info!(backup = %b.id, "restarting an interrupted restore");
                    self.spawn_backup_work(cat, b.id, Self::run_restore);
                }
                BackupStatus::Deleting => self.spawn_backup_work(cat, b.id, Self::run_delete),
                _ => {}
            }
        }
    }
}

/// Moves the backed-up volume or snapshot back to available.
fn release_source(cat: &Catalog, b: &BackupRecord) {
    match b.snapshot_id {
        Some(s) => {
            let _ = cat.snapshots.update(s, |snap| {
                if snap.status == SnapshotStatus::BackingUp {
                    snap.status = SnapshotStatus::Available;
                }
                Ok(())
            });
        }
        None => {
            let _ = cat.volumes.update(b.volume_id, |v| {
                if v.status == VolumeStatus::BackingUp {
                    v.status = VolumeStatus::Available;
                    v.updated_at = Some(timestamp());
                }
                Ok(())
            });
        }
    }
}

/// What Cinder keeps of the volume in a backup (`volume_meta`).
fn volume_meta(v: &VolumeRecord) -> String {
    serde_json::json!({
        "version": 2,
        "volume-base-metadata": {
            "display_name": v.name, "display_description": v.description,
            "size": v.size, "bootable": v.bootable,
        },
        "volume-metadata": v.metadata,
    })
    .to_string()
}

/// Which blocks a backup reads: what the bitmap marks dirty, or where the
/// chain holds data (the rest known zero), from `qemu-img map` on the
/// export.
fn read_plan(
    socket: &str,
    size: u64,
    bitmap: Option<&str>,
    incremental: bool,
) -> Result<Vec<Range>> {
    let mut spec = serde_json::json!({"driver": "nbd", "server": {"type": "unix", "path": socket}});
    if let Some(b) = bitmap {
        spec["x-dirty-bitmap"] = format!("qemu:dirty-bitmap:{b}").into();
    }
    let map = qemu_img::map(&spec).map_err(|e| {
        Error::io(
            "cannot map the volume",
            std::io::Error::other(e.to_string()),
        )
    })?;
    // Per block: 0 untouched, 1 zero, 2 read.
    let bs = chunked::SHA_BLOCK;
    let mut kind = vec![0u8; size.div_ceil(bs) as usize];
    for e in &map {
        // Through x-dirty-bitmap, qemu reports dirty ranges as data: false.
        let want = match (bitmap.is_some(), e.data) {
            (true, false) => 2,
            (true, true) => continue,
            (false, true) => 2,
            (false, false) => 1,
        };
        let end = e.start.saturating_add(e.length).min(size);
        if e.start >= end {
            continue;
        }
        for k in &mut kind[(e.start / bs) as usize..end.div_ceil(bs) as usize] {
            *k = (*k).max(want);
        }
    }
    // A full backup's zero blocks match its zero baseline: nothing to do.
    if !incremental {
        for k in &mut kind {
            if *k == 1 {
                *k = 0;
            }
        }
    }
    let mut plan = Vec::new();
    let mut i = 0;
    while i < kind.len() {
        let k = kind[i];
        let mut j = i + 1;
        while j < kind.len() && kind[j] == k {
            j += 1;
        }
        let (start, len) = (i as u64 * bs, (j as u64 * bs).min(size) - i as u64 * bs);
        match k {
            1 => plan.push(Range::Zero(start, len)),
            2 => plan.push(Range::Read(start, len)),
            _ => {}
        }
        i = j;
    }
    Ok(plan)
}
