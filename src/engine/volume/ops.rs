//! Operations on one volume's image: extend its virtual size, measure it,
//! describe it as qemu sees it.

use std::sync::Arc;

use serde::Serialize;

use crate::backend::Domain;
use crate::engine::image::chain_of;
use crate::engine::jobs::{next_generation, FencedChange, Rollback};
use crate::engine::resources::Mode;
use crate::engine::tasks::recovery::Step;
use crate::engine::volume::read_in_image;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::qemu_img::{self, InfoOptions, MeasureSource};
use crate::types::{Uuid, VolumeAllocation, VolumeFormat, VolumeLegality};

/// `QemuImageInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct QemuImageInfo {
    pub format: String,
    pub virtualsize: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clustersize: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backingfile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmaps: Option<serde_json::Value>,
}

impl Engine {
    /// `Volume.getQemuImageInfo`: qemu-img's view of the volume (opened
    /// shared, with the format from its metadata, never probed).
    pub fn volume_qemu_info(&self, sd: Uuid, img: Uuid, vol: Uuid) -> Result<QemuImageInfo> {
        let dom = self.domain(sd)?;
        let md = read_in_image(&*dom, img, vol)?;
        let path = dom.data_path(img, vol)?;
        let opts = InfoOptions {
            format: Some(md.format.qemu_name()),
            backing_chain: false,
            force_share: true,
        };
        let info = qemu_img::info(&path, opts).map_err(|e| Error::VolumeMetadataRead {
            vol,
            reason: e.to_string(),
        })?;
        let data = info.format_specific.as_ref().map(|f| &f.data);
        Ok(QemuImageInfo {
            format: info.format.clone(),
            virtualsize: info.virtual_size,
            clustersize: info.cluster_size,
            backingfile: info.backing_filename.clone(),
            compat: info.compat().map(str::to_string),
            bitmaps: (info.format == "qcow2").then(|| {
                data.and_then(|d| d.get("bitmaps"))
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!([]))
            }),
        })
    }

    /// `Volume.measure`: bytes a copy of the volume would need in
    /// `dst_format`; with its whole chain below it, only itself, or down to
    /// `base` (which must be its parent).
    pub fn measure_volume(
        &self,
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        dst_format: VolumeFormat,
        backing_chain: bool,
        base: Option<Uuid>,
    ) -> Result<u64> {
        let dom = self.domain(sd)?;
        let chain = chain_of(&*dom, img, vol)?;
        let depth = match (backing_chain, base) {
            (false, _) => 1,
            (true, None) => chain.len(),
            (true, Some(b)) if chain.get(1).map(|(id, _)| *id) == Some(b) => 2,
            (true, Some(b)) => {
                return Err(Error::invalid(
                    "baseID",
                    format!("{b} is not the parent of volume {vol}"),
                ));
            }
        };
        let spec = chain_spec(&*dom, img, &chain[..depth])?;
        let m =
            qemu_img::measure(MeasureSource::Spec(&spec), dst_format.qemu_name()).map_err(|e| {
                Error::VolumeMetadataRead {
                    vol,
                    reason: e.to_string(),
                }
            })?;
        Ok(m.required)
    }

    /// `Volume.extendSize`: grows the virtual size. The volume reads ILLEGAL
    /// while it changes; success writes it LEGAL with the next generation.
    pub fn extend_volume(
        self: &Arc<Self>,
        pool: Uuid,
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        new_size: u64,
    ) -> Result<Uuid> {
        let pool_state = self.require_spm(pool)?;
        let dom = self.pool_domain(&pool_state, sd)?;
        check_extend(&read_in_image(&*dom, img, vol)?, vol, new_size)?;
        let engine = self.clone();
        let store = self.task_store(&pool_state)?;
        self.tasks.spawn("extendVolumeSize", Some(&store), move |ctx| {
            let _lock = engine.lock_image(sd, img, Mode::Exclusive)?;
            engine.require_spm(pool)?;
            let original = read_in_image(&*dom, img, vol)?;
            check_extend(&original, vol, new_size)?;
            let mut extended = original.clone();
            extended.capacity = new_size;
            extended.legality = VolumeLegality::Legal;
            extended.generation = next_generation(original.generation);
            let shrink_back = Step::ResizeImage { sd, img, vol, format: original.format, size: original.capacity };
            let change = FencedChange::begin(
                ctx,
                &*dom,
                img,
                vol,
                &original,
                extended,
                Rollback::Restore(vec![shrink_back]),
                ("volume.extend.planned", "volume.extend.after_illegal"),
            )?;
            set_virtual_size(
                &*dom,
                img,
                vol,
                original.format,
                original.allocation == VolumeAllocation::Preallocated,
                new_size,
            )?;
            failpoint::hit("volume.extend.after_resize")?;
            change.finish(ctx, "volume.extend.done")?;
            tracing::info!(sd = %sd, img = %img, vol = %vol, from = original.capacity, to = new_size, "volume extended");
            Ok(())
        })
    }

    /// Sets a volume's data back to `size` bytes of virtual size (a
    /// recovery step: shrinks back what an interrupted extend grew).
    pub(crate) fn resize_volume_data(
        &self,
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        format: VolumeFormat,
        size: u64,
    ) -> Result<()> {
        set_virtual_size(&*self.domain(sd)?, img, vol, format, false, size)
    }
}

fn check_extend(md: &VolumeMetadata, vol: Uuid, new_size: u64) -> Result<()> {
    if new_size % 512 != 0 || new_size > crate::primitives::qcow2_create::MAX_SIZE {
        return Err(Error::invalid(
            "newSize",
            format!("{new_size} is not a multiple of 512 bytes up to 1 PiB"),
        ));
    }
    if new_size < md.capacity {
        return Err(Error::ResizeSmaller {
            vol,
            current: md.capacity,
            requested: new_size,
        });
    }
    if md.legality != VolumeLegality::Legal {
        return Err(Error::invalid(
            "volumeID",
            format!("volume {vol} is {} and cannot be extended", md.legality),
        ));
    }
    Ok(())
}

/// Sets a volume's data to `size` bytes of virtual size, growing or
/// shrinking. Idempotent, so an extend and its recovery can both repeat it;
/// `preallocate` allocates a grown RAW tail.
pub(crate) fn set_virtual_size(
    dom: &dyn Domain,
    img: Uuid,
    vol: Uuid,
    format: VolumeFormat,
    preallocate: bool,
    size: u64,
) -> Result<()> {
    match format {
        VolumeFormat::Raw => dom.resize_raw(img, vol, size, preallocate),
        VolumeFormat::Cow => {
            let path = dom.data_path(img, vol)?;
            let info = qemu_img::info(&path, InfoOptions::format("qcow2")).map_err(|e| {
                Error::VolumeMetadataRead {
                    vol,
                    reason: e.to_string(),
                }
            })?;
            if info.virtual_size == size {
                return Ok(());
            }
            qemu_img::resize(&path, "qcow2", size, info.virtual_size > size).map_err(|e| {
                if e.is_no_space() {
                    Error::NoSpace { sd: dom.id() }
                } else {
                    Error::VolumeCreation {
                        vol,
                        reason: e.to_string(),
                    }
                }
            })
        }
    }
}

/// A qemu block specification for the top `chain.len()` volumes of a chain
/// (top first), with no backing file below the last: built from metadata,
/// so it never follows a name an image header could forge.
pub(crate) fn chain_spec(
    dom: &dyn Domain,
    img: Uuid,
    chain: &[(Uuid, VolumeMetadata)],
) -> Result<serde_json::Value> {
    let mut spec = serde_json::Value::Null;
    for (vol, md) in chain.iter().rev() {
        let file = serde_json::json!({
            "driver": dom.caps().qemu_driver,
            "filename": dom.data_path(img, *vol)?,
        });
        spec = match md.format {
            VolumeFormat::Raw => serde_json::json!({"driver": "raw", "file": file}),
            VolumeFormat::Cow => {
                serde_json::json!({"driver": "qcow2", "file": file, "backing": spec})
            }
        };
    }
    Ok(spec)
}
