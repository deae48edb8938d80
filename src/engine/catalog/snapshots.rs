//! Catalog snapshots. Taking one puts a new qcow2 leaf on the volume's
//! image; the old leaf, frozen, holds the snapshot's point in time.
//! Deleting one merges the layer above it into it (VDSM's cold merge:
//! prepare, commit, finalize), so every other point in time and the
//! volume's data stay as they are; whoever pointed at the merged layer
//! (the volume's leaf or a newer snapshot) then points at this one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::records::{timestamp, SnapshotRecord, SnapshotStatus, VolumeStatus};
use super::volumes::check_metadata;
use super::wait;
use super::Catalog;
use crate::engine::image::merge::Subchain;
use crate::engine::volume::CreateVolume;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::types::{DiskType, Uuid, VolumeAllocation, VolumeFormat, VolumeLegality};

const GIB: u64 = 1 << 30;

/// A snapshot to take.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    pub volume_id: Uuid,
    pub project: String,
    pub user: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::CatalogInvalid {
        kind: "snapshot",
        reason: reason.into(),
    }
}

impl Catalog {
    /// A snapshot of `volume` being taken or deleted, if any.
    pub fn snapshot_in_flight(&self, volume: Uuid) -> Option<SnapshotRecord> {
        self.snapshots
            .find(|s| s.volume_id == volume && s.status.is_transitional())
    }
}

impl Engine {
    pub fn create_catalog_snapshot(self: &Arc<Self>, req: NewSnapshot) -> Result<SnapshotRecord> {
        let cat = self.catalog()?;
        check_metadata(&req.metadata)?;
        let vol = cat.volumes.get(req.volume_id)?;
        if vol.status != VolumeStatus::Available {
            return Err(invalid(format!(
                "Volume {} status must be available, but current status is: {}.",
                vol.id,
                vol.status.name()
            )));
        }
        let sd = vol
            .domain
            .ok_or_else(|| invalid("the volume has no storage"))?;
        let rec = SnapshotRecord {
            id: Uuid::new_v4(),
            volume_id: vol.id,
            project: req.project,
            user: req.user,
            name: req.name,
            description: req.description,
            size: vol.size,
            status: SnapshotStatus::Creating,
            layer: vol.leaf,
            new_leaf: Some(Uuid::new_v4()),
            merge_top: None,
            metadata: req.metadata,
            created_at: timestamp(),
            updated_at: None,
            fault: None,
        };
        let quota = cat.claim_quota(
            &rec.project,
            super::Demand {
                snapshots: 1,
                gigabytes: rec.size as i64,
                ..Default::default()
            },
        )?;
        let rec = cat.snapshots.insert(rec, |rows| {
            match rows
                .values()
                .find(|s| s.volume_id == vol.id && s.status.is_transitional())
            {
                Some(other) => Err(invalid(format!(
                    "snapshot {} of the volume is {}; one change of a volume's chain at a time",
                    other.id,
                    other.status.name()
                ))),
                None => Ok(()),
            }
        })?;
        drop(quota);
        let new_leaf = rec.new_leaf.expect("set above");
        let started = self.create_volume(new_layer(
            cat.pool, sd, vol.id, new_leaf, vol.size, vol.leaf,
        ));
        let task = match started {
            Ok(t) => t,
            Err(e) => {
                self.finish_snapshot_create(&cat, rec.id, Err(e.to_string()));
                return Err(e);
            }
        };
        let (engine, cat2, id) = (self.clone(), cat.clone(), rec.id);
        std::thread::spawn(move || {
            if let Some(result) = super::outcome(&engine.tasks, task) {
                engine.finish_snapshot_create(&cat2, id, result);
            }
        });
        Ok(rec)
    }

    /// Moves a snapshot out of `creating`: the volume's leaf becomes the
    /// new one, or the snapshot goes to `error`.
    fn finish_snapshot_create(
        &self,
        cat: &Catalog,
        id: Uuid,
        result: std::result::Result<(), String>,
    ) {
        let done = (|| -> Result<()> {
            let snap = cat.snapshots.get(id)?;
            if let (Ok(()), Some(new_leaf)) = (&result, snap.new_leaf) {
                cat.volumes.update(snap.volume_id, |v| {
                    v.leaf = new_leaf;
                    v.updated_at = Some(timestamp());
                    Ok(())
                })?;
            }
            cat.snapshots.update(id, |s| {
                s.new_leaf = None;
                s.updated_at = Some(timestamp());
                match &result {
                    Ok(()) => s.status = SnapshotStatus::Available,
                    Err(why) => {
                        s.status = SnapshotStatus::Error;
                        s.fault = Some(format!("taking the snapshot failed: {why}"));
                    }
                }
                Ok(())
            })?;
            Ok(())
        })();
        match done {
            Ok(()) => tracing::info!(snapshot = %id, ok = result.is_ok(), "catalog snapshot taken"),
            Err(e) => {
                tracing::error!(snapshot = %id, error = %e, "cannot record the end of a snapshot")
            }
        }
    }

    pub fn update_catalog_snapshot(
        self: &Arc<Self>,
        id: Uuid,
        name: Option<Option<String>>,
        description: Option<Option<String>>,
        metadata: Option<BTreeMap<String, String>>,
    ) -> Result<SnapshotRecord> {
        let cat = self.catalog()?;
        if let Some(m) = &metadata {
            check_metadata(m)?;
        }
        cat.snapshots.update(id, |s| {
            if let Some(n) = name {
                s.name = n;
            }
            if let Some(d) = description {
                s.description = d;
            }
            if let Some(m) = metadata {
                s.metadata = m;
            }
            s.updated_at = Some(timestamp());
            Ok(())
        })
    }

    pub fn reset_catalog_snapshot_status(
        self: &Arc<Self>,
        id: Uuid,
        status: SnapshotStatus,
    ) -> Result<SnapshotRecord> {
        let cat = self.catalog()?;
        cat.snapshots.update(id, |s| {
            if s.status.is_transitional() {
                return Err(invalid(
                    "a change is in flight; it ends by itself (no reset needed)",
                ));
            }
            s.status = status;
            s.updated_at = Some(timestamp());
            Ok(())
        })
    }

    /// Deletes an `available` or `error` snapshot (any settled one with
    /// `force`): its layer absorbs the layer above it.
    pub fn delete_catalog_snapshot(
        self: &Arc<Self>,
        id: Uuid,
        force: bool,
    ) -> Result<SnapshotRecord> {
        let cat = self.catalog()?;
        let rec = cat.snapshots.update(id, |s| {
            let settled = matches!(s.status, SnapshotStatus::Available | SnapshotStatus::Error);
            if !(settled || force && !s.status.is_transitional()) {
                return Err(invalid(format!(
                    "Snapshot status must be available or error (it is {})",
                    s.status.name()
                )));
            }
            s.status = SnapshotStatus::Deleting;
            s.updated_at = Some(timestamp());
            Ok(())
        })?;
        let (engine, cat2) = (self.clone(), cat.clone());
        std::thread::spawn(move || engine.run_snapshot_delete(&cat2, rec));
        cat.snapshots.get(id)
    }

    /// The delete's steps, each run again after a crash: find the layer
    /// above, prepare the merge, commit, finalize, then re-point.
    fn run_snapshot_delete(self: &Arc<Self>, cat: &Catalog, snap: SnapshotRecord) {
        let result = self.snapshot_delete_steps(cat, &snap);
        let recorded = match &result {
            Ok(()) => cat.snapshots.remove(snap.id, |_| Ok(())).map(drop),
            Err(e) => cat
                .snapshots
                .update(snap.id, |s| {
                    s.status = SnapshotStatus::ErrorDeleting;
                    s.fault = Some(format!("deleting the snapshot failed: {e}"));
                    s.updated_at = Some(timestamp());
                    Ok(())
                })
                .map(drop),
        };
        match (result, recorded) {
            (Ok(()), Ok(())) => tracing::info!(snapshot = %snap.id, "catalog snapshot deleted"),
            (r, rec) => {
                tracing::error!(snapshot = %snap.id, result = ?r.err(), record = ?rec.err(), "catalog snapshot delete failed")
            }
        }
    }

    fn snapshot_delete_steps(self: &Arc<Self>, cat: &Catalog, snap: &SnapshotRecord) -> Result<()> {
        let vol = cat.volumes.get(snap.volume_id)?;
        let sd = vol
            .domain
            .ok_or_else(|| invalid("the volume has no storage"))?;
        let dom = self.domain(sd)?;
        let img = vol.id;
        let top =
            match snap.merge_top {
                Some(top) => top,
                None => {
                    let children = crate::engine::volume::children_of(&*dom, img, snap.layer)?;
                    match children.as_slice() {
                        // Never frozen (its taking failed): nothing to merge.
                        [] => return Ok(()),
                        [child] => {
                            let child = *child;
                            cat.snapshots.update(snap.id, |s| {
                                s.merge_top = Some(child);
                                Ok(())
                            })?;
                            child
                        }
                        _ => return Err(invalid(
                            "its layer has several children; Cairn does not merge a branched chain",
                        )),
                    }
                }
            };
        let sc = Subchain {
            sd,
            img,
            top,
            base: snap.layer,
            base_generation: None,
        };
        if dom.volume_exists(img, top) {
            let base = self.volume_info(sd, img, snap.layer)?;
            if base.md.legality == VolumeLegality::Legal {
                let task = self.prepare_merge(cat.pool, sc)?;
                wait(&self.tasks, task)?;
            }
            let job = Uuid::new_v4();
            self.merge(job, sc, false)?;
            wait(&self.jobs, job)?;
            let task = self.finalize_merge(cat.pool, sc)?;
            wait(&self.tasks, task)?;
        }
        // The merged layer is gone: who pointed at it points here.
        if vol.leaf == top {
            cat.volumes.update(vol.id, |v| {
                v.leaf = snap.layer;
                v.updated_at = Some(timestamp());
                Ok(())
            })?;
        }
        if let Some(newer) = cat
            .snapshots
            .find(|s| s.volume_id == vol.id && s.layer == top)
        {
            cat.snapshots.update(newer.id, |s| {
                s.layer = snap.layer;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Reverts an `available` volume to its latest snapshot (Cinder 3.40):
    /// its leaf is thrown away and an empty one put on the snapshot's
    /// layer. The sizes must agree.
    pub fn revert_catalog_volume(self: &Arc<Self>, volume: Uuid, snapshot: Uuid) -> Result<()> {
        let cat = self.catalog()?;
        let snap = cat.snapshots.get(snapshot)?;
        if snap.volume_id != volume {
            return Err(invalid(format!(
                "snapshot {snapshot} is not of volume {volume}"
            )));
        }
        let latest = cat
            .snapshots
            .all()
            .into_iter()
            .filter(|s| s.volume_id == volume)
            .max_by(|a, b| a.created_at.cmp(&b.created_at));
        if latest.as_ref().map(|s| s.id) != Some(snapshot) {
            return Err(invalid(
                "a volume can only be reverted to its latest snapshot",
            ));
        }
        if snap.status != SnapshotStatus::Available {
            return Err(invalid(format!("the snapshot is {}", snap.status.name())));
        }
        cat.volumes.update(volume, |v| {
            if v.status != VolumeStatus::Available {
                return Err(invalid(format!(
                    "Volume status must be available to revert (it is {})",
                    v.status.name()
                )));
            }
            if v.size != snap.size {
                return Err(invalid(format!(
                    "the volume is {} GiB and the snapshot {} GiB; Cinder reverts only volumes of their snapshot's size",
                    v.size, snap.size
                )));
            }
            v.status = VolumeStatus::Reverting;
            v.reverting = Some((snapshot, v.leaf, Uuid::new_v4()));
            v.updated_at = Some(timestamp());
            Ok(())
        })?;
        let (engine, cat) = (self.clone(), cat.clone());
        std::thread::spawn(move || engine.finish_revert(&cat, volume));
        Ok(())
    }

    /// The revert's steps, from where storage says they are (run again
    /// after a crash): remove the old leaf, put the new one on the layer.
    pub(super) fn finish_revert(self: &Arc<Self>, cat: &super::Catalog, volume: Uuid) {
        let result = (|| -> Result<Uuid> {
            let v = cat.volumes.get(volume)?;
            let (snapshot, old, new) = v.reverting.ok_or_else(|| invalid("no revert in flight"))?;
            let sd = v
                .domain
                .ok_or_else(|| invalid("the volume has no storage"))?;
            let layer = cat.snapshots.get(snapshot)?.layer;
            let dom = self.domain(sd)?;
            if dom.volume_exists(volume, old) {
                let task = self.delete_volume(crate::engine::volume::DeleteVolume {
                    pool: cat.pool,
                    sd,
                    img: volume,
                    vol: old,
                    force: false,
                    post_zero: false,
                    discard: true,
                })?;
                wait(&self.tasks, task)?;
            }
            if !dom.volume_exists(volume, new) {
                let task =
                    self.create_volume(new_layer(cat.pool, sd, volume, new, v.size, layer))?;
                wait(&self.tasks, task)?;
            }
            Ok(new)
        })();
        let recorded = cat.volumes.update(volume, |v| {
            match &result {
                Ok(new) => {
                    v.leaf = *new;
                    v.status = VolumeStatus::Available;
                }
                Err(e) => {
                    v.status = VolumeStatus::Error;
                    v.fault = Some(format!("reverting to the snapshot failed: {e}"));
                }
            }
            v.reverting = None;
            v.updated_at = Some(timestamp());
            Ok(())
        });
        match (result, recorded) {
            (Ok(_), Ok(_)) => tracing::info!(volume = %volume, "volume reverted to its snapshot"),
            (r, rec) => {
                tracing::error!(volume = %volume, result = ?r.err(), record = ?rec.err(), "revert failed")
            }
        }
    }

    /// Finishes snapshot changes a crash interrupted (after the engine
    /// recovered its tasks): a `creating` one from what is on storage, a
    /// `deleting` one by running its steps again.
    pub(super) fn recover_snapshots(self: &Arc<Self>, cat: &Arc<Catalog>) {
        for snap in cat.snapshots.all() {
            match snap.status {
                SnapshotStatus::Creating => {
                    let made = snap.new_leaf.is_some_and(|leaf| {
                        cat.volumes
                            .get(snap.volume_id)
                            .ok()
                            .and_then(|v| v.domain)
                            .and_then(|sd| self.volume_info(sd, snap.volume_id, leaf).ok())
                            .is_some_and(|i| {
                                i.md.legality == VolumeLegality::Legal && i.md.parent == snap.layer
                            })
                    });
                    let result = if made {
                        Ok(())
                    } else {
                        Err("cairnd stopped while taking the snapshot; the new layer was rolled back".to_string())
                    };
                    self.finish_snapshot_create(cat, snap.id, result);
                }
                SnapshotStatus::Deleting => {
                    tracing::info!(snapshot = %snap.id, "resuming an interrupted snapshot delete");
                    let (engine, cat) = (self.clone(), cat.clone());
                    std::thread::spawn(move || engine.run_snapshot_delete(&cat, snap));
                }
                _ => {}
            }
        }
    }
}

/// An empty qcow2 layer `vol` of `size` GiB on `parent`, in image `img`.
fn new_layer(pool: Uuid, sd: Uuid, img: Uuid, vol: Uuid, size: u64, parent: Uuid) -> CreateVolume {
    CreateVolume {
        pool,
        sd,
        img,
        vol,
        size: size * GIB,
        format: VolumeFormat::Cow,
        allocation: VolumeAllocation::Sparse,
        disk_type: DiskType::Data,
        description: String::new(),
        src_img: img,
        src_vol: parent,
        initial_size: None,
        legal: true,
        sequence: 0,
        add_bitmaps: false,
        bitmap: None,
    }
}
