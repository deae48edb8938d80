//! `SDM.copy_data`: copy a volume, with the chain below it collapsed, onto
//! an existing base volume, in the same domain or another, converting
//! between RAW and COW.
//!
//! The destination is fenced like any host job's volume: ILLEGAL while the
//! copy runs, LEGAL with the next generation once it is complete. A copy
//! that fails or is interrupted leaves it ILLEGAL: its old contents are
//! gone, so there is nothing to restore, and nobody may use it half-copied.

use std::sync::Arc;

use crate::backend::Domain;
use crate::engine::image::chain_of;
use crate::engine::jobs::{check_generation, legal_next, FencedChange, Rollback, VolumeRef};
use crate::engine::resources::{Mode, Resource, DEFAULT_TIMEOUT};
use crate::engine::volume::{children_of, read_in_image};
use crate::engine::{Engine, TaskCtx};
use crate::error::{no_space_or, Error, Result};
use crate::failpoint;
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::nofollow::Access;
use crate::primitives::{copy, qemu_img};
use crate::types::{VolumeAllocation, VolumeFormat, VolumeRole, BLANK_UUID};

impl Engine {
    pub fn copy_data(
        self: &Arc<Self>,
        job: uuid::Uuid,
        src: VolumeRef,
        dst: VolumeRef,
        copy_bitmaps: bool,
    ) -> Result<()> {
        if (src.sd, src.vol) == (dst.sd, dst.vol) {
            return Err(Error::invalid(
                "destination",
                "source and destination are the same volume",
            ));
        }
        let (sdom, ddom) = (self.domain(src.sd)?, self.domain(dst.sd)?);
        // Checked before the job starts so bad input fails the call itself.
        self.check_copy(&*sdom, &*ddom, &src, &dst, copy_bitmaps)?;
        let engine = self.clone();
        let store = self.paths.jobs.clone();
        self.jobs
            .spawn_as(job, "copy_data", Some(&store), move |ctx| {
                let _lock = engine.resources.acquire(
                    &[
                        (Resource::storage(src.sd), Mode::Shared),
                        (Resource::storage(dst.sd), Mode::Shared),
                        (Resource::image(src.sd, src.img), Mode::Shared),
                        (Resource::image(dst.sd, dst.img), Mode::Exclusive),
                    ],
                    DEFAULT_TIMEOUT,
                )?;
                let _lease = engine.volume_lease(&*ddom, dst.img, dst.vol)?;
                // Again under the locks: the volumes may have changed while queued.
                let (chain, original) =
                    engine.check_copy(&*sdom, &*ddom, &src, &dst, copy_bitmaps)?;
                copy_steps(
                    ctx,
                    (&*sdom, &src),
                    (&*ddom, &dst),
                    &chain,
                    original,
                    copy_bitmaps,
                )
            })?;
        Ok(())
    }

    /// Validates a copy; returns the source chain (top first) and the
    /// destination's metadata.
    fn check_copy(
        &self,
        sdom: &dyn Domain,
        ddom: &dyn Domain,
        src: &VolumeRef,
        dst: &VolumeRef,
        copy_bitmaps: bool,
    ) -> Result<(Vec<(uuid::Uuid, VolumeMetadata)>, VolumeMetadata)> {
        let chain = chain_of(sdom, src.img, src.vol)?;
        let smd = &chain[0].1;
        check_generation(src, smd)?;
        let dmd = read_in_image(ddom, dst.img, dst.vol)?;
        check_generation(dst, &dmd)?;
        if copy_bitmaps && (smd.format, dmd.format) != (VolumeFormat::Cow, VolumeFormat::Cow) {
            return Err(Error::invalid(
                "copy_bitmaps",
                "bitmaps are copied only from a qcow2 volume to a qcow2 volume",
            ));
        }
        if dmd.image != dst.img || dmd.role == VolumeRole::Shared {
            return Err(Error::invalid(
                "destination",
                format!("volume {} is a template", dst.vol),
            ));
        }
        if dmd.parent != BLANK_UUID {
            return Err(Error::invalid(
                "destination",
                "the destination must be a base volume (copies collapse the source chain into it)",
            ));
        }
        if !children_of(ddom, dst.img, dst.vol)?.is_empty() {
            return Err(Error::VolumeBusy {
                vol: dst.vol,
                reason: "other volumes are built on it".into(),
            });
        }
        if self.paths.run_link(dst.sd, dst.img).exists() {
            return Err(Error::VolumeBusy {
                vol: dst.vol,
                reason: "its image is prepared for a VM".into(),
            });
        }
        if dmd.capacity < smd.capacity {
            return Err(Error::DestinationTooSmall {
                vol: dst.vol,
                size: dmd.capacity,
                needed: smd.capacity,
            });
        }
        Ok((chain, dmd))
    }
}

/// Parallel requests of a qemu-img copy (qemu-img's default is 8).
const CONVERT_COROUTINES: u32 = 16;

/// Makes a sparse destination an empty image of its capacity (same format;
/// a qcow2 keeps its compat level). Its old contents are being replaced
/// and the volume is fenced ILLEGAL, so nothing of value is lost.
fn reset_to_empty(ddom: &dyn Domain, dst: &VolumeRef, md: &VolumeMetadata) -> Result<()> {
    let path = ddom.data_path(dst.img, dst.vol)?;
    let failed = |e: qemu_img::QemuImgError| Error::VolumeCreation {
        vol: dst.vol,
        reason: e.to_string(),
    };
    match md.format {
        VolumeFormat::Raw => ddom.reset_raw(dst.img, dst.vol, md.capacity),
        VolumeFormat::Cow => {
            let info =
                qemu_img::info(&path, qemu_img::InfoOptions::format("qcow2")).map_err(failed)?;
            let opts = qemu_img::CreateOptions {
                format: "qcow2",
                size: Some(md.capacity),
                backing: None,
                compat: info.compat(),
                preallocation: None,
            };
            qemu_img::create(&path, &opts).map_err(failed)
        }
    }
}

/// Copies `src` (with `chain`, top first) onto `dst`, whose metadata was
/// `original`.
fn copy_steps(
    ctx: &TaskCtx,
    (sdom, src): (&dyn Domain, &VolumeRef),
    (ddom, dst): (&dyn Domain, &VolumeRef),
    chain: &[(uuid::Uuid, VolumeMetadata)],
    original: VolumeMetadata,
    copy_bitmaps: bool,
) -> Result<()> {
    let done = legal_next(&original);
    let change = FencedChange::begin(
        ctx,
        ddom,
        dst.img,
        dst.vol,
        &original,
        done,
        Rollback::LeaveIllegal,
        ("copy.planned", "copy.after_illegal"),
    )?;

    let src_path = sdom.data_path(src.img, src.vol)?;
    let dst_path = ddom.data_path(dst.img, dst.vol)?;
    let top = &chain[0].1;
    let native =
        chain.len() == 1 && top.format == VolumeFormat::Raw && original.format == VolumeFormat::Raw;
    if native {
        let s = sdom.open_data(src.img, src.vol, Access::READ)?;
        let d = ddom.open_data(dst.img, dst.vol, Access::READ_WRITE)?;
        let stats = copy::copy_raw(&s, &d, |n, total| {
            if let Some(pct) = (n * 100).checked_div(total) {
                ctx.set_progress(pct as u32);
            }
        })
        .map_err(|e| {
            no_space_or(ddom.id(), e, |e| {
                Error::io_path("cannot copy into", &dst_path, e)
            })
        })?;
        if original.allocation == VolumeAllocation::Preallocated && top.capacity > 0 {
            rustix::fs::fallocate(&d, rustix::fs::FallocateFlags::KEEP_SIZE, 0, top.capacity)
                .map_err(|e| {
                    no_space_or(ddom.id(), e.into(), |e| {
                        Error::io_path("cannot allocate", &dst_path, e)
                    })
                })?;
        }
        tracing::info!(job = %ctx.id(), method = ?stats.method, bytes = stats.copied, "raw copy done");
    } else {
        // A sparse destination is reset to an empty image first, so
        // qemu-img writes only the source's data: an empty 1 TiB source
        // copies in milliseconds instead of zeroing a terabyte.
        let fresh = original.allocation == VolumeAllocation::Sparse;
        if fresh {
            reset_to_empty(ddom, dst, &original)?;
        }
        let opts = qemu_img::ConvertOptions {
            src_format: top.format.qemu_name(),
            dst_format: original.format.qemu_name(),
            compat: None,
            backing: None,
            existing_target: true,
            unordered: true,
            bitmaps: copy_bitmaps,
            target_is_zero: fresh,
            coroutines: Some(CONVERT_COROUTINES),
        };
        qemu_img::convert(&src_path, &dst_path, &opts, |p| ctx.set_progress(p as u32)).map_err(
            |e| {
                if e.is_no_space() {
                    Error::NoSpace { sd: dst.sd }
                } else {
                    Error::VolumeCreation {
                        vol: dst.vol,
                        reason: e.to_string(),
                    }
                }
            },
        )?;
    }
    failpoint::hit("copy.after_data")?;
    change.finish(ctx, "copy.done")?;
    tracing::info!(src = %src.vol, dst = %dst.vol, "volume copied");
    Ok(())
}
