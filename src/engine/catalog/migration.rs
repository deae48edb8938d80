//! Retype and migration: a volume's type changes in place when its domain
//! satisfies the new type; otherwise (when allowed) the volume's image,
//! its snapshots' layers with it, moves to a domain that does (`Image.move`,
//! an SPM task: a crash finishes or undoes it, and recovery sets the
//! record from where the image is).

use std::sync::Arc;

use super::records::{timestamp, VolumeRecord, VolumeStatus};
use super::scheduler::{self, is_thick};
use super::Catalog;
use crate::engine::image::move_image::MoveImage;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::types::{ImageMoveOperation, Uuid};

fn invalid(reason: impl Into<String>) -> Error {
    Error::CatalogInvalid {
        kind: "volume",
        reason: reason.into(),
    }
}

impl Engine {
    /// Changes a volume's type (Cinder's retype). `migrate`: whether the
    /// volume may move to another domain when its own does not fit
    /// (`migration_policy=on-demand`).
    pub fn retype_catalog_volume(
        self: &Arc<Self>,
        id: Uuid,
        new_type: &str,
        migrate: bool,
    ) -> Result<VolumeRecord> {
        let cat = self.catalog()?;
        let v = cat.volumes.get(id)?;
        let t = cat.find_type(new_type)?;
        if !t.is_public && !t.projects.contains(&v.project) {
            return Err(Error::CatalogNotFound {
                kind: "volume type",
                id: new_type.into(),
            });
        }
        if t.id == v.type_id {
            return Err(invalid(format!(
                "New volume_type same as original: {}.",
                t.name
            )));
        }
        let old = cat.types.get(v.type_id)?;
        if is_thick(&old.extra_specs) != is_thick(&t.extra_specs) {
            return Err(invalid(
                "Cairn does not convert a volume between thin and thick provisioning in a retype",
            ));
        }
        if !matches!(v.status, VolumeStatus::Available | VolumeStatus::InUse) {
            return Err(invalid(format!(
                "Volume status must be available or in-use to retype, but it is {}",
                v.status.name()
            )));
        }
        let sd = v
            .domain
            .ok_or_else(|| invalid("the volume has no storage"))?;
        let pools = self.backend_pools(&cat)?;
        let here: Vec<_> = pools.iter().filter(|p| p.domain == sd).cloned().collect();
        // Its own domain already holds it: only the specs must match.
        if scheduler::place(&here, &t, 0, None).is_ok() {
            if v.status == VolumeStatus::InUse && old.qos_specs_id != t.qos_specs_id {
                return Err(invalid(
                    "Retype of an in-use volume cannot change its front-end QoS specs",
                ));
            }
            return cat.volumes.update(id, |rec| {
                if rec.type_id != v.type_id
                    || !matches!(rec.status, VolumeStatus::Available | VolumeStatus::InUse)
                {
                    return Err(invalid("the volume changed meanwhile; try again"));
                }
                rec.type_id = t.id;
                rec.updated_at = Some(timestamp());
                Ok(())
            });
        }
        if !migrate {
            return Err(invalid("Retype requires migration but is not allowed."));
        }
        let elsewhere: Vec<_> = pools.into_iter().filter(|p| p.domain != sd).collect();
        let dst = scheduler::place(&elsewhere, &t, v.size, None).map_err(invalid)?;
        self.start_migration(&cat, v, dst.domain, Some(t.id))
    }

    /// Moves a volume to domain `dst` (Cinder's migrate, for admins).
    pub fn migrate_catalog_volume(self: &Arc<Self>, id: Uuid, dst: Uuid) -> Result<VolumeRecord> {
        let cat = self.catalog()?;
        let v = cat.volumes.get(id)?;
        if v.domain == Some(dst) {
            return Err(invalid("The volume is already on that host"));
        }
        let t = cat.types.get(v.type_id)?;
        let target: Vec<_> = self
            .backend_pools(&cat)?
            .into_iter()
            .filter(|p| p.domain == dst)
            .collect();
        if target.is_empty() {
            return Err(invalid(format!("No active data domain {dst} in the pool")));
        }
        scheduler::place(&target, &t, v.size, None).map_err(invalid)?;
        self.start_migration(&cat, v, dst, None)
    }

    fn start_migration(
        self: &Arc<Self>,
        cat: &Arc<Catalog>,
        v: VolumeRecord,
        dst: Uuid,
        new_type: Option<Uuid>,
    ) -> Result<VolumeRecord> {
        let src = v
            .domain
            .ok_or_else(|| invalid("the volume has no storage"))?;
        if let Some(s) = cat.snapshot_in_flight(v.id) {
            return Err(invalid(format!(
                "snapshot {} of the volume is {}; migrate it after that",
                s.id,
                s.status.name()
            )));
        }
        cat.volumes.update(v.id, |rec| {
            if rec.status != VolumeStatus::Available {
                return Err(invalid(format!(
                    "Volume status must be available to migrate, but it is {}",
                    rec.status.name()
                )));
            }
            rec.status = VolumeStatus::Maintenance;
            rec.migration_status = Some("migrating".into());
            rec.migrating_to = Some((dst, new_type));
            rec.updated_at = Some(timestamp());
            Ok(())
        })?;
        let started = self.move_image(MoveImage {
            pool: cat.pool,
            sd: src,
            img: v.id,
            dst_sd: dst,
            operation: ImageMoveOperation::Move,
            post_zero: false,
            discard: false,
            force: false,
        });
        self.follow(cat, v.id, started, move |rec, outcome| {
            rec.task = None;
            end_migration(rec, outcome.map(|()| true));
            true
        })
    }

    /// After a crash: the engine has finished or undone the move; the
    /// record follows where the image is.
    pub(super) fn recover_migration(&self, cat: &Catalog, rec: &VolumeRecord) -> Result<()> {
        let Some((dst, _)) = rec.migrating_to else {
            return Ok(());
        };
        let moved = self.volume_info(dst, rec.id, rec.leaf).is_ok();
        cat.volumes
            .update(rec.id, |v| {
                v.task = None;
                end_migration(v, Ok(moved));
                Ok(())
            })
            .map(drop)
    }
}

/// Moves the record on once the image moved (`Ok(true)`), stayed
/// (`Ok(false)`) or the move failed.
fn end_migration(rec: &mut VolumeRecord, outcome: std::result::Result<bool, String>) {
    let target = rec.migrating_to.take();
    match (outcome, target) {
        (Ok(true), Some((dst, new_type))) => {
            rec.domain = Some(dst);
            if let Some(t) = new_type {
                rec.type_id = t;
            }
            rec.migration_status = Some("success".into());
        }
        (outcome, _) => {
            rec.migration_status = Some("error".into());
            rec.fault = Some(match outcome {
                Err(why) => format!("migrating the volume failed: {why}"),
                Ok(_) => "cairnd stopped while migrating the volume; the move was undone".into(),
            });
        }
    }
    rec.status = VolumeStatus::Available;
    rec.updated_at = Some(timestamp());
}
