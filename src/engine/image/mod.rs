//! Image verbs: list volumes, delete, prepare and teardown.

pub mod merge;
pub mod move_image;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::Domain;
use crate::engine::resources::Mode;
use crate::engine::tasks::recovery::{Commit, RecoveryPlan, Step};
use crate::engine::volume::{own_volumes, read_in_image};
use crate::engine::Engine;
use crate::error::{Error, IoContext, Result};
use crate::failpoint;
use crate::format::volume_md::header_disagreement;
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::durable;
use crate::types::{Uuid, VolumeLegality, BLANK_UUID};

#[derive(Debug, Clone)]
pub struct DeleteImage {
    pub pool: Uuid,
    pub sd: Uuid,
    pub img: Uuid,
    pub post_zero: bool,
    pub force: bool,
    pub discard: bool,
}

impl Engine {
    /// Volumes of an image; a template linked into it is listed by its own.
    pub fn image_volumes(&self, sd: Uuid, img: Uuid) -> Result<Vec<Uuid>> {
        own_volumes(&*self.domain(sd)?, img)
    }

    /// `Image.delete`: the image is retired (out of the catalogue, its
    /// parts kept: the commit point), then purged.
    pub fn delete_image(self: &Arc<Self>, req: DeleteImage) -> Result<Uuid> {
        let pool = self.require_spm(req.pool)?;
        let dom = self.pool_domain(&pool, req.sd)?;
        if !dom.has_image(req.img) {
            return Err(Error::ImageNotFound {
                img: req.img,
                sd: req.sd,
            });
        }
        refuse_templates_in_use(&*dom, req.img)?;
        let engine = self.clone();
        let store = self.task_store(&pool)?;
        self.tasks.spawn("deleteImage", Some(&store), move |ctx| {
            let _lock = engine.lock_image(req.sd, req.img, Mode::Exclusive)?;
            engine.require_spm(req.pool)?;
            if !dom.has_image(req.img) {
                return Err(Error::ImageNotFound {
                    img: req.img,
                    sd: req.sd,
                });
            }
            refuse_templates_in_use(&*dom, req.img)?;
            let (sd, img) = (req.sd, req.img);
            // Zeroing and discarding happen after the commit point: a crash
            // never leaves a half-zeroed image that still looks alive.
            let purge = Step::PurgeImage {
                sd,
                img,
                zero: req.post_zero,
                discard: req.discard,
            };
            ctx.plan(RecoveryPlan {
                undo: Vec::new(),
                redo: vec![purge.clone()],
                commit: Some(Commit::ImageMissing { sd, img }),
            })?;
            failpoint::hit("image.delete.planned")?;
            engine.run_step(&Step::RetireImage { sd, img })?;
            ctx.commit();
            failpoint::hit("image.delete.after_rename")?;
            engine.run_step(&purge)?;
            engine.remove_run_link(sd, img)?;
            failpoint::hit("image.delete.done")?;
            tracing::info!(sd = %sd, img = %img, "image deleted");
            Ok(())
        })
    }

    /// `Image.prepare`: checks the chain below `vol` and returns the path a
    /// VM opens, under the host's run directory.
    pub fn prepare_image(
        &self,
        pool: Uuid,
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        allow_illegal: bool,
    ) -> Result<PathBuf> {
        let pool = self.connected_pool(pool)?;
        let dom = self.pool_domain(&pool, sd)?;
        // Shared: a delete of this image waits until the link is in place.
        let _lock = self.lock_image(sd, img, Mode::Shared)?;
        let chain = chain_of(&*dom, img, vol)?;
        if !allow_illegal {
            if let Some((id, _)) = chain
                .iter()
                .find(|(_, md)| md.legality != VolumeLegality::Legal)
            {
                return Err(Error::PrepareIllegal(*id));
            }
        }
        // The VM opens the chain through the link by name.
        let ids: Vec<Uuid> = chain.iter().map(|(id, _)| *id).collect();
        let target = dom.activate(img, &ids)?;
        let link = self.paths.run_link(sd, img);
        let run_dir = link.parent().expect("a run link has a parent");
        fs::create_dir_all(run_dir).ctx("cannot create", run_dir)?;
        match fs::read_link(&link) {
            Ok(t) if t == target => {}
            Ok(_) => {
                fs::remove_file(&link).ctx("cannot replace", &link)?;
                std::os::unix::fs::symlink(&target, &link).ctx("cannot link", &link)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(&target, &link).ctx("cannot link", &link)?;
            }
            Err(e) => return Err(Error::io_path("cannot read", &link, e)),
        }
        Ok(link.join(vol.to_string()))
    }

    /// `Image.teardown`: removes the run link; idempotent.
    pub fn teardown_image(&self, pool: Uuid, sd: Uuid, img: Uuid) -> Result<()> {
        let pool = self.connected_pool(pool)?;
        let dom = self.pool_domain(&pool, sd)?;
        if !dom.has_image(img) && !self.paths.run_link(sd, img).exists() {
            return Err(Error::ImageNotFound { img, sd });
        }
        self.remove_run_link(sd, img)?;
        dom.deactivate(img)
    }

    fn remove_run_link(&self, sd: Uuid, img: Uuid) -> Result<()> {
        let link = self.paths.run_link(sd, img);
        durable::remove_if_exists(&link)
            .ctx("cannot remove", &link)
            .map(drop)
    }
}

/// An image whose template is linked into other images cannot go.
fn refuse_templates_in_use(dom: &dyn Domain, img: Uuid) -> Result<()> {
    for vol in own_volumes(dom, img)? {
        let users = dom.template_users(img, vol);
        if users > 0
            && dom
                .read_volume(img, vol)
                .is_ok_and(|md| md.role == crate::types::VolumeRole::Shared)
        {
            return Err(Error::TemplateInUse { vol, users });
        }
    }
    Ok(())
}

/// The chain from `vol` down to its base, top first. Refuses cycles,
/// missing parents and volumes whose metadata names another image.
pub fn chain_of(dom: &dyn Domain, img: Uuid, vol: Uuid) -> Result<Vec<(Uuid, VolumeMetadata)>> {
    let count = dom.volumes(img)?.len();
    let mut chain = Vec::new();
    let mut cur = vol;
    loop {
        let md = match read_in_image(dom, img, cur) {
            Ok(md) => md,
            Err(Error::VolumeNotFound(_)) if cur != vol => {
                return Err(Error::BrokenChain {
                    img,
                    reason: format!("parent volume {cur} is missing"),
                })
            }
            Err(e) => return Err(e),
        };
        if let Some(why) = dom
            .volume_header(img, cur, &md)
            .and_then(|h| header_disagreement(&md, &h))
        {
            return Err(Error::BrokenChain {
                img,
                reason: format!("volume {cur}: {why}"),
            });
        }
        let parent = md.parent;
        chain.push((cur, md));
        if parent == BLANK_UUID {
            return Ok(chain);
        }
        if chain.len() > count || chain.iter().any(|(id, _)| *id == parent) {
            return Err(Error::BrokenChain {
                img,
                reason: format!("volume {parent} appears twice"),
            });
        }
        cur = parent;
    }
}
