//! The engine's recovery step runner, and garbage collection of what a
//! crash can leave on a domain.
//!
//! Garbage collection runs when this host becomes SPM, after interrupted
//! tasks are recovered and before any new task can start, so nothing it
//! removes is in use.

use crate::backend::{Domain, GcReport};
use crate::engine::tasks::recovery::{Commit, Step, StepRunner};
use crate::engine::volume::{children_of, own_volumes};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::primitives::qemu_img::{self, InfoOptions};
use crate::types::VolumeRole;

impl Engine {
    /// Runs one recovery step (also used by task bodies for their redo part).
    pub(crate) fn run_step(&self, step: &Step) -> Result<()> {
        match step {
            Step::RemovePart { sd, img, vol, part } => {
                self.domain(*sd)?.remove_part(*img, *vol, *part)
            }
            Step::UnlinkTemplate { sd, img, vol } => self.domain(*sd)?.unlink_template(*img, *vol),
            Step::WriteVolumeMetadata {
                sd,
                img,
                vol,
                contents,
            } => {
                // Checked before it is written: records live on shared storage.
                crate::format::volume_md::VolumeMetadata::parse(contents.as_bytes())
                    .map_err(|e| Error::invalid("task record", e.to_string()))?;
                self.domain(*sd)?.write_volume_text(*img, *vol, contents)
            }
            Step::RelinkLeaf { sd, img, vol } => {
                let dom = self.domain(*sd)?;
                let Ok(mut md) = dom.read_volume(*img, *vol) else {
                    return Ok(());
                };
                if md.role == VolumeRole::Internal && children_of(&*dom, *img, *vol)?.is_empty() {
                    md.role = VolumeRole::Leaf;
                    dom.write_volume(*img, *vol, &md, dom.manifest()?.version)?;
                }
                Ok(())
            }
            Step::Scrub {
                sd,
                img,
                vol,
                zero,
                discard,
            } => self.domain(*sd)?.scrub(*img, *vol, *zero, *discard),
            Step::RetireImage { sd, img } => self.domain(*sd)?.retire_image(*img),
            Step::PurgeImage {
                sd,
                img,
                zero,
                discard,
            } => self.domain(*sd)?.purge_image(*img, *zero, *discard),
            Step::DiscardImport { sd, img } => self.domain(*sd)?.discard_import(*img),
            Step::ResizeImage {
                sd,
                img,
                vol,
                format,
                size,
            } => self.resize_volume_data(*sd, *img, *vol, *format, *size),
            Step::RemoveBitmap { sd, img, vol, name } => {
                let dom = self.domain(*sd)?;
                if !dom.volume_exists(*img, *vol) {
                    return Ok(());
                }
                let path = dom.data_path(*img, *vol)?;
                let failed = |e: qemu_img::QemuImgError| Error::VolumeMetadataWrite {
                    vol: *vol,
                    reason: e.to_string(),
                };
                let info = qemu_img::info(&path, InfoOptions::format("qcow2")).map_err(failed)?;
                if info.bitmap_names().contains(name) {
                    qemu_img::bitmap(&path, name, qemu_img::BitmapOp::Remove).map_err(failed)?;
                }
                Ok(())
            }
            Step::Rebase {
                sd,
                img,
                vol,
                backing,
                backing_format,
            } => {
                let path = self.domain(*sd)?.data_path(*img, *vol)?;
                qemu_img::rebase_unsafe(&path, &backing.to_string(), backing_format.qemu_name())
                    .map_err(|e| Error::VolumeMetadataWrite {
                        vol: *vol,
                        reason: e.to_string(),
                    })
            }
            Step::RemoveImageIfEmpty { sd, img } => self.domain(*sd)?.remove_image_if_empty(*img),
        }
    }

    fn is_committed(&self, check: &Commit) -> Result<bool> {
        Ok(match check {
            Commit::VolumeExists { sd, img, vol } => {
                self.domain(*sd)?.read_volume(*img, *vol).is_ok()
            }
            Commit::VolumeMissing { sd, img, vol } => {
                !volume_metadata_exists(&*self.domain(*sd)?, *img, *vol)
            }
            Commit::ImageExists { sd, img } => self.domain(*sd)?.has_image(*img),
            Commit::ImageMissing { sd, img } => !self.domain(*sd)?.has_image(*img),
            Commit::VolumeMetadataIs {
                sd,
                img,
                vol,
                contents,
            } => self.domain(*sd)?.volume_metadata_is(*img, *vol, contents),
        })
    }

    /// Removes crash leftovers from a domain (the backend knows its
    /// layout's) and repairs parent roles a crash left inconsistent.
    pub fn collect_garbage(&self, dom: &dyn Domain) -> Result<GcReport> {
        let mut report = dom.collect_garbage()?;
        let version = dom.manifest()?.version;
        // An upgrade a crash cut short after its commit: what only the
        // older format used goes now (a no-op when nothing is left).
        if let Err(e) = dom.finish_upgrade(version) {
            tracing::warn!(sd = %dom.id(), version, error = %e, "cannot remove the older format's leftovers");
        }
        for img in dom.images()? {
            let own = match own_volumes(dom, img) {
                Ok(v) => v,
                Err(Error::ImageNotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            for vol in own {
                let Ok(mut md) = dom.read_volume(img, vol) else {
                    continue;
                };
                let has_children = !children_of(dom, img, vol)?.is_empty();
                let fixed = match (md.role, has_children) {
                    (VolumeRole::Internal, false) => Some(VolumeRole::Leaf),
                    (VolumeRole::Leaf, true) => Some(VolumeRole::Internal),
                    _ => None,
                };
                if let Some(role) = fixed {
                    md.role = role;
                    dom.write_volume(img, vol, &md, version)?;
                    report.repaired.push(format!("{img}/{vol}: now {role}"));
                }
            }
        }
        if !report.is_empty() {
            tracing::info!(sd = %dom.id(), removed = ?report.removed, repaired = ?report.repaired, "garbage collected");
        }
        Ok(report)
    }
}

/// Whether the volume still has metadata: unreadable metadata still counts
/// (a delete removes it whole).
fn volume_metadata_exists(dom: &dyn Domain, img: uuid::Uuid, vol: uuid::Uuid) -> bool {
    !matches!(
        dom.read_volume(img, vol),
        Err(Error::VolumeNotFound(_) | Error::ImageNotFound { .. })
    )
}

/// The engine as the task manager's recovery step runner. Holds the engine
/// weakly: the engine owns the task manager.
pub struct EngineRunner(pub std::sync::Weak<Engine>);

impl StepRunner for EngineRunner {
    fn run(&self, step: &Step) -> Result<()> {
        self.engine()?.run_step(step)
    }

    fn committed(&self, check: &Commit) -> Result<bool> {
        self.engine()?.is_committed(check)
    }
}

impl EngineRunner {
    fn engine(&self) -> Result<std::sync::Arc<Engine>> {
        self.0
            .upgrade()
            .ok_or_else(|| Error::AddTask("the engine is shutting down".into()))
    }
}
