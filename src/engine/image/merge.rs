//! Cold merge of a subchain (a top volume and its parent, the base), in
//! VDSM's three steps:
//!
//! 1. `StoragePool.prepareMerge` (SPM task): the base is marked ILLEGAL, so
//!    no VM starts on a chain being merged, and grown to the top's virtual
//!    size if the top is larger.
//! 2. `SDM.merge` (host job): `qemu-img commit` writes the top's data into
//!    the base; the top itself is left as it was, so an interrupted merge is
//!    simply run again. The base gets the next generation, still ILLEGAL.
//! 3. `StoragePool.finalizeMerge` (SPM task): the top's child (if any) is
//!    rebased onto the base, the base becomes LEGAL (and LEAF if the top
//!    was the leaf), and the top is removed.
//!
//! VDSM leaves the top ILLEGAL for the caller to delete; Cairn removes it in
//! the same task, so a chain never holds an orphan. Through the whole flow
//! the data seen through the image's leaf never changes.

use std::sync::Arc;

use crate::backend::{Domain, Part};
use crate::engine::jobs::volume::qcow2_info;
use crate::engine::jobs::VolumeRef;
use crate::engine::jobs::{
    check_generation, check_not_prepared, next_generation, FencedChange, Rollback,
};
use crate::engine::resources::Mode;
use crate::engine::tasks::recovery::{Commit, RecoveryPlan, Step};
use crate::engine::volume::ops::set_virtual_size;
use crate::engine::volume::{children_of, read_in_image};
use crate::engine::{Engine, TaskCtx};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::qemu_img;
use crate::types::{Uuid, VolumeFormat, VolumeLegality, VolumeRole};

/// `SubchainInfo`: the base and the top merged into it.
#[derive(Debug, Clone, Copy)]
pub struct Subchain {
    pub sd: Uuid,
    pub img: Uuid,
    pub top: Uuid,
    pub base: Uuid,
    pub base_generation: Option<u32>,
}

/// A subchain's volumes as validated.
struct Checked {
    base: VolumeMetadata,
    top: VolumeMetadata,
    /// The top's child, if the top is not the leaf.
    child: Option<(Uuid, VolumeMetadata)>,
}

/// Which merge step validates: each expects the base in another state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Prepare,
    Merge,
    Finalize,
}

impl Engine {
    /// `StoragePool.prepareMerge`.
    pub fn prepare_merge(self: &Arc<Self>, pool: Uuid, sc: Subchain) -> Result<Uuid> {
        let verb = ("prepareMerge", Stage::Prepare);
        self.spawn_subchain_task(pool, sc, verb, move |ctx, _, dom, checked| {
            prepare_steps(ctx, dom, &sc, checked)
        })
    }

    /// `StoragePool.finalizeMerge`: re-points the chain past the top and
    /// removes it.
    pub fn finalize_merge(self: &Arc<Self>, pool: Uuid, sc: Subchain) -> Result<Uuid> {
        let verb = ("finalizeMerge", Stage::Finalize);
        self.spawn_subchain_task(pool, sc, verb, move |ctx, engine, dom, checked| {
            finalize_steps(ctx, engine, dom, &sc, checked)
        })
    }

    /// An SPM task on a subchain: validated before it is queued and again
    /// under the image's exclusive lock, still as SPM.
    fn spawn_subchain_task(
        self: &Arc<Self>,
        pool: Uuid,
        sc: Subchain,
        (verb, stage): (&'static str, Stage),
        steps: impl FnOnce(&TaskCtx, &Engine, &dyn Domain, Checked) -> Result<()> + Send + 'static,
    ) -> Result<Uuid> {
        let pool_state = self.require_spm(pool)?;
        let dom = self.pool_domain(&pool_state, sc.sd)?;
        self.check_subchain(&*dom, &sc, stage)?;
        let engine = self.clone();
        let store = self.task_store(&pool_state)?;
        self.tasks.spawn(verb, Some(&store), move |ctx| {
            let _lock = engine.lock_image(sc.sd, sc.img, Mode::Exclusive)?;
            engine.require_spm(pool)?;
            let checked = engine.check_subchain(&*dom, &sc, stage)?;
            steps(ctx, &engine, &*dom, checked)
        })
    }

    /// `SDM.merge`: commits the top's data into the prepared base, as job
    /// `job`; `merge_bitmaps` carries the top's bitmaps into the base.
    pub fn merge(self: &Arc<Self>, job: Uuid, sc: Subchain, merge_bitmaps: bool) -> Result<()> {
        let dom = self.domain(sc.sd)?;
        let checked = self.check_subchain(&*dom, &sc, Stage::Merge)?;
        if merge_bitmaps && checked.base.format != VolumeFormat::Cow {
            return Err(Error::invalid(
                "merge_bitmaps",
                "bitmaps can only be merged into a qcow2 base",
            ));
        }
        let engine = self.clone();
        let store = self.paths.jobs.clone();
        self.jobs.spawn_as(job, "merge", Some(&store), move |ctx| {
            let _lock = engine.lock_image(sc.sd, sc.img, Mode::Exclusive)?;
            // Only the base changes (as VDSM takes only its lease).
            let _lease = engine.volume_lease(&*dom, sc.img, sc.base)?;
            let Checked { base, .. } = engine.check_subchain(&*dom, &sc, Stage::Merge)?;
            let mut merged = base.clone();
            merged.generation = next_generation(base.generation);
            // The base stays ILLEGAL until finalizeMerge; its old contents
            // are being overwritten, so there is nothing to restore.
            let change = FencedChange::begin(
                ctx,
                &*dom,
                sc.img,
                sc.base,
                &base,
                merged,
                Rollback::LeaveIllegal,
                ("merge.planned", "merge.after_illegal"),
            )?;
            let (top_path, base_path) = (
                dom.data_path(sc.img, sc.top)?,
                dom.data_path(sc.img, sc.base)?,
            );
            qemu_img::commit(&top_path, &base_path, |p| ctx.set_progress(p as u32)).map_err(
                |e| {
                    if e.is_no_space() {
                        Error::NoSpace { sd: sc.sd }
                    } else {
                        Error::VolumeMetadataWrite {
                            vol: sc.base,
                            reason: e.to_string(),
                        }
                    }
                },
            )?;
            failpoint::hit("merge.after_commit")?;
            if merge_bitmaps {
                merge_bitmaps_into_base(&*dom, &sc)?;
            }
            change.finish(ctx, "merge.done")?;
            tracing::info!(sd = %sc.sd, img = %sc.img, base = %sc.base, top = %sc.top, "top committed into base");
            Ok(())
        })?;
        Ok(())
    }

    /// Validates a subchain for `stage`: the top's parent is the base,
    /// neither is a template, the image is closed, and the base is in the
    /// state the stage expects.
    fn check_subchain(&self, dom: &dyn Domain, sc: &Subchain, stage: Stage) -> Result<Checked> {
        let base = read_in_image(dom, sc.img, sc.base)?;
        let top = read_in_image(dom, sc.img, sc.top)?;
        if top.parent != sc.base {
            return Err(Error::invalid(
                "subchain_info",
                format!(
                    "volume {} is not the parent of volume {}: only a volume and its parent can be merged",
                    sc.base, sc.top
                ),
            ));
        }
        for (vol, md) in [(sc.base, &base), (sc.top, &top)] {
            if md.role == VolumeRole::Shared || md.image != sc.img {
                return Err(Error::invalid(
                    "subchain_info",
                    format!("volume {vol} is a template, which is never merged into"),
                ));
            }
        }
        let base_ref = VolumeRef {
            sd: sc.sd,
            img: sc.img,
            vol: sc.base,
            generation: sc.base_generation,
        };
        check_generation(&base_ref, &base)?;
        check_not_prepared(self, &base_ref)?;
        if stage == Stage::Prepare {
            if top.legality != VolumeLegality::Legal {
                return Err(Error::invalid(
                    "subchain_info",
                    format!("top volume {} is ILLEGAL", sc.top),
                ));
            }
        } else if base.legality == VolumeLegality::Legal {
            return Err(Error::invalid(
                "subchain_info",
                format!(
                    "base volume {} is LEGAL: run StoragePool.prepareMerge first",
                    sc.base
                ),
            ));
        }
        if stage != Stage::Prepare && base.capacity < top.capacity {
            return Err(Error::DestinationTooSmall {
                vol: sc.base,
                size: base.capacity,
                needed: top.capacity,
            });
        }
        let mut children = children_of(dom, sc.img, sc.top)?;
        let child = match children.len() {
            0 => None,
            1 => {
                let id = children.remove(0);
                Some((id, read_in_image(dom, sc.img, id)?))
            }
            _ => {
                return Err(Error::BrokenChain {
                    img: sc.img,
                    reason: format!("volume {} has more than one child", sc.top),
                })
            }
        };
        Ok(Checked { base, top, child })
    }
}

/// Marks the base ILLEGAL and grows it to the top's virtual size.
fn prepare_steps(ctx: &TaskCtx, dom: &dyn Domain, sc: &Subchain, checked: Checked) -> Result<()> {
    let Checked { base, top, .. } = checked;
    let mut prepared = base.clone();
    prepared.legality = VolumeLegality::Illegal;
    prepared.capacity = base.capacity.max(top.capacity);
    let shrink_back = Step::ResizeImage {
        sd: sc.sd,
        img: sc.img,
        vol: sc.base,
        format: base.format,
        size: base.capacity,
    };
    let change = FencedChange::begin(
        ctx,
        dom,
        sc.img,
        sc.base,
        &base,
        prepared.clone(),
        Rollback::Restore(vec![shrink_back]),
        ("merge.prepare.planned", "merge.prepare.after_illegal"),
    )?;
    if prepared.capacity > base.capacity {
        set_virtual_size(dom, sc.img, sc.base, base.format, false, prepared.capacity)?;
    }
    failpoint::hit("merge.prepare.after_resize")?;
    change.finish(ctx, "merge.prepare.done")?;
    tracing::info!(sd = %sc.sd, img = %sc.img, base = %sc.base, top = %sc.top, capacity = prepared.capacity, "subchain prepared for merge");
    Ok(())
}

/// Adds each bitmap of the top to the base (if missing there) and merges
/// the top's bits into it.
fn merge_bitmaps_into_base(dom: &dyn Domain, sc: &Subchain) -> Result<()> {
    let (top_ref, base_ref) = (
        VolumeRef {
            sd: sc.sd,
            img: sc.img,
            vol: sc.top,
            generation: None,
        },
        VolumeRef {
            sd: sc.sd,
            img: sc.img,
            vol: sc.base,
            generation: None,
        },
    );
    let have = qcow2_info(dom, &base_ref)?.bitmap_names();
    let top_path = dom.data_path(sc.img, sc.top)?;
    let base_path = dom.data_path(sc.img, sc.base)?;
    let failed = |e: qemu_img::QemuImgError| Error::VolumeMetadataWrite {
        vol: sc.base,
        reason: e.to_string(),
    };
    for name in qcow2_info(dom, &top_ref)?.bitmap_names() {
        if !have.contains(&name) {
            qemu_img::bitmap(&base_path, &name, qemu_img::BitmapOp::Add).map_err(failed)?;
        }
        qemu_img::bitmap(&base_path, &name, qemu_img::BitmapOp::MergeFrom(&top_path))
            .map_err(failed)?;
    }
    Ok(())
}

/// Removing the top's metadata is the commit point, as in a volume delete;
/// before it, every change (the child's backing file and metadata, the
/// base's metadata) has an undo step.
fn finalize_steps(
    ctx: &TaskCtx,
    engine: &Engine,
    dom: &dyn Domain,
    sc: &Subchain,
    checked: Checked,
) -> Result<()> {
    let Checked { base, top, child } = checked;
    let version = dom.manifest()?.version;
    let (sd, img) = (sc.sd, sc.img);
    let metadata = |vol, md: &VolumeMetadata| -> Result<Step> {
        Ok(Step::WriteVolumeMetadata {
            sd,
            img,
            vol,
            contents: crate::format::volume_md::metadata_text(vol, md, version)?,
        })
    };
    let mut undo = Vec::new();
    if let Some((id, md)) = &child {
        undo.push(Step::Rebase {
            sd,
            img,
            vol: *id,
            backing: sc.top,
            backing_format: top.format,
        });
        undo.push(metadata(*id, md)?);
    }
    undo.push(metadata(sc.base, &base)?);
    let redo = Step::remove_data_and_lease(sd, img, sc.top).to_vec();
    ctx.plan(RecoveryPlan {
        undo,
        redo: redo.clone(),
        commit: Some(Commit::VolumeMissing {
            sd,
            img,
            vol: sc.top,
        }),
    })?;
    failpoint::hit("merge.finalize.planned")?;
    ctx.check_abort()?;

    if let Some((id, md)) = &child {
        let path = dom.data_path(img, *id)?;
        qemu_img::rebase_unsafe(&path, &sc.base.to_string(), base.format.qemu_name()).map_err(
            |e| Error::VolumeMetadataWrite {
                vol: *id,
                reason: e.to_string(),
            },
        )?;
        failpoint::hit("merge.finalize.after_rebase")?;
        let mut repointed = md.clone();
        repointed.parent = sc.base;
        dom.write_volume(img, *id, &repointed, version)?;
    }
    let mut finished = base.clone();
    finished.legality = VolumeLegality::Legal;
    finished.role = if child.is_some() {
        VolumeRole::Internal
    } else {
        VolumeRole::Leaf
    };
    dom.write_volume(img, sc.base, &finished, version)?;
    failpoint::hit("merge.finalize.after_metadata")?;

    dom.remove_part(img, sc.top, Part::Metadata)?;
    ctx.commit();
    failpoint::hit("merge.finalize.after_top_metadata")?;
    for step in &redo {
        engine.run_step(step)?;
    }
    failpoint::hit("merge.finalize.done")?;
    tracing::info!(sd = %sd, img = %img, base = %sc.base, top = %sc.top, "merge finalized; top removed");
    Ok(())
}
