//! Catalog volumes and types: each change moves the record's status by a
//! compare-and-swap, starts the engine task doing the work, and a finisher
//! moves the status on when the task ends. `recover` does the finishers'
//! work for changes a crash interrupted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::records::{timestamp, TypeRecord, VolumeRecord, VolumeStatus, DEFAULT_TYPE};
use super::scheduler::{self, BackendPool, AVAILABILITY_ZONE};
use super::Catalog;
use crate::engine::image::DeleteImage;
use crate::engine::volume::CreateVolume;
use crate::engine::{Engine, TaskState};
use crate::error::{Error, Result};
use crate::types::{DiskType, Uuid, VolumeAllocation, VolumeFormat, BLANK_UUID};

const GIB: u64 = 1 << 30;
/// Longest name or description kept (Cinder's columns).
const MAX_TEXT: usize = 255;

/// A volume to create.
#[derive(Debug, Clone, Default)]
pub struct NewVolume {
    pub project: String,
    pub user: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub size: u64,
    /// A type's name or id; the default type when None.
    pub volume_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub availability_zone: Option<String>,
    pub source: Option<Source>,
}

/// What a new volume copies.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Snapshot(Uuid),
    Volume(Uuid),
}

/// A clone's source, resolved.
struct Origin {
    domain: Uuid,
    img: Uuid,
    vol: Uuid,
    size: u64,
    type_id: Uuid,
}

/// A volume type to create.
#[derive(Debug, Clone, Default)]
pub struct NewType {
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    pub extra_specs: BTreeMap<String, String>,
}

/// An edit of a volume type.
#[derive(Debug, Clone, Default)]
pub struct TypeChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub is_public: Option<bool>,
    /// Extra specs to set.
    pub set_specs: BTreeMap<String, String>,
    /// Extra specs to remove.
    pub unset_specs: Vec<String>,
}

fn invalid(kind: &'static str, reason: impl Into<String>) -> Error {
    Error::CatalogInvalid {
        kind,
        reason: reason.into(),
    }
}

pub(super) fn check_text(what: &str, s: &Option<String>) -> Result<()> {
    match s {
        Some(s) if s.chars().count() > MAX_TEXT => Err(invalid(
            "input",
            format!("{what} is longer than {MAX_TEXT} characters"),
        )),
        _ => Ok(()),
    }
}

pub(super) fn check_metadata(md: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in md {
        if k.is_empty() || k.chars().count() > MAX_TEXT || v.chars().count() > MAX_TEXT {
            return Err(invalid(
                "input",
                format!("metadata key {k:?}: keys must be 1-{MAX_TEXT} characters, values at most {MAX_TEXT}"),
            ));
        }
    }
    Ok(())
}

impl Catalog {
    /// A type by id or name.
    pub fn find_type(&self, key: &str) -> Result<TypeRecord> {
        let by_id = crate::types::parse_uuid(key);
        self.types
            .find(|t| Some(t.id) == by_id || t.name == key)
            .ok_or_else(|| Error::CatalogNotFound {
                kind: "volume type",
                id: key.to_string(),
            })
    }

    /// The type a volume of `project` gets when it names none: the
    /// project's own default, else the catalog's.
    pub fn default_type(&self, project: &str) -> Result<TypeRecord> {
        match self.default_types.find(|d| d.project == project) {
            Some(d) => self.types.get(d.type_id),
            None => self.find_type(DEFAULT_TYPE),
        }
    }

    fn type_in_use(&self, id: Uuid) -> bool {
        self.volumes.find(|v| v.type_id == id).is_some()
    }
}

impl Engine {
    /// The pool's active data domains as scheduler pools.
    pub fn backend_pools(self: &Arc<Self>, cat: &Catalog) -> Result<Vec<BackendPool>> {
        let pool = self.connected_pool(cat.pool)?;
        let (_, md, _) = self.pool_metadata(&pool)?;
        let volumes = cat.volumes.all();
        let mut out = Vec::new();
        for (sd, status) in &md.domains {
            if status != "Active" {
                continue;
            }
            let Ok(info) = self.domain_info(*sd) else {
                continue;
            };
            if info.class != crate::types::DomainClass::Data {
                continue;
            }
            let Ok((total, free)) = self.domain(*sd).and_then(|d| d.space()) else {
                continue;
            };
            use crate::types::DomainType as T;
            let (kind, protocol) = match info.domain_type {
                T::Iscsi => ("block", "iSCSI"),
                T::Fcp => ("block", "FC"),
                T::Nfs => ("file", "nfs"),
                T::GlusterFs => ("file", "glusterfs"),
                T::LocalFs => ("file", "local"),
                T::Cifs => ("file", "cifs"),
                T::SharedFs => ("file", "posix"),
            };
            let mine: Vec<_> = volumes.iter().filter(|v| v.domain == Some(*sd)).collect();
            out.push(BackendPool {
                domain: *sd,
                name: info.name,
                kind,
                storage_protocol: protocol,
                total_gib: total as f64 / GIB as f64,
                free_gib: free as f64 / GIB as f64,
                provisioned_gib: mine.iter().map(|v| v.size).sum::<u64>() as f64,
                volumes: mine.len() as u64,
                over_subscription: self.catalog_over_subscription,
            });
        }
        Ok(out)
    }

    /// Creates a catalog volume: a thin qcow2 image (a preallocated RAW one
    /// for a thick type) on the domain the scheduler picks. When no domain
    /// fits, the volume is recorded in `error` with the reason, as Cinder
    /// does.
    pub fn create_catalog_volume(self: &Arc<Self>, mut req: NewVolume) -> Result<VolumeRecord> {
        let cat = self.catalog()?;
        let origin = req
            .source
            .map(|s| self.resolve_source(&cat, s, &req.project))
            .transpose()?;
        if let Some(o) = &origin {
            if req.size == 0 {
                req.size = o.size;
            } else if req.size < o.size {
                return Err(invalid(
                    "input",
                    format!(
                        "Volume size {} GiB cannot be smaller than the source's {} GiB",
                        req.size, o.size
                    ),
                ));
            }
        }
        if req.size == 0 {
            return Err(invalid(
                "input",
                "size must be a whole number of GiB, at least 1",
            ));
        }
        check_text("name", &req.name)?;
        check_text("description", &req.description)?;
        check_metadata(&req.metadata)?;
        let vtype = match (&req.volume_type, &origin) {
            (Some(t), _) => cat.find_type(t)?,
            (None, Some(o)) => cat
                .types
                .get(o.type_id)
                .or_else(|_| cat.default_type(&req.project))?,
            (None, None) => cat.default_type(&req.project)?,
        };
        if !vtype.is_public && !vtype.projects.contains(&req.project) {
            return Err(Error::CatalogNotFound {
                kind: "volume type",
                id: req.volume_type.clone().unwrap_or_default(),
            });
        }
        // A clone stays on its source's domain (a copy within it).
        let placement = match &origin {
            Some(o) => Ok(scheduler::Placement {
                domain: o.domain,
                thick: scheduler::is_thick(&vtype.extra_specs),
            }),
            None => scheduler::place(
                &self.backend_pools(&cat)?,
                &vtype,
                req.size,
                req.availability_zone.as_deref(),
            ),
        };
        let id = Uuid::new_v4();
        let mut rec = VolumeRecord {
            id,
            project: req.project,
            user: req.user,
            name: req.name,
            description: req.description,
            size: req.size,
            status: VolumeStatus::Creating,
            previous_status: None,
            domain: None,
            leaf: Uuid::new_v4(),
            type_id: vtype.id,
            metadata: req.metadata,
            bootable: false,
            availability_zone: AVAILABILITY_ZONE.into(),
            created_at: timestamp(),
            updated_at: None,
            task: None,
            extending_to: None,
            fault: None,
            snapshot_id: match req.source {
                Some(Source::Snapshot(s)) => Some(s),
                _ => None,
            },
            source_volid: match req.source {
                Some(Source::Volume(v)) => Some(v),
                _ => None,
            },
            copy_from: origin.as_ref().map(|o| (o.img, o.vol)),
            reverting: None,
            migration_status: None,
            migrating_to: None,
        };
        let placement = match placement {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(volume = %id, reason = %why, "catalog volume not placed");
                rec.status = VolumeStatus::Error;
                rec.fault = Some(why);
                return cat.volumes.insert(rec, |_| Ok(()));
            }
        };
        rec.domain = Some(placement.domain);
        let size = rec.size as i64;
        let quota = cat.claim_quota(
            &rec.project,
            super::Demand {
                volumes: 1,
                gigabytes: size,
                volume_size: Some(size),
                ..Default::default()
            },
        )?;
        let rec = cat.volumes.insert(rec, |_| Ok(()))?;
        drop(quota);
        let (format, allocation) = if placement.thick {
            (VolumeFormat::Raw, VolumeAllocation::Preallocated)
        } else {
            (VolumeFormat::Cow, VolumeAllocation::Sparse)
        };
        let started = crate::failpoint::hit("catalog.volume.recorded").and_then(|()| {
            self.create_volume(CreateVolume {
                pool: cat.pool,
                sd: placement.domain,
                img: id,
                vol: rec.leaf,
                size: rec.size * GIB,
                format,
                allocation,
                disk_type: DiskType::Data,
                description: String::new(),
                src_img: BLANK_UUID,
                src_vol: BLANK_UUID,
                initial_size: None,
                legal: true,
                sequence: 0,
                add_bitmaps: false,
                bitmap: None,
            })
        });
        let (engine, made) = (self.clone(), rec.clone());
        let fill = move || match made.copy_from {
            Some(from) => engine.fill_clone(&made, from).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        self.follow_then(&cat, id, started, fill, created)
    }

    /// The source of a clone, which the caller may read and which is
    /// settled.
    fn resolve_source(&self, cat: &Catalog, source: Source, project: &str) -> Result<Origin> {
        let (vol, layer, size) = match source {
            Source::Snapshot(id) => {
                let snap = cat.snapshots.get(id)?;
                if snap.status != super::SnapshotStatus::Available {
                    return Err(invalid(
                        "snapshot",
                        format!("Originating snapshot status must be one of 'available' values (it is {})", snap.status.name()),
                    ));
                }
                (cat.volumes.get(snap.volume_id)?, snap.layer, snap.size)
            }
            Source::Volume(id) => {
                let v = cat.volumes.get(id)?;
                if !matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse) {
                    return Err(invalid(
                        "volume",
                        format!(
                            "Source volume status must be available or in-use (it is {})",
                            v.status.name()
                        ),
                    ));
                }
                let (leaf, size) = (v.leaf, v.size);
                (v, leaf, size)
            }
        };
        if vol.project != project {
            return Err(Error::CatalogNotFound {
                kind: "source",
                id: match source {
                    Source::Snapshot(s) | Source::Volume(s) => s.to_string(),
                },
            });
        }
        Ok(Origin {
            domain: vol
                .domain
                .ok_or_else(|| invalid("volume", "the source has no storage"))?,
            img: vol.id,
            vol: layer,
            size,
            type_id: vol.type_id,
        })
    }

    /// Copies a clone's source (its chain collapsed) into the clone's
    /// volume, as a host job; run again after a crash.
    fn fill_clone(self: &Arc<Self>, rec: &VolumeRecord, (img, vol): (Uuid, Uuid)) -> Result<()> {
        let sd = rec
            .domain
            .ok_or_else(|| invalid("volume", "the clone has no storage"))?;
        let job = Uuid::new_v4();
        let src = crate::engine::jobs::VolumeRef {
            sd,
            img,
            vol,
            generation: None,
        };
        let dst = crate::engine::jobs::VolumeRef {
            sd,
            img: rec.id,
            vol: rec.leaf,
            generation: None,
        };
        self.copy_data(job, src, dst, false)?;
        super::wait(&self.jobs, job)
    }

    /// Renames, describes or replaces the metadata of a volume.
    pub fn update_catalog_volume(
        self: &Arc<Self>,
        id: Uuid,
        name: Option<Option<String>>,
        description: Option<Option<String>>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<VolumeRecord> {
        let cat = self.catalog()?;
        if let Some(n) = &name {
            check_text("name", n)?;
        }
        if let Some(d) = &description {
            check_text("description", d)?;
        }
        if let Some(m) = &metadata {
            check_metadata(m)?;
        }
        cat.volumes.update(id, |v| {
            if v.status == VolumeStatus::Maintenance {
                return Err(invalid("volume", "it is in maintenance"));
            }
            if let Some(n) = name {
                v.name = n;
            }
            if let Some(d) = description {
                v.description = d;
            }
            if let Some(m) = metadata {
                v.metadata = m;
            }
            v.updated_at = Some(timestamp());
            Ok(())
        })
    }

    /// Deletes a volume: `available`, `error`, `error_extending` and
    /// `error_deleting` ones, any but a busy one with `force`.
    /// Deletes a volume; `force` (admins) from any settled status,
    /// `cascade` with its snapshots (they go with the image).
    pub fn delete_catalog_volume(
        self: &Arc<Self>,
        id: Uuid,
        force: bool,
        cascade: bool,
    ) -> Result<VolumeRecord> {
        let cat = self.catalog()?;
        let snapshots: Vec<_> = cat
            .snapshots
            .all()
            .into_iter()
            .filter(|s| s.volume_id == id)
            .collect();
        if !snapshots.is_empty() && !cascade {
            return Err(invalid(
                "volume",
                format!(
                    "Volume {id} still has {} dependent snapshots; delete them first (or cascade)",
                    snapshots.len()
                ),
            ));
        }
        if let Some(s) = snapshots.iter().find(|s| s.status.is_transitional()) {
            return Err(invalid(
                "volume",
                format!(
                    "snapshot {} of the volume is {}; delete the volume after that",
                    s.id,
                    s.status.name()
                ),
            ));
        }
        let rec = cat.volumes.update(id, |v| {
            use VolumeStatus as S;
            let allowed = matches!(
                v.status,
                S::Available | S::Error | S::ErrorExtending | S::ErrorDeleting | S::ErrorRestoring
            );
            if !(allowed || force && !matches!(v.status, S::Deleting | S::InUse)) {
                return Err(invalid(
                    "volume",
                    format!(
                        "Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, be awaiting a transfer, or be disassociated from snapshots after volume transfer (it is {})",
                        v.status.name()
                    ),
                ));
            }
            v.status = S::Deleting;
            v.previous_status = None;
            v.updated_at = Some(timestamp());
            Ok(())
        })?;
        self.start_delete(&cat, rec)
    }

    fn start_delete(
        self: &Arc<Self>,
        cat: &Arc<Catalog>,
        rec: VolumeRecord,
    ) -> Result<VolumeRecord> {
        // Its snapshots are layers of the image: they go with it (a
        // cascade; or a delete finished after a crash).
        for s in cat
            .snapshots
            .all()
            .into_iter()
            .filter(|s| s.volume_id == rec.id)
        {
            cat.snapshots.remove(s.id, |_| Ok(()))?;
        }
        let present = rec
            .domain
            .and_then(|sd| self.domain(sd).ok())
            .is_some_and(|d| d.has_image(rec.id));
        if !present {
            // Never placed, or its image is gone already.
            cat.volumes.remove(rec.id, |_| Ok(()))?;
            tracing::info!(volume = %rec.id, "catalog volume deleted");
            return Ok(rec);
        }
        let started = self.delete_image(DeleteImage {
            pool: cat.pool,
            sd: rec.domain.expect("present"),
            img: rec.id,
            post_zero: false,
            force: false,
            discard: true,
        });
        self.follow(cat, rec.id, started, |rec, outcome| {
            rec.task = None;
            match outcome {
                Ok(()) => false,
                Err(why) => {
                    rec.status = VolumeStatus::ErrorDeleting;
                    rec.fault = Some(format!("deleting the volume failed: {why}"));
                    true
                }
            }
        })
    }

    /// Grows an `available` volume to `new_size` GiB.
    pub fn extend_catalog_volume(
        self: &Arc<Self>,
        id: Uuid,
        new_size: u64,
    ) -> Result<VolumeRecord> {
        let cat = self.catalog()?;
        if let Some(s) = cat.snapshot_in_flight(id) {
            return Err(invalid(
                "volume",
                format!(
                    "snapshot {} of the volume is {}; extend it after that",
                    s.id,
                    s.status.name()
                ),
            ));
        }
        let current = cat.volumes.get(id)?;
        let quota = cat.claim_quota(
            &current.project,
            super::Demand {
                gigabytes: new_size as i64 - current.size as i64,
                volume_size: Some(new_size as i64),
                ..Default::default()
            },
        )?;
        let rec = cat.volumes.update(id, |v| {
            if v.status != VolumeStatus::Available {
                return Err(invalid(
                    "volume",
                    format!("Volume status must be 'available' to extend, currently {}", v.status.name()),
                ));
            }
            if new_size <= v.size {
                return Err(invalid(
                    "input",
                    format!("New size for extend must be greater than current size. (current: {}, extended: {new_size})", v.size),
                ));
            }
            v.status = VolumeStatus::Extending;
            v.previous_status = Some(VolumeStatus::Available);
            v.extending_to = Some(new_size);
            v.updated_at = Some(timestamp());
            Ok(())
        })?;
        drop(quota);
        let sd = rec.domain.expect("an available volume has a domain");
        let started = self.extend_volume(cat.pool, sd, rec.id, rec.leaf, new_size * GIB);
        self.follow(&cat, id, started, |rec, outcome| {
            rec.task = None;
            match outcome {
                Ok(()) => {
                    rec.size = rec.extending_to.unwrap_or(rec.size);
                    rec.status = rec.previous_status.unwrap_or(VolumeStatus::Available);
                }
                Err(why) => {
                    rec.status = VolumeStatus::ErrorExtending;
                    rec.fault = Some(format!("extending the volume failed: {why}"));
                }
            }
            rec.previous_status = None;
            rec.extending_to = None;
            true
        })
    }

    /// Marks a volume bootable or not (a flag for VM managers).
    pub fn set_catalog_volume_bootable(
        self: &Arc<Self>,
        id: Uuid,
        bootable: bool,
    ) -> Result<VolumeRecord> {
        let cat = self.catalog()?;
        cat.volumes.update(id, |v| {
            v.bootable = bootable;
            v.updated_at = Some(timestamp());
            Ok(())
        })
    }

    /// An administrator's repair of a volume's status; nothing on storage
    /// changes.
    pub fn reset_catalog_volume_status(
        self: &Arc<Self>,
        id: Uuid,
        status: VolumeStatus,
    ) -> Result<VolumeRecord> {
        let cat = self.catalog()?;
        cat.volumes.update(id, |v| {
            if v.task.is_some() {
                return Err(invalid(
                    "volume",
                    "a change is in flight; it ends by itself (no reset needed)",
                ));
            }
            v.status = status;
            v.updated_at = Some(timestamp());
            Ok(())
        })
    }

    /// Waits up to `timeout` for a volume to leave a transitional status;
    /// returns it as it is then (None if it was deleted).
    pub fn settle_catalog_volume(
        self: &Arc<Self>,
        id: Uuid,
        timeout: Duration,
    ) -> Result<Option<VolumeRecord>> {
        let cat = self.catalog()?;
        Ok(cat.volumes.wait_for(id, Instant::now() + timeout, |v| {
            !v.status.is_transitional()
        }))
    }

    /// Records the task of a change and moves the status on when it ends:
    /// `finish` edits the record (false: remove it). A task that could not
    /// start finishes at once.
    pub(super) fn follow(
        self: &Arc<Self>,
        cat: &Arc<Catalog>,
        id: Uuid,
        started: Result<Uuid>,
        finish: impl FnOnce(&mut VolumeRecord, std::result::Result<(), String>) -> bool + Send + 'static,
    ) -> Result<VolumeRecord> {
        self.follow_then(cat, id, started, || Ok(()), finish)
    }

    /// [`Engine::follow`] with a step `then` run after the task succeeded
    /// and before the record moves on (outside the table's lock).
    fn follow_then(
        self: &Arc<Self>,
        cat: &Arc<Catalog>,
        id: Uuid,
        started: Result<Uuid>,
        then: impl FnOnce() -> std::result::Result<(), String> + Send + 'static,
        finish: impl FnOnce(&mut VolumeRecord, std::result::Result<(), String>) -> bool + Send + 'static,
    ) -> Result<VolumeRecord> {
        let task = match started {
            Ok(task) => task,
            Err(e) => {
                finish_with(cat, id, finish, Err(e.to_string()));
                return Err(e);
            }
        };
        let rec = cat.volumes.update(id, |v| {
            v.task = Some(task);
            Ok(())
        })?;
        let (engine, cat) = (self.clone(), cat.clone());
        std::thread::spawn(move || {
            // None: the pool went away under the task (SPM lost); the
            // next SPM's recovery finishes the record.
            let Some(outcome) = super::outcome(&engine.tasks, task) else {
                return;
            };
            let outcome = outcome.and_then(|()| then());
            // A crash here (the work done, its record not yet moved on)
            // is for recovery to finish; an armed error changes nothing.
            let _ = crate::failpoint::hit("catalog.volume.finishing");
            finish_with(&cat, id, finish, outcome);
        });
        Ok(rec)
    }

    /// Finishes the changes a crash or an SPM change interrupted: the
    /// engine recovered (rolled back or completed) their tasks when the
    /// pool's SPM started; each record is set from what is on storage.
    pub(super) fn recover_catalog(self: &Arc<Self>, cat: &Arc<Catalog>) {
        for rec in cat.volumes.all() {
            if !rec.status.is_transitional() && rec.migrating_to.is_none() {
                continue;
            }
            if let Some(task) = rec.task {
                if self
                    .tasks
                    .status(task)
                    .is_ok_and(|st| st.state != TaskState::Finished)
                {
                    // Still running here: its finisher is on it.
                    continue;
                }
            }
            let dom = rec.domain.and_then(|sd| self.domain(sd).ok());
            let info = dom
                .as_ref()
                .and_then(|d| self.volume_info(d.id(), rec.id, rec.leaf).ok());
            if rec.status == VolumeStatus::Creating && rec.copy_from.is_some() && info.is_some() {
                // Made, not yet filled: the copy runs again.
                let (engine, cat) = (self.clone(), cat.clone());
                std::thread::spawn(move || {
                    let outcome = engine
                        .fill_clone(&rec, rec.copy_from.expect("checked"))
                        .map_err(|e| e.to_string());
                    finish_with(&cat, rec.id, created, outcome);
                });
                continue;
            }
            if rec.migrating_to.is_some() {
                match self.recover_migration(cat, &rec) {
                    Ok(()) => {
                        tracing::info!(volume = %rec.id, "recovered an interrupted migration")
                    }
                    Err(e) => {
                        tracing::error!(volume = %rec.id, error = %e, "cannot recover an interrupted migration")
                    }
                }
                continue;
            }
            let result = match rec.status {
                VolumeStatus::Creating => cat.volumes.update(rec.id, |v| {
                    v.task = None;
                    match &info {
                        Some(i) if i.md.legality == crate::types::VolumeLegality::Legal => v.status = VolumeStatus::Available,
                        _ => {
                            v.status = VolumeStatus::Error;
                            v.fault = Some(
                                "cairnd stopped while creating the volume; the half-made image was rolled back".into(),
                            );
                        }
                    }
                    Ok(())
                }).map(drop),
                VolumeStatus::Extending => cat.volumes.update(rec.id, |v| {
                    v.task = None;
                    let want = v.extending_to.unwrap_or(v.size);
                    if info.as_ref().is_some_and(|i| i.md.capacity >= want * GIB) {
                        v.size = want;
                    } else {
                        v.fault = Some("cairnd stopped while extending the volume; the extend was rolled back".into());
                    }
                    v.status = v.previous_status.unwrap_or(VolumeStatus::Available);
                    v.previous_status = None;
                    v.extending_to = None;
                    Ok(())
                }).map(drop),
                VolumeStatus::Deleting => self.start_delete(cat, rec.clone()).map(drop),
                VolumeStatus::Reverting => {
                    let (engine, cat) = (self.clone(), cat.clone());
                    let id = rec.id;
                    std::thread::spawn(move || engine.finish_revert(&cat, id));
                    Ok(())
                }
                _ => Ok(()),
            };
            match result {
                Ok(()) => {
                    tracing::info!(volume = %rec.id, was = rec.status.name(), "recovered an interrupted catalog change")
                }
                Err(e) => {
                    tracing::error!(volume = %rec.id, error = %e, "cannot recover an interrupted catalog change")
                }
            }
        }
    }

    pub fn create_catalog_type(self: &Arc<Self>, req: NewType) -> Result<TypeRecord> {
        let cat = self.catalog()?;
        let name = req.name.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_TEXT {
            return Err(invalid(
                "input",
                format!("a type's name must be 1-{MAX_TEXT} characters"),
            ));
        }
        check_text("description", &req.description)?;
        check_metadata(&req.extra_specs)?;
        let rec = TypeRecord {
            id: Uuid::new_v4(),
            name: name.clone(),
            description: req.description,
            is_public: req.is_public,
            extra_specs: req.extra_specs,
            projects: Vec::new(),
            qos_specs_id: None,
            created_at: timestamp(),
        };
        cat.types.insert(rec, |rows| {
            if rows.values().any(|t| t.name == name) {
                return Err(Error::CatalogConflict(format!(
                    "Volume Type {name} already exists."
                )));
            }
            Ok(())
        })
    }

    pub fn update_catalog_type(
        self: &Arc<Self>,
        key: &str,
        change: TypeChange,
    ) -> Result<TypeRecord> {
        let cat = self.catalog()?;
        let t = cat.find_type(key)?;
        if let Some(n) = &change.name {
            if cat.types.find(|o| o.name == *n && o.id != t.id).is_some() {
                return Err(Error::CatalogConflict(format!(
                    "Volume Type {n} already exists."
                )));
            }
        }
        check_metadata(&change.set_specs)?;
        let specs_change = !change.set_specs.is_empty() || !change.unset_specs.is_empty();
        if specs_change && cat.type_in_use(t.id) {
            return Err(invalid("volume type", "Volume Type is currently in use."));
        }
        cat.types.update(t.id, |r| {
            for k in &change.unset_specs {
                if r.extra_specs.remove(k).is_none() {
                    return Err(Error::CatalogNotFound {
                        kind: "volume type extra spec",
                        id: k.clone(),
                    });
                }
            }
            r.extra_specs.extend(change.set_specs);
            if let Some(n) = change.name {
                r.name = n;
            }
            if let Some(d) = change.description {
                r.description = Some(d);
            }
            if let Some(p) = change.is_public {
                r.is_public = p;
            }
            Ok(())
        })
    }

    pub fn delete_catalog_type(self: &Arc<Self>, key: &str) -> Result<TypeRecord> {
        let cat = self.catalog()?;
        let t = cat.find_type(key)?;
        if t.name == DEFAULT_TYPE {
            return Err(invalid(
                "volume type",
                "the default volume type cannot be deleted",
            ));
        }
        if cat.default_types.find(|d| d.type_id == t.id).is_some() {
            return Err(invalid(
                "volume type",
                format!(
                    "volume type {} is a project's default type; unset that first",
                    t.id
                ),
            ));
        }
        if cat.type_in_use(t.id) {
            return Err(invalid(
                "volume type",
                format!("Target volume type is still in use. Volume Type {} deletion is not allowed with volumes present with the type.", t.id),
            ));
        }
        cat.types.remove(t.id, |_| Ok(()))
    }
}

/// How a create ends: `available`, or `error` saying why.
fn created(rec: &mut VolumeRecord, outcome: std::result::Result<(), String>) -> bool {
    rec.task = None;
    match outcome {
        Ok(()) => {
            rec.status = VolumeStatus::Available;
            rec.copy_from = None;
        }
        Err(why) => {
            rec.status = VolumeStatus::Error;
            rec.fault = Some(format!("creating the volume failed: {why}"));
        }
    }
    true
}

fn finish_with(
    cat: &Catalog,
    id: Uuid,
    finish: impl FnOnce(&mut VolumeRecord, std::result::Result<(), String>) -> bool,
    outcome: std::result::Result<(), String>,
) {
    let mut keep = true;
    let updated = cat.volumes.update(id, |v| {
        keep = finish(v, outcome);
        v.updated_at = Some(timestamp());
        Ok(())
    });
    let result = match (updated, keep) {
        (Ok(_), false) => cat.volumes.remove(id, |_| Ok(())).map(drop),
        (r, _) => r.map(drop),
    };
    match result {
        Ok(()) => tracing::info!(volume = %id, "catalog volume change finished"),
        Err(e) => {
            tracing::error!(volume = %id, error = %e, "cannot record the end of a catalog change")
        }
    }
}

impl Engine {
    /// Sets `project`'s default type (`type_key`: name or id).
    pub fn set_catalog_default_type(
        self: &Arc<Self>,
        project: &str,
        type_key: &str,
    ) -> Result<super::DefaultTypeRecord> {
        let cat = self.catalog()?;
        let t = cat.find_type(type_key)?;
        match cat.default_types.find(|d| d.project == project) {
            Some(d) => cat.default_types.update(d.id, |d| {
                d.type_id = t.id;
                Ok(())
            }),
            None => cat.default_types.insert(
                super::DefaultTypeRecord {
                    id: Uuid::new_v4(),
                    project: project.to_string(),
                    type_id: t.id,
                },
                |rows| {
                    if rows.values().any(|d| d.project == project) {
                        return Err(Error::CatalogConflict(format!(
                            "project {project} got a default type meanwhile"
                        )));
                    }
                    Ok(())
                },
            ),
        }
    }

    pub fn unset_catalog_default_type(
        self: &Arc<Self>,
        project: &str,
    ) -> Result<super::DefaultTypeRecord> {
        let cat = self.catalog()?;
        let d = cat
            .default_types
            .find(|d| d.project == project)
            .ok_or_else(|| Error::CatalogNotFound {
                kind: "default type of project",
                id: project.to_string(),
            })?;
        cat.default_types.remove(d.id, |_| Ok(()))
    }
}
