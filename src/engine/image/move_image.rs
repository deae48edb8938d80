//! `Image.move`: copy (COPY) or move (MOVE) a whole image, its chain
//! intact, to another domain of the pool, as one SPM task.
//!
//! Of the schema's image-level copy verbs Cairn implements `Image.move`
//! (the deprecated `Image.cloneStructure` + `Image.syncData` pair does the
//! same in two calls; a platform wanting per-volume control uses
//! `SDM.copy_data` onto volumes it created itself).
//!
//! Each volume's data and lease are copied byte for byte (a qcow2 layer
//! keeps its backing name, bitmaps and compat; holes stay holes; FICLONE
//! or copy_file_range when the storage allows) into an import the
//! destination keeps out of its catalogue, so a crash leaves only garbage
//! that recovery or GC removes. Committing the import is the commit point;
//! for MOVE the source image is then retired and purged (with
//! `postZero`/`discard`), as redo steps. A template the image is cloned
//! from must already be on the destination; it is linked in, as the
//! clone's own domain does.

use std::sync::Arc;

use crate::backend::Domain;
use crate::engine::resources::{Mode, Resource, DEFAULT_TIMEOUT};
use crate::engine::tasks::recovery::{Commit, RecoveryPlan, Step};
use crate::engine::volume::{own_volumes, read_in_image};
use crate::engine::{Engine, TaskCtx};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::copy;
use crate::primitives::nofollow::Access;
use crate::types::{ImageMoveOperation, Uuid, VolumeLegality, VolumeRole, BLANK_UUID};

#[derive(Debug, Clone)]
pub struct MoveImage {
    pub pool: Uuid,
    pub sd: Uuid,
    pub img: Uuid,
    pub dst_sd: Uuid,
    pub operation: ImageMoveOperation,
    pub post_zero: bool,
    pub discard: bool,
    /// Copy ILLEGAL volumes too.
    pub force: bool,
}

/// What is copied: the image's own volumes and the template below them.
struct Plan {
    volumes: Vec<(Uuid, VolumeMetadata)>,
    /// (template image, template volume), linked from the destination's copy.
    template: Option<(Uuid, Uuid)>,
}

impl Engine {
    pub fn move_image(self: &Arc<Self>, req: MoveImage) -> Result<Uuid> {
        let pool = self.require_spm(req.pool)?;
        let src = self.pool_domain(&pool, req.sd)?;
        let dst = self.pool_domain(&pool, req.dst_sd)?;
        if req.sd == req.dst_sd {
            return Err(Error::invalid(
                "dstSdUUID",
                "the destination is the image's own domain",
            ));
        }
        let plan = self.check_move(&*src, &*dst, &req)?;
        let engine = self.clone();
        let store = self.task_store(&pool)?;
        self.tasks.spawn("moveImage", Some(&store), move |ctx| {
            let src_mode = match req.operation {
                ImageMoveOperation::Copy => Mode::Shared,
                ImageMoveOperation::Move => Mode::Exclusive,
            };
            let mut locks = vec![
                (Resource::storage(req.sd), Mode::Shared),
                (Resource::storage(req.dst_sd), Mode::Shared),
                (Resource::image(req.sd, req.img), src_mode),
                (Resource::image(req.dst_sd, req.img), Mode::Exclusive),
            ];
            if let Some((timg, _)) = plan.template {
                locks.push((Resource::image(req.dst_sd, timg), Mode::Shared));
            }
            let _lock = engine.resources.acquire(&locks, DEFAULT_TIMEOUT)?;
            engine.require_spm(req.pool)?;
            let plan = engine.check_move(&*src, &*dst, &req)?;
            move_steps(ctx, &engine, &*src, &*dst, &req, &plan)
        })
    }

    fn check_move(&self, src: &dyn Domain, dst: &dyn Domain, req: &MoveImage) -> Result<Plan> {
        let img = req.img;
        if !src.has_image(img) {
            return Err(Error::ImageNotFound { img, sd: req.sd });
        }
        if dst.has_image(img) {
            return Err(Error::invalid(
                "dstSdUUID",
                format!("image {img} already exists on domain {}", req.dst_sd),
            ));
        }
        let ids = own_volumes(src, img)?;
        let mut volumes = Vec::new();
        for vol in &ids {
            let md = read_in_image(src, img, *vol)?;
            if md.legality != VolumeLegality::Legal && !req.force {
                return Err(Error::invalid(
                    "imageID",
                    format!("volume {vol} is ILLEGAL (pass force to copy it anyway)"),
                ));
            }
            volumes.push((*vol, md));
        }
        let mut template = None;
        for (_, md) in &volumes {
            if md.parent != BLANK_UUID && !ids.contains(&md.parent) {
                let t = read_in_image(src, img, md.parent)?;
                let on_dst = dst
                    .read_volume(t.image, md.parent)
                    .is_ok_and(|d| d.role == VolumeRole::Shared);
                if !on_dst {
                    return Err(Error::invalid(
                        "dstSdUUID",
                        format!(
                            "template {} of image {} must be on domain {} first",
                            md.parent, t.image, req.dst_sd
                        ),
                    ));
                }
                template = Some((t.image, md.parent));
            }
        }
        if req.operation == ImageMoveOperation::Move {
            if self.paths.run_link(req.sd, img).exists() {
                return Err(Error::invalid(
                    "imageID",
                    format!("image {img} is prepared for a VM; it can be copied, not moved"),
                ));
            }
            for (vol, md) in &volumes {
                let users = src.template_users(img, *vol);
                if md.role == VolumeRole::Shared && users > 0 {
                    return Err(Error::TemplateInUse { vol: *vol, users });
                }
            }
        }
        Ok(Plan { volumes, template })
    }
}

fn move_steps(
    ctx: &TaskCtx,
    engine: &Engine,
    src: &dyn Domain,
    dst: &dyn Domain,
    req: &MoveImage,
    plan: &Plan,
) -> Result<()> {
    let img = req.img;
    let discard_import = Step::DiscardImport {
        sd: req.dst_sd,
        img,
    };
    let mut redo = Vec::new();
    if req.operation == ImageMoveOperation::Move {
        redo.push(Step::RetireImage { sd: req.sd, img });
        redo.push(Step::PurgeImage {
            sd: req.sd,
            img,
            zero: req.post_zero,
            discard: req.discard,
        });
    }
    ctx.plan(RecoveryPlan {
        undo: vec![discard_import],
        redo: redo.clone(),
        commit: Some(Commit::ImageExists {
            sd: req.dst_sd,
            img,
        }),
    })?;
    failpoint::hit("image.move.planned")?;
    dst.begin_import(img)?;
    if let Some(template) = plan.template {
        dst.import_template(img, template)?;
    }
    let version = dst.manifest()?.version;
    let alignment = dst.manifest()?.alignment;
    let mut lens = Vec::new();
    for (vol, md) in &plan.volumes {
        lens.push(src.data_len(img, *vol, md)?);
    }
    let total: u64 = lens.iter().sum();
    let mut done = 0;
    for ((vol, md), &len) in plan.volumes.iter().zip(&lens) {
        let s = src.open_data(img, *vol, Access::READ)?;
        let d = dst.import_data(img, *vol, md, len)?;
        let before = done;
        copy::copy_raw_len(&s, &d, len, |n, _| {
            done = before + n;
            if let Some(pct) = (done * 100).checked_div(total) {
                ctx.set_progress(pct.min(99) as u32);
            }
        })
        .map_err(|e| {
            crate::error::no_space_or(req.dst_sd, e, |e| {
                Error::io(format!("cannot copy volume {vol}"), e)
            })
        })?;
        ctx.check_abort()?;
        // A lease names its domain's lockspace: made anew, never copied.
        let lease = dst.import_lease(img, *vol, alignment)?;
        if engine.sanlock_for(dst).is_some() {
            crate::engine::volume::lease::format_at(dst, *vol, lease)?;
        }
        let mut moved = md.clone();
        moved.domain = req.dst_sd;
        dst.import_metadata(img, *vol, &moved, version)?;
    }
    failpoint::hit("image.move.after_copy")?;

    dst.commit_import(img)?;
    ctx.commit();
    failpoint::hit("image.move.after_commit")?;
    for step in &redo {
        engine.run_step(step)?;
    }
    ctx.set_progress(100);
    failpoint::hit("image.move.done")?;
    tracing::info!(img = %img, from = %req.sd, to = %req.dst_sd, operation = ?req.operation, bytes = total, "image copied");
    Ok(())
}
