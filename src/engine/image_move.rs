//! `Image.move`: copy (COPY) or move (MOVE) a whole image, its chain
//! intact, to another domain of the pool, as one SPM task.
//!
//! Of the schema's image-level copy verbs Cairn implements `Image.move`
//! (the deprecated `Image.cloneStructure` + `Image.syncData` pair does the
//! same in two calls; a platform wanting per-volume control uses
//! `SDM.copy_data` onto volumes it created itself).
//!
//! Each volume file is copied byte for byte (a qcow2 layer keeps its
//! backing name, bitmaps and compat; holes stay holes; FICLONE or
//! copy_file_range when the file systems allow) into a staging directory
//! named like an image being removed, so a crash leaves only garbage that
//! recovery or GC removes. Renaming the staging directory to the image's
//! name is the commit point; for MOVE the source image is removed after it
//! (with `postZero`/`discard`), as redo steps. A template the image is
//! cloned from must already be on the destination; it is hard-linked in,
//! as the clone's own domain does.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use super::recovery::{Commit, RecoveryPlan, Step};
use super::resources::{Mode, Resource, DEFAULT_TIMEOUT};
use super::volumes::{own_volumes, read_in_image, template_users};
use super::{Engine, TaskCtx};
use crate::backend::file::volume::{LEASE_SUFFIX, META_SUFFIX, VOLUME_MODE};
use crate::backend::file::{FileDomain, IMAGES, REMOVED_IMAGE_PREFIX};
use crate::error::{Error, IoContext, Result};
use crate::failpoint;
use crate::format::volume_md::metadata_bytes;
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::{copy, durable};
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
        let plan = self.check_move(&src, &dst, &req)?;
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
            let plan = engine.check_move(&src, &dst, &req)?;
            move_steps(ctx, &engine, &src, &dst, &req, &plan)
        })
    }

    fn check_move(&self, src: &FileDomain, dst: &FileDomain, req: &MoveImage) -> Result<Plan> {
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
                let users = template_users(src, img, *vol);
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
    src: &FileDomain,
    dst: &FileDomain,
    req: &MoveImage,
    plan: &Plan,
) -> Result<()> {
    let img = req.img;
    let staging_name = format!("{REMOVED_IMAGE_PREFIX}{img}.incoming");
    let staging_rel = format!("{IMAGES}/{staging_name}");
    let discard_staging = Step::RemoveTree {
        sd: req.dst_sd,
        path: staging_rel,
    };
    let mut redo = Vec::new();
    if req.operation == ImageMoveOperation::Move {
        let src_rel = format!("{IMAGES}/{img}");
        if req.post_zero || req.discard {
            redo.push(Step::Scrub {
                sd: req.sd,
                path: src_rel.clone(),
                zero: req.post_zero,
                discard: req.discard,
            });
        }
        redo.push(Step::RemoveTree {
            sd: req.sd,
            path: src_rel,
        });
    }
    ctx.plan(RecoveryPlan {
        undo: vec![discard_staging.clone()],
        redo: redo.clone(),
        commit: Some(Commit::Exists {
            sd: req.dst_sd,
            path: format!("{IMAGES}/{img}"),
        }),
    })?;
    failpoint::hit("image.move.planned")?;
    // A leftover of an earlier, interrupted attempt.
    engine.run_step(&discard_staging)?;
    let images = dst.images_dir();
    let staging = images.join(&staging_name);
    durable::create_dir(&staging, 0o755).ctx("cannot create", &staging)?;
    let failed = |e| dst.io_failure(e, |e| Error::io_path("cannot copy into", &staging, e));

    if let Some((timg, tvol)) = plan.template {
        for suffix in ["", META_SUFFIX, LEASE_SUFFIX] {
            let name = format!("{tvol}{suffix}");
            let from = dst.image_dir(timg).join(&name);
            fs::hard_link(&from, staging.join(&name)).map_err(failed)?;
        }
    }
    let version = dst.manifest()?.version;
    let total: u64 = plan
        .volumes
        .iter()
        .map(|(vol, _)| src.volume_sizes(img, *vol).map(|(a, _)| a).unwrap_or(0))
        .sum();
    let mut done = 0;
    for (vol, md) in &plan.volumes {
        for suffix in ["", LEASE_SUFFIX] {
            let from = src.image_dir(img).join(format!("{vol}{suffix}"));
            let to = staging.join(format!("{vol}{suffix}"));
            let s =
                crate::primitives::nofollow::open(&from, crate::primitives::nofollow::Access::READ)
                    .map_err(|e| Error::UnsafeStorage(e.to_string()))?;
            let d = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(VOLUME_MODE)
                .open(&to)
                .map_err(failed)?;
            let before = done;
            copy::copy_raw(&s, &d, |n, _| {
                if suffix.is_empty() {
                    done = before + n;
                    if let Some(pct) = (done * 100).checked_div(total) {
                        ctx.set_progress(pct.min(99) as u32);
                    }
                }
            })
            .map_err(failed)?;
            ctx.check_abort()?;
        }
        let mut moved = md.clone();
        moved.domain = req.dst_sd;
        let bytes = metadata_bytes(*vol, &moved, version)?;
        let meta = staging.join(format!("{vol}{META_SUFFIX}"));
        durable::write_atomic(&meta, &bytes, VOLUME_MODE).map_err(failed)?;
    }
    durable::fsync_dir(&staging).map_err(failed)?;
    failpoint::hit("image.move.after_copy")?;

    let target = dst.image_dir(img);
    fs::rename(&staging, &target).ctx("cannot rename", &staging)?;
    durable::fsync_dir(&images).ctx("cannot sync", &images)?;
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
