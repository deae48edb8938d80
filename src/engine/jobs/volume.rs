//! Host jobs that rewrite one closed volume in place: `SDM.sparsify_volume`,
//! `SDM.amend_volume` (qcow2 compat level) and the persistent bitmaps of
//! incremental backup (`SDM.add_bitmap`, `SDM.remove_bitmap`,
//! `SDM.clear_bitmaps`).
//!
//! Each runs as a [`VolumeJob`]: the volume reads ILLEGAL while it changes
//! and LEGAL with the next generation afterwards. Sparsifying never changes
//! what the volume reads, so it rolls back by restoring the metadata;
//! adding a bitmap rolls back by removing it; an interrupted removal or amend leaves
//! the volume ILLEGAL (as VDSM does): the caller retries, or inspects it
//! and sets it LEGAL with `SDM.update_volume`.

use std::sync::Arc;

use crate::backend::Domain;
use crate::engine::image::chain_of;
use crate::engine::jobs::{check_not_prepared, legal_next, Rollback, VolumeJob, VolumeRef};
use crate::engine::tasks::recovery::Step;
use crate::engine::volume::ops::chain_spec;
use crate::engine::{Engine, TaskCtx};
use crate::error::{no_space_or, Error, Result};
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::nofollow::Access;
use crate::primitives::qemu_img::{self, BitmapOp, InfoOptions, QemuImgError};
use crate::primitives::sparsify;
use crate::types::{Uuid, VolumeAllocation, VolumeFormat, VolumeRole};

/// qcow2 limits a bitmap name to 1023 bytes.
const MAX_BITMAP_NAME: usize = 1023;

/// qcow2 compat levels `SDM.amend_volume` accepts (`Qcow2Compat`).
const COMPAT_LEVELS: &[&str] = &["0.10", "1.1"];

impl Engine {
    /// `SDM.amend_volume`: sets the qcow2 compat level of a volume.
    pub fn amend_volume(
        self: &Arc<Self>,
        job: Uuid,
        target: VolumeRef,
        compat: String,
    ) -> Result<()> {
        if !COMPAT_LEVELS.contains(&compat.as_str()) {
            return Err(Error::invalid(
                "qcow2_attr.compat",
                format!("{compat:?} is not a qcow2 compat level (0.10 or 1.1)"),
            ));
        }
        let checked = compat.clone();
        self.spawn_volume_job(
            job,
            VolumeJob {
                verb: "amend_volume",
                target,
                failpoints: [
                    "amend.planned",
                    "amend.after_illegal",
                    "amend.after_change",
                    "amend.done",
                ],
                check: move |e: &Engine, dom: &dyn Domain, md: &VolumeMetadata| {
                    check_rewritable(e, &target, md)?;
                    if checked == "0.10" && !qcow2_info(dom, &target)?.bitmap_names().is_empty() {
                        return Err(Error::invalid(
                            "qcow2_attr.compat",
                            format!(
                                "volume {} has bitmaps, which compat 0.10 cannot keep",
                                target.vol
                            ),
                        ));
                    }
                    Ok(())
                },
                plan: |md: &VolumeMetadata| (legal_next(md), Rollback::LeaveIllegal),
                work: move |_: &TaskCtx, dom: &dyn Domain, _: &VolumeMetadata| {
                    let path = dom.data_path(target.img, target.vol)?;
                    qemu_img::amend_compat(&path, &compat).map_err(|e| qemu_failed(target.vol, e))
                },
            },
        )
    }

    /// `SDM.sparsify_volume`: gives back the space of ranges that hold
    /// only zeros, in place; what the volume reads does not change, so an
    /// interrupted sparsify simply restores the old metadata.
    pub fn sparsify_volume(self: &Arc<Self>, job: Uuid, target: VolumeRef) -> Result<()> {
        self.spawn_volume_job(
            job,
            VolumeJob {
                verb: "sparsify_volume",
                target,
                failpoints: [
                    "sparsify.planned",
                    "sparsify.after_illegal",
                    "sparsify.after_change",
                    "sparsify.done",
                ],
                check: move |e: &Engine, _: &dyn Domain, md: &VolumeMetadata| {
                    if md.role == VolumeRole::Shared {
                        return Err(Error::invalid(
                            "vol_info",
                            format!("volume {} is a template, which is never changed", target.vol),
                        ));
                    }
                    if md.allocation == VolumeAllocation::Preallocated {
                        return Err(Error::invalid(
                            "vol_info",
                            format!("volume {} is PREALLOCATED and stays allocated", target.vol),
                        ));
                    }
                    check_not_prepared(e, &target)
                },
                plan: |md: &VolumeMetadata| (legal_next(md), Rollback::Restore(Vec::new())),
                work: move |ctx: &TaskCtx, dom: &dyn Domain, md: &VolumeMetadata| {
                    let path = dom.data_path(target.img, target.vol)?;
                    let progress = |done: u64, total: u64| {
                        if let Some(pct) = (done * 100).checked_div(total) {
                            ctx.set_progress(pct as u32);
                        }
                    };
                    let stats = match md.format {
                        VolumeFormat::Raw => {
                            let f = dom.open_data(target.img, target.vol, Access::READ_WRITE)?;
                            sparsify::sparsify_raw(&f, progress).map_err(|e| {
                                no_space_or(dom.id(), e, |e| Error::io_path("cannot sparsify", &path, e))
                            })?
                        }
                        VolumeFormat::Cow => {
                            let chain = chain_of(dom, target.img, target.vol)?;
                            let spec = chain_spec(dom, target.img, &chain)?;
                            let cluster = qcow2_info(dom, &target)?.cluster_size.unwrap_or(65536);
                            let f = dom.open_data(target.img, target.vol, Access::READ)?;
                            sparsify::sparsify_qcow2(&f, &spec, cluster, progress)
                                .map_err(|e| qemu_failed(target.vol, e))?
                        }
                    };
                    tracing::info!(job = %ctx.id(), vol = %target.vol, scanned = stats.scanned, freed = stats.freed, "volume sparsified");
                    Ok(())
                },
            },
        )
    }

    /// `SDM.add_bitmap`: adds an empty, enabled persistent bitmap.
    pub fn add_bitmap(self: &Arc<Self>, job: Uuid, target: VolumeRef, name: String) -> Result<()> {
        validate_bitmap_name(&name)?;
        let (checked, undo) = (name.clone(), name.clone());
        self.spawn_volume_job(
            job,
            VolumeJob {
                verb: "add_bitmap",
                target,
                failpoints: ["bitmap.add.planned", "bitmap.add.after_illegal",
"bitmap.add.after_change", "bitmap.add.done"],
                check: move |e: &Engine, dom: &dyn Domain, md: &VolumeMetadata| {
                    check_rewritable(e, &target, md)?;
                    let info = qcow2_info(dom, &target)?;
                    if info.compat() == Some("0.10") {
                        return Err(Error::invalid(
                            "vol_info",
                            format!("volume {} is qcow2 compat 0.10, which has no bitmaps; amend it to 1.1", target.vol),
                        ));
                    }
                    if info.bitmap_names().contains(&checked) {
                        return Err(Error::invalid(
                            "bitmap",
                            format!("volume {} already has a bitmap named {checked:?}", target.vol),
                        ));
                    }
                    Ok(())
                },
                plan: move |md: &VolumeMetadata| {
                    let undo = Step::RemoveBitmap {
                        sd: target.sd,
                        img: target.img,
                        vol: target.vol,
                        name: undo,
                    };
                    (legal_next(md), Rollback::Restore(vec![undo]))
                },
                work: move |_: &TaskCtx, dom: &dyn Domain, _: &VolumeMetadata| {
                    change_bitmaps(dom, &target, &[name], BitmapOp::Add)
                },
            },
        )
    }

    /// `SDM.remove_bitmap`.
    pub fn remove_bitmap(
        self: &Arc<Self>,
        job: Uuid,
        target: VolumeRef,
        name: String,
    ) -> Result<()> {
        validate_bitmap_name(&name)?;
        let checked = name.clone();
        self.spawn_volume_job(
            job,
            VolumeJob {
                verb: "remove_bitmap",
                target,
                failpoints: [
                    "bitmap.remove.planned",
                    "bitmap.remove.after_illegal",
                    "bitmap.remove.after_change",
                    "bitmap.remove.done",
                ],
                check: move |e: &Engine, dom: &dyn Domain, md: &VolumeMetadata| {
                    check_rewritable(e, &target, md)?;
                    if !qcow2_info(dom, &target)?.bitmap_names().contains(&checked) {
                        return Err(Error::invalid(
                            "bitmap",
                            format!("volume {} has no bitmap named {checked:?}", target.vol),
                        ));
                    }
                    Ok(())
                },
                plan: |md: &VolumeMetadata| (legal_next(md), Rollback::LeaveIllegal),
                work: move |_: &TaskCtx, dom: &dyn Domain, _: &VolumeMetadata| {
                    change_bitmaps(dom, &target, &[name], BitmapOp::Remove)
                },
            },
        )
    }

    /// `SDM.clear_bitmaps`: removes every bitmap of the volume.
    pub fn clear_bitmaps(self: &Arc<Self>, job: Uuid, target: VolumeRef) -> Result<()> {
        self.spawn_volume_job(
            job,
            VolumeJob {
                verb: "clear_bitmaps",
                target,
                failpoints: [
                    "bitmap.clear.planned",
                    "bitmap.clear.after_illegal",
                    "bitmap.clear.after_change",
                    "bitmap.clear.done",
                ],
                check: move |e: &Engine, _: &dyn Domain, md: &VolumeMetadata| {
                    check_rewritable(e, &target, md)
                },
                plan: |md: &VolumeMetadata| (legal_next(md), Rollback::LeaveIllegal),
                work: move |_: &TaskCtx, dom: &dyn Domain, _: &VolumeMetadata| {
                    let names = qcow2_info(dom, &target)?.bitmap_names();
                    change_bitmaps(dom, &target, &names, BitmapOp::Remove)
                },
            },
        )
    }
}

fn change_bitmaps(
    dom: &dyn Domain,
    target: &VolumeRef,
    names: &[String],
    op: BitmapOp<'_>,
) -> Result<()> {
    let path = dom.data_path(target.img, target.vol)?;
    for name in names {
        qemu_img::bitmap(&path, name, op).map_err(|e| qemu_failed(target.vol, e))?;
    }
    Ok(())
}

pub(crate) fn validate_bitmap_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_BITMAP_NAME {
        return Err(Error::invalid(
            "bitmap",
            format!("a bitmap name is 1 to {MAX_BITMAP_NAME} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "bitmap",
            "a bitmap name may not contain control characters",
        ));
    }
    Ok(())
}

/// Volumes a job may rewrite: qcow2, not a template, not open by a VM.
fn check_rewritable(engine: &Engine, target: &VolumeRef, md: &VolumeMetadata) -> Result<()> {
    if md.format != VolumeFormat::Cow {
        return Err(Error::invalid(
            "vol_info",
            format!("volume {} is RAW; only qcow2 volumes have this", target.vol),
        ));
    }
    if md.role == VolumeRole::Shared {
        return Err(Error::invalid(
            "vol_info",
            format!(
                "volume {} is a template, which is never changed",
                target.vol
            ),
        ));
    }
    check_not_prepared(engine, target)
}

pub(crate) fn qcow2_info(dom: &dyn Domain, target: &VolumeRef) -> Result<qemu_img::ImageInfo> {
    let path = dom.data_path(target.img, target.vol)?;
    qemu_img::info(&path, InfoOptions::format("qcow2")).map_err(|e| Error::VolumeMetadataRead {
        vol: target.vol,
        reason: e.to_string(),
    })
}

fn qemu_failed(vol: Uuid, e: QemuImgError) -> Error {
    if e.is_no_space() {
        return Error::Io {
            context: format!("cannot change volume {vol}"),
            source: std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
        };
    }
    Error::VolumeMetadataWrite {
        vol,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_names_are_checked() {
        assert!(validate_bitmap_name("backup-1").is_ok());
        assert!(validate_bitmap_name("").is_err());
        assert!(validate_bitmap_name("a\u{7}b").is_err());
        assert!(validate_bitmap_name(&"x".repeat(1024)).is_err());
    }
}
