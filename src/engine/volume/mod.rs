//! Volume verbs: create (including snapshots), delete, info, size, legality.

pub mod lease;
pub mod ops;

use std::sync::Arc;

use serde::Serialize;

use crate::backend::Domain;
use crate::backend::{DataSpec, Part};
use crate::engine::resources::Mode;
use crate::engine::tasks::recovery::{Commit, RecoveryPlan, Step};
use crate::engine::{Engine, TaskCtx};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::format::domain_md::is_safe_value;
use crate::format::volume_md::{header_disagreement, metadata_text};
use crate::format::volume_md::{truncate_description, VolumeMetadata, MAX_SEQUENCE};
use crate::primitives::qemu_img::{self, InfoOptions};
use crate::types::{
    DiskType, Uuid, VolumeAllocation, VolumeFormat, VolumeLegality, VolumeRole, BLANK_UUID,
};

#[derive(Debug, Clone)]
pub struct CreateVolume {
    pub pool: Uuid,
    pub sd: Uuid,
    pub img: Uuid,
    pub vol: Uuid,
    pub size: u64,
    pub format: VolumeFormat,
    pub allocation: VolumeAllocation,
    pub disk_type: DiskType,
    pub description: String,
    /// Parent image and volume; BLANK for a new base volume.
    pub src_img: Uuid,
    pub src_vol: Uuid,
    pub initial_size: Option<u64>,
    pub legal: bool,
    pub sequence: u64,
    /// Add empty bitmaps named as the parent's (a snapshot of a qcow2).
    pub add_bitmaps: bool,
    /// Add a new empty bitmap of this name.
    pub bitmap: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub struct DeleteVolume {
    pub pool: Uuid,
    pub sd: Uuid,
    pub img: Uuid,
    pub vol: Uuid,
    pub force: bool,
    /// Overwrite the data with zeros before removing it.
    pub post_zero: bool,
    /// Give the data's blocks back to the storage before removing it.
    pub discard: bool,
}

/// The metadata part of `VolumeInfo` / `VolumeDump`, with VDSM's names.
#[derive(Debug, Clone, Serialize)]
pub struct MetadataFields {
    pub capacity: u64,
    pub ctime: u64,
    pub description: String,
    pub disktype: DiskType,
    pub format: VolumeFormat,
    pub generation: u32,
    pub legality: VolumeLegality,
    pub parent: Uuid,
    #[serde(rename = "type")]
    pub allocation: VolumeAllocation,
    pub voltype: VolumeRole,
    pub sequence: u64,
}

impl From<&VolumeMetadata> for MetadataFields {
    fn from(md: &VolumeMetadata) -> Self {
        MetadataFields {
            capacity: md.capacity,
            ctime: md.ctime,
            description: md.description.clone(),
            disktype: md.disk_type,
            format: md.format,
            generation: md.generation,
            legality: md.legality,
            parent: md.parent,
            allocation: md.allocation,
            voltype: md.role,
            sequence: md.sequence,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaseInfo {
    pub path: String,
    pub offset: u64,
}

/// `VolumeInfoResponse`.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    pub uuid: Uuid,
    pub domain: Uuid,
    pub image: Uuid,
    /// Deprecated in VDSM; always empty.
    pub pool: String,
    #[serde(flatten)]
    pub md: MetadataFields,
    #[serde(rename = "allocType")]
    pub alloc_type: VolumeAllocation,
    pub status: &'static str,
    pub mtime: u64,
    pub apparentsize: u64,
    pub truesize: u64,
    pub children: Vec<Uuid>,
    pub lease: LeaseInfo,
    /// Cairn's: for a thin volume on storage grown on demand (an LV).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thin: Option<crate::engine::thin::ThinInfo>,
}

/// `VolumeSizeInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeSize {
    pub apparentsize: u64,
    pub truesize: u64,
}

impl Engine {
    /// `Volume.create`: validates, then returns a task that creates the
    /// volume. A snapshot (`src_vol` set) gets a COW leaf backed by the
    /// parent, which becomes INTERNAL.
    pub fn create_volume(self: &Arc<Self>, req: CreateVolume) -> Result<Uuid> {
        let pool = self.require_spm(req.pool)?;
        let dom = self.pool_domain(&pool, req.sd)?;
        self.validate_create(&*dom, &req)?;
        let engine = self.clone();
        let store = self.task_store(&pool)?;
        self.tasks.spawn("createVolume", Some(&store), move |ctx| {
            // A clone also holds its template's image, shared: the
            // template cannot go away while it is being linked.
            let _lock = if req.src_img != BLANK_UUID && req.src_img != req.img {
                use crate::engine::resources::{Resource, DEFAULT_TIMEOUT};
                engine.resources.acquire(
                    &[
                        (Resource::storage(req.sd), Mode::Shared),
                        (Resource::image(req.sd, req.img), Mode::Exclusive),
                        (Resource::image(req.sd, req.src_img), Mode::Shared),
                    ],
                    DEFAULT_TIMEOUT,
                )?
            } else {
                engine.lock_image(req.sd, req.img, Mode::Exclusive)?
            };
            engine.require_spm(req.pool)?;
            let parent = engine.validate_create(&*dom, &req)?;
            let sanlock = engine.sanlock_for(&*dom);
            let thin_start = engine.thin.settings.policy.start;
            create_volume_steps(ctx, &*dom, &req, parent, sanlock, thin_start)
        })
    }

    /// Checks a create request against the domain; returns the parent's
    /// metadata for a snapshot.
    fn validate_create(
        &self,
        dom: &dyn Domain,
        req: &CreateVolume,
    ) -> Result<Option<VolumeMetadata>> {
        if req.img == BLANK_UUID {
            return Err(Error::invalid("imageID", "must not be the blank UUID"));
        }
        if req.vol == BLANK_UUID {
            return Err(Error::invalid("volumeID", "must not be the blank UUID"));
        }
        if req.size == 0 || req.size % 512 != 0 {
            return Err(Error::invalid(
                "size",
                format!("{} is not a positive multiple of 512 bytes", req.size),
            ));
        }
        if req.size > crate::primitives::qcow2_create::MAX_SIZE {
            return Err(Error::invalid(
                "size",
                format!("{} is larger than 1 PiB", req.size),
            ));
        }
        if !is_safe_value(&req.description) {
            return Err(Error::invalid("desc", "may not contain line breaks or NUL"));
        }
        // What is left is held for recovery (deletes, SPM start, metadata).
        if dom.usable_space()? == 0 {
            return Err(Error::NoSpace { sd: dom.id() });
        }
        if req.sequence > MAX_SEQUENCE {
            return Err(Error::invalid(
                "sequence",
                format!("{} is larger than {MAX_SEQUENCE}", req.sequence),
            ));
        }
        dom.check_new_volume(req.format, req.allocation, req.initial_size)?;
        if let Some(initial) = req.initial_size {
            if initial > req.size {
                return Err(Error::invalid(
                    "initialSize",
                    format!("{initial} is larger than size {}", req.size),
                ));
            }
        }
        let m = dom.manifest()?;
        if m.class != crate::types::DomainClass::Data {
            return Err(Error::DomainClass {
                sd: dom.id(),
                reason: "volumes live in Data domains",
            });
        }
        // Volumes of the image, templates linked into it not counted.
        let existing = match own_volumes(dom, req.img) {
            Ok(v) => v,
            Err(Error::ImageNotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        if dom.volume_exists(req.img, req.vol) {
            return Err(Error::VolumeAlreadyExists(req.vol));
        }
        if req.bitmap.is_some() && (req.format != VolumeFormat::Cow || m.version < 4) {
            return Err(Error::invalid(
                "bitmap",
                "bitmaps live in qcow2 (compat 1.1) volumes: volFormat must be COW",
            ));
        }
        if req.src_vol == BLANK_UUID {
            if req.add_bitmaps {
                return Err(Error::invalid(
                    "addBitmaps",
                    "only a snapshot takes its parent's bitmaps",
                ));
            }
            if req.src_img != BLANK_UUID && req.src_img != req.img {
                return Err(Error::invalid(
                    "srcVolUUID",
                    "srcImgUUID was given without srcVolUUID",
                ));
            }
            if !existing.is_empty() {
                return Err(Error::invalid(
                    "srcVolUUID",
                    format!(
                        "image {} already has volumes; a new volume in it must name its parent",
                        req.img
                    ),
                ));
            }
            return Ok(None);
        }
        if req.src_img == BLANK_UUID {
            return Err(Error::invalid(
                "srcImgUUID",
                "srcVolUUID was given without srcImgUUID",
            ));
        }
        let clone = req.src_img != req.img;
        if clone && !existing.is_empty() {
            return Err(Error::invalid(
                "imageID",
                format!(
                    "image {} already has volumes; a clone of a template starts a new image",
                    req.img
                ),
            ));
        }
        let parent = match read_in_image(dom, req.src_img, req.src_vol) {
            Err(Error::ImageNotFound { .. }) if !clone => {
                return Err(Error::VolumeNotFound(req.src_vol))
            }
            other => other?,
        };
        if parent.image != req.src_img {
            return Err(Error::invalid(
                "srcImgUUID",
                format!("volume {} belongs to image {}", req.src_vol, parent.image),
            ));
        }
        if parent.legality != VolumeLegality::Legal {
            return Err(Error::SnapshotOfIllegal(req.src_vol));
        }
        match (clone, parent.role) {
            (false, VolumeRole::Leaf) | (true, VolumeRole::Shared) => {}
            (false, _) => {
                return Err(Error::invalid("srcVolUUID", format!("volume {} is not the leaf of its image", req.src_vol)))
            }
            (true, _) => {
                return Err(Error::invalid(
                    "srcVolUUID",
                    format!("volume {} is not a template (SHARED); only templates are cloned into other images", req.src_vol),
                ))
            }
        }
        if req.format != VolumeFormat::Cow {
            return Err(Error::invalid(
                "volFormat",
                "a snapshot or a clone must be COW",
            ));
        }
        if req.add_bitmaps
            && (clone
                || parent.format != VolumeFormat::Cow
                || parent.allocation != VolumeAllocation::Sparse)
        {
            return Err(Error::invalid(
                "addBitmaps",
                "only a snapshot of a COW SPARSE volume takes its parent's bitmaps",
            ));
        }
        if req.size < parent.capacity {
            return Err(Error::invalid(
                "size",
                format!(
                    "{} is smaller than the parent's capacity {}",
                    req.size, parent.capacity
                ),
            ));
        }
        Ok(Some(parent))
    }

    /// `Volume.delete`: validates, then returns a task that deletes the volume.
    pub fn delete_volume(self: &Arc<Self>, req: DeleteVolume) -> Result<Uuid> {
        let pool = self.require_spm(req.pool)?;
        let dom = self.pool_domain(&pool, req.sd)?;
        validate_delete(&*dom, &req)?;
        let engine = self.clone();
        let store = self.task_store(&pool)?;
        self.tasks.spawn("deleteVolume", Some(&store), move |ctx| {
            let _lock = engine.lock_image(req.sd, req.img, Mode::Exclusive)?;
            engine.require_spm(req.pool)?;
            let md = validate_delete(&*dom, &req)?;
            delete_volume_steps(ctx, &engine, &*dom, &req, md)
        })
    }

    pub fn volume_info(&self, sd: Uuid, img: Uuid, vol: Uuid) -> Result<VolumeInfo> {
        let dom = self.domain(sd)?;
        let md = read_in_image(&*dom, img, vol)?;
        let (apparentsize, truesize) = dom.volume_sizes(img, vol)?;
        let header = dom.volume_header(img, vol, &md);
        let status = match header.as_ref().and_then(|h| header_disagreement(&md, h)) {
            Some(why) => {
                tracing::warn!(sd = %sd, img = %img, vol = %vol, problem = %why, "volume is invalid");
                "INVALID"
            }
            None if md.legality == VolumeLegality::Illegal => "ILLEGAL",
            None => "OK",
        };
        Ok(VolumeInfo {
            uuid: vol,
            domain: sd,
            image: img,
            pool: String::new(),
            alloc_type: md.allocation,
            md: MetadataFields::from(&md),
            status,
            mtime: 0,
            apparentsize,
            truesize,
            children: Vec::new(),
            lease: {
                let (path, offset) = dom.volume_lease(img, vol);
                LeaseInfo {
                    path: path.display().to_string(),
                    offset,
                }
            },
            thin: self.thin_info(&*dom, img, vol, &md),
        })
    }

    pub fn volume_size(&self, sd: Uuid, img: Uuid, vol: Uuid) -> Result<VolumeSize> {
        let dom = self.domain(sd)?;
        read_in_image(&*dom, img, vol)?;
        let (apparentsize, truesize) = dom.volume_sizes(img, vol)?;
        Ok(VolumeSize {
            apparentsize,
            truesize,
        })
    }

    /// `Task.revert`: undoes a finished volume create, provided nothing was
    /// built on the volume since (it is still a leaf without children).
    pub fn revert_task(&self, id: Uuid) -> Result<()> {
        let pool = self.connected_pool_id().ok_or(Error::NotSpm(Uuid::nil()))?;
        self.require_spm(pool)?;
        let refuse = |reason: &str| Error::NotRevertible {
            task: id,
            reason: reason.to_string(),
        };
        self.tasks.revert(id, |rec| {
            let Some(Commit::VolumeExists { sd, img, vol }) = rec.plan.commit else {
                return Err(refuse("only volume creation can be reverted"));
            };
            let dom = self.domain(sd)?;
            // Held while the undo steps run: nothing new is built meanwhile.
            let lock = self.lock_image(sd, img, Mode::Exclusive)?;
            let md = read_in_image(&*dom, img, vol)?;
            if md.role != VolumeRole::Leaf || !children_of(&*dom, img, vol)?.is_empty() {
                return Err(refuse("other volumes were built on the volume it created"));
            }
            Ok(lock)
        })
    }

    /// `Volume.setLegality` (SPM only: it writes volume metadata).
    pub fn set_volume_legality(
        &self,
        pool: Uuid,
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        legality: VolumeLegality,
    ) -> Result<()> {
        let pool = self.require_spm(pool)?;
        let dom = self.pool_domain(&pool, sd)?;
        let _lock = self.lock_image(sd, img, Mode::Exclusive)?;
        let mut md = read_in_image(&*dom, img, vol)?;
        if md.legality == legality {
            return Ok(());
        }
        md.legality = legality;
        dom.write_volume(img, vol, &md, dom.manifest()?.version)
    }
}

/// Reads a volume's metadata, checking it belongs to `img`.
pub(crate) fn read_in_image(dom: &dyn Domain, img: Uuid, vol: Uuid) -> Result<VolumeMetadata> {
    if !dom.has_image(img) {
        return Err(Error::ImageNotFound { img, sd: dom.id() });
    }
    let md = dom.read_volume(img, vol)?;
    // A template (SHARED) is hard-linked into the images cloned from it,
    // metadata included, so there it names its own image.
    if md.image != img && md.role != VolumeRole::Shared {
        return Err(Error::VolumeMetadataRead {
            vol,
            reason: format!("metadata names image {}", md.image),
        });
    }
    Ok(md)
}

/// Volumes that belong to `img`: templates linked into it are not counted.
pub(crate) fn own_volumes(dom: &dyn Domain, img: Uuid) -> Result<Vec<Uuid>> {
    let mut out = Vec::new();
    for vol in dom.volumes(img)? {
        match dom.read_volume(img, vol) {
            Ok(md) if md.image != img => {}
            _ => out.push(vol),
        }
    }
    Ok(out)
}

/// Creates a volume. The metadata file is the commit point: it appears
/// last, atomically and with its final legality, after the data and the
/// lease are durable, so a volume whose metadata exists is complete. Every
/// step before it is undone by the persisted plan.
/// `sanlock`: the io_timeout when the domain's volumes get sanlock leases.
fn create_volume_steps(
    ctx: &TaskCtx,
    dom: &dyn Domain,
    req: &CreateVolume,
    parent: Option<VolumeMetadata>,
    sanlock: Option<u32>,
    thin_start: u64,
) -> Result<()> {
    let manifest = dom.manifest()?;
    let version = manifest.version;
    let (sd, img, vol) = (dom.id(), req.img, req.vol);
    let new_image = !dom.has_image(img);

    // A clone of a template links the template into the new image.
    let template = parent
        .as_ref()
        .filter(|p| p.role == VolumeRole::Shared)
        .map(|p| (p.image, req.src_vol));
    // Otherwise a parent is snapshotted: it becomes INTERNAL under the new leaf.
    let snapshot_parent = parent.as_ref().filter(|_| template.is_none());

    let mut undo = Vec::new();
    if new_image {
        undo.push(Step::RemoveImageIfEmpty { sd, img });
    }
    if let Some((_, t)) = template {
        undo.push(Step::UnlinkTemplate { sd, img, vol: t });
    }
    undo.extend(Step::remove_data_and_lease(sd, img, vol));
    if let Some(p) = snapshot_parent {
        let contents = metadata_text(req.src_vol, p, version)?;
        undo.push(Step::WriteVolumeMetadata {
            sd,
            img,
            vol: req.src_vol,
            contents,
        });
    }
    undo.push(Step::RemovePart {
        sd,
        img,
        vol,
        part: Part::Metadata,
    });
    ctx.plan(RecoveryPlan {
        undo,
        redo: Vec::new(),
        commit: Some(Commit::VolumeExists { sd, img, vol }),
    })?;
    failpoint::hit("volume.create.planned")?;

    let created = dom.create_image(img)?;
    failpoint::hit("volume.create.after_dir")?;
    if let Some(t) = template {
        dom.link_template(t, img)?;
        failpoint::hit("volume.create.after_links")?;
    }
    ctx.check_abort()?;

    let spec = DataSpec {
        format: req.format,
        allocation: req.allocation,
        capacity: req.size,
        initial_size: req.initial_size,
        thin_start,
        parent: parent.as_ref().map(|p| (req.src_vol, p.format)),
        compat: if version >= 4 { "1.1" } else { "0.10" },
    };
    dom.create_data(img, vol, &spec)?;
    add_bitmaps(dom, req, snapshot_parent.is_some())?;
    failpoint::hit("volume.create.after_data")?;
    ctx.check_abort()?;

    dom.create_lease(img, vol, manifest.alignment)?;
    if sanlock.is_some() {
        crate::engine::volume::lease::format(dom, img, vol)?;
    }
    dom.sync_volume(img, vol)?;
    failpoint::hit("volume.create.after_lease")?;
    ctx.check_abort()?;

    if let Some(parent_md) = snapshot_parent {
        let mut internal = parent_md.clone();
        internal.role = VolumeRole::Internal;
        dom.write_volume(img, req.src_vol, &internal, version)?;
        failpoint::hit("volume.create.after_parent")?;
        ctx.check_abort()?;
    }

    let md = VolumeMetadata {
        domain: sd,
        image: img,
        parent: parent.as_ref().map_or(BLANK_UUID, |_| req.src_vol),
        capacity: req.size,
        format: req.format,
        allocation: req.allocation,
        role: VolumeRole::Leaf,
        disk_type: req.disk_type,
        description: truncate_description(&req.description),
        legality: if req.legal {
            VolumeLegality::Legal
        } else {
            VolumeLegality::Illegal
        },
        ctime: crate::now_secs(),
        generation: 0,
        sequence: req.sequence,
    };
    dom.publish_volume(img, vol, &md, version)?;
    ctx.commit();
    failpoint::hit("volume.create.after_metadata")?;
    dom.sync_image(img, created)?;
    failpoint::hit("volume.create.done")?;
    tracing::info!(sd = %sd, img = %img, vol = %vol, format = %req.format, size = req.size, "volume created");
    Ok(())
}

fn validate_delete(dom: &dyn Domain, req: &DeleteVolume) -> Result<VolumeMetadata> {
    let md = read_in_image(dom, req.img, req.vol)?;
    if md.image != req.img {
        return Err(Error::invalid(
            "imageID",
            format!(
                "volume {} is a template of image {}, linked here; delete it from there",
                req.vol, md.image
            ),
        ));
    }
    if md.role == VolumeRole::Shared && !req.force {
        return Err(Error::CannotDeleteShared(req.vol));
    }
    let users = dom.template_users(req.img, req.vol);
    if md.role == VolumeRole::Shared && users > 0 {
        return Err(Error::TemplateInUse {
            vol: req.vol,
            users,
        });
    }
    let children = children_of(dom, req.img, req.vol)?;
    if !children.is_empty() {
        let list = children
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::VolumeHasChildren {
            vol: req.vol,
            children: list,
        });
    }
    Ok(md)
}

/// Volumes of `img` whose parent is `vol`.
pub(crate) fn children_of(dom: &dyn Domain, img: Uuid, vol: Uuid) -> Result<Vec<Uuid>> {
    let mut out = Vec::new();
    for other in dom.volumes(img)? {
        if other != vol {
            if let Ok(md) = dom.read_volume(img, other) {
                if md.parent == vol {
                    out.push(other);
                }
            }
        }
    }
    Ok(out)
}

/// Deletes a volume. Removing the metadata file is the commit point (the
/// mirror of create): once it is durably gone the volume no longer exists,
/// and the rest (data, lease, the parent's role, an emptied image) is the
/// redo part of the plan, finished by recovery if a crash interrupts it.
fn delete_volume_steps(
    ctx: &TaskCtx,
    engine: &Engine,
    dom: &dyn Domain,
    req: &DeleteVolume,
    md: VolumeMetadata,
) -> Result<()> {
    let (sd, img, vol) = (dom.id(), req.img, req.vol);
    let mut parts = Vec::new();
    if req.post_zero || req.discard {
        parts.push(Step::Scrub {
            sd,
            img,
            vol,
            zero: req.post_zero,
            discard: req.discard,
        });
    }
    parts.extend(Step::remove_data_and_lease(sd, img, vol));
    let parent: Vec<Step> = (md.parent != BLANK_UUID)
        .then_some(Step::RelinkLeaf {
            sd,
            img,
            vol: md.parent,
        })
        .into_iter()
        .collect();
    let image = Step::RemoveImageIfEmpty { sd, img };
    let redo: Vec<Step> = parts
        .iter()
        .chain(&parent)
        .chain([&image])
        .cloned()
        .collect();
    ctx.plan(RecoveryPlan {
        undo: Vec::new(),
        redo,
        commit: Some(Commit::VolumeMissing { sd, img, vol }),
    })?;
    failpoint::hit("volume.delete.planned")?;
    ctx.check_abort()?;

    dom.remove_part(img, vol, Part::Metadata)?;
    ctx.commit();
    failpoint::hit("volume.delete.after_metadata")?;
    for step in &parts {
        engine.run_step(step)?;
    }
    failpoint::hit("volume.delete.after_data")?;
    for step in &parent {
        engine.run_step(step)?;
    }
    failpoint::hit("volume.delete.after_parent")?;
    engine.run_step(&image)?;
    failpoint::hit("volume.delete.done")?;
    tracing::info!(sd = %sd, img = %img, vol = %vol, "volume deleted");
    Ok(())
}

/// Adds the bitmaps a create asks for to the new volume's data: empty ones
/// named as the parent's (`addBitmaps`) and a new one (`bitmap`). The data
/// file is removed if the create rolls back, so they need no undo.
fn add_bitmaps(dom: &dyn Domain, req: &CreateVolume, snapshot: bool) -> Result<()> {
    let mut names = Vec::new();
    if req.add_bitmaps && snapshot {
        let parent = dom.data_path(req.img, req.src_vol)?;
        let info = qemu_img::info(&parent, InfoOptions::format("qcow2")).map_err(|e| {
            Error::VolumeMetadataRead {
                vol: req.src_vol,
                reason: e.to_string(),
            }
        })?;
        names = info.bitmap_names();
    }
    names.extend(req.bitmap.map(|b| b.to_string()));
    let path = dom.data_path(req.img, req.vol)?;
    for name in names {
        qemu_img::bitmap(&path, &name, qemu_img::BitmapOp::Add).map_err(|e| {
            Error::VolumeCreation {
                vol: req.vol,
                reason: e.to_string(),
            }
        })?;
    }
    Ok(())
}
