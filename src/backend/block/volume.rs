//! Volumes of a block domain: an LV each, a 512-byte metadata record in
//! the `metadata` LV, a lease in the `leases` LV.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::Command;

use super::{BlockDomain, Catalogue, VolumeLv, RETIRED_TAG};
use crate::backend::{DataSpec, GcReport, Part, ScannedVolume};
use crate::error::{Error, IoContext, LvmAction, Result};
use crate::format::block_layout::{self as layout, EXTENT_SIZE};
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::lvm::NewLv;
use crate::primitives::pipeline::AlignedBuf;
use crate::primitives::{qcow2_create, qemu_img};
use crate::types::{Uuid, VolumeAllocation, VolumeFormat};

const MIB: u64 = 1 << 20;
const RECORD: usize = layout::RECORD_SIZE as usize;

/// The LV size VDSM gives a new volume (`calculate_volume_alloc_size`).
pub(super) fn lv_size(spec: &DataSpec) -> u64 {
    let capacity = spec.capacity.next_multiple_of(4096);
    let size = match (spec.format, spec.allocation, spec.initial_size) {
        (VolumeFormat::Cow, VolumeAllocation::Sparse, None) => spec.thin_start.min(capacity),
        (VolumeFormat::Cow, VolumeAllocation::Sparse, Some(initial)) => {
            initial.next_multiple_of(4096) * 11 / 10
        }
        (VolumeFormat::Cow, VolumeAllocation::Preallocated, Some(initial)) => initial,
        _ => capacity,
    };
    size.next_multiple_of(MIB).max(MIB)
}

/// Writes `bytes` at `offset` of an open device with O_DIRECT.
pub(super) fn write_direct(f: &File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    let mut buf = AlignedBuf::new(bytes.len().next_multiple_of(RECORD));
    buf.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    f.write_all_at(buf.as_slice(), offset)
}

pub(super) fn open_direct(path: &std::path::Path, write: bool) -> std::io::Result<File> {
    let mut flags = rustix::fs::OFlags::DIRECT;
    if write {
        flags |= rustix::fs::OFlags::DSYNC;
    }
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(flags.bits() as i32)
        .open(path)
}

impl BlockDomain {
    fn metadata_lv(&self, write: bool) -> Result<File> {
        let path = self.lv_path("metadata");
        open_direct(&path, write).map_err(|source| Error::DomainAccess {
            sd: self.sd,
            source,
        })
    }

    pub(super) fn read_slot(&self, version: u32, slot: u64) -> Result<Vec<u8>> {
        let f = self.metadata_lv(false)?;
        let mut buf = AlignedBuf::new(RECORD);
        f.read_exact_at(buf.as_mut_slice(), layout::slot_offset(version, slot))
            .map_err(|source| Error::DomainAccess {
                sd: self.sd,
                source,
            })?;
        Ok(buf.as_slice().to_vec())
    }

    /// A volume's record, checked against its LV's tags: they are written
    /// apart, so a disagreement means another writer or a damaged slot.
    pub(super) fn read_slot_checked(&self, lv: &VolumeLv, version: u32) -> Result<VolumeMetadata> {
        let vol = lv.vol;
        let slot = lv.slot.ok_or_else(|| Error::VolumeMetadataRead {
            vol,
            reason: "its LV has no MD_ tag".into(),
        })?;
        let bytes = self.read_slot(version, slot)?;
        let md = VolumeMetadata::parse(super::trim_record(&bytes)).map_err(|e| {
            Error::VolumeMetadataRead {
                vol,
                reason: format!("slot {slot}: {e}"),
            }
        })?;
        if Some(md.image) != lv.img && Some(md.image) != lv.removed_from {
            return Err(Error::VolumeMetadataRead {
                vol,
                reason: format!(
                    "slot {slot} names image {} but the LV is tagged for {}",
                    md.image,
                    lv.img.map_or("none".into(), |i| i.to_string())
                ),
            });
        }
        if md.parent != lv.parent {
            return Err(Error::VolumeMetadataRead {
                vol,
                reason: format!(
                    "slot {slot} names parent {} but the LV's PU_ tag names {}",
                    md.parent, lv.parent
                ),
            });
        }
        Ok(md)
    }

    /// Replaces a volume's record with one O_DIRECT, O_DSYNC write of a
    /// whole sector (atomic on the device).
    pub(super) fn write_record(&self, _img: Uuid, vol: Uuid, bytes: &[u8]) -> Result<()> {
        if bytes.len() > RECORD {
            return Err(Error::VolumeMetadataWrite {
                vol,
                reason: format!("{} bytes do not fit a {RECORD}-byte slot", bytes.len()),
            });
        }
        let c = self.catalogue()?;
        let lv = c.find(vol).ok_or(Error::VolumeNotFound(vol))?;
        let slot = lv.slot.ok_or_else(|| Error::VolumeMetadataWrite {
            vol,
            reason: "its LV has no MD_ tag".into(),
        })?;
        let f = self.metadata_lv(true)?;
        write_direct(&f, layout::slot_offset(self.version()?, slot), bytes).map_err(|e| {
            Error::VolumeMetadataWrite {
                vol,
                reason: e.to_string(),
            }
        })
    }

    /// Takes the lowest free slot, as VDSM does; past VDSM's last slot the
    /// `leases` LV grows so the volume's lease fits.
    fn allocate_slot(&self, c: &Catalogue, version: u32) -> Result<u64> {
        let slot = layout::free_slot(version, c.lvs.iter().filter_map(|lv| lv.slot));
        let alignment = self.alignment()?;
        let need = layout::lease_offset(slot, alignment) + alignment;
        let leases = self.lv("leases")?;
        if leases.size < need {
            let size = need.next_multiple_of(EXTENT_SIZE * 8);
            self.lvm()
                .lvextend(&self.devices(), &self.vg, "leases", size)
                .map_err(|e| self.lvm_error(LvmAction::ExtendLv, e))?;
            tracing::info!(sd = %self.sd, slot, size, "grew the leases LV beyond VDSM's 1,947 volumes");
        }
        Ok(slot)
    }

    /// Creates a volume's LV of `size` bytes, tagged as initializing
    /// (invisible to listings) and already holding its slot.
    fn make_lv(&self, img: Uuid, vol: Uuid, parent: Uuid, size: u64) -> Result<()> {
        let _slots = self.slot_lock.lock().expect("slot lock");
        self.lvm().invalidate(&self.vg);
        let c = self.catalogue()?;
        if c.find(vol).is_some() {
            return Err(Error::VolumeAlreadyExists(vol));
        }
        let slot = self.allocate_slot(&c, self.version()?)?;
        let tags = [
            layout::INITIALIZING_TAG.to_string(),
            format!("{}{img}", layout::IMAGE_TAG),
            format!("{}{parent}", layout::PARENT_TAG),
            format!("{}{slot}", layout::SLOT_TAG),
        ];
        self.lvm()
            .lvcreate(
                &self.devices(),
                &self.vg,
                &NewLv {
                    name: &vol.to_string(),
                    size,
                    tags: &tags,
                    contiguous: false,
                    // Its maker writes into it next.
                    activate: true,
                },
            )
            .map_err(|e| self.lvm_error(LvmAction::CreateLv, e))?;
        crate::failpoint::hit("block.volume.after_lvcreate")
    }

    /// Creates the volume's LV and writes an empty image into it.
    pub(super) fn create_volume_lv(&self, img: Uuid, vol: Uuid, spec: &DataSpec) -> Result<()> {
        let name = vol.to_string();
        let parent = spec.parent.map_or(Uuid::nil(), |(p, _)| p);
        self.make_lv(img, vol, parent, lv_size(spec))?;
        let mut chain = vec![name.clone()];
        if let Some((p, _)) = spec.parent {
            chain.push(p.to_string());
        }
        let refs: Vec<&str> = chain.iter().map(String::as_str).collect();
        self.ensure_active(&refs)?;
        let path = self.lv_path(&name);
        let fail = |e: String| Error::VolumeCreation { vol, reason: e };
        match spec.format {
            // Never show a new volume what an old one left on the disk.
            VolumeFormat::Raw => self.scrub_lv(vol, true, false),
            VolumeFormat::Cow => {
                // The parent is named bare: it resolves beside the volume,
                // in /dev/<vg>/ or in a prepared image's directory.
                let parent = spec.parent.map(|(p, fmt)| (p.to_string(), fmt.qemu_name()));
                let backing = parent.as_ref().map(|(p, f)| (p.as_str(), *f));
                if spec.compat == "1.1" && spec.allocation == VolumeAllocation::Sparse {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| fail(e.to_string()))?;
                    qcow2_create::write_empty_on_device(&f, spec.capacity, backing)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| fail(e.to_string()))
                } else {
                    qemu_img::create(
                        &path,
                        &qemu_img::CreateOptions {
                            format: "qcow2",
                            size: Some(spec.capacity),
                            backing,
                            compat: Some(spec.compat),
                            preallocation: None,
                        },
                    )
                    .map_err(|e| fail(e.to_string()))
                }
            }
        }
    }

    /// Zeroes a new volume's lease area (sanlock formats it next).
    pub(super) fn clear_lease(&self, vol: Uuid, alignment: u64) -> Result<()> {
        let c = self.catalogue()?;
        let slot = c
            .find(vol)
            .and_then(|lv| lv.slot)
            .ok_or(Error::VolumeNotFound(vol))?;
        let path = self.lv_path("leases");
        let f = open_direct(&path, true).ctx("cannot open", &path)?;
        write_direct(
            &f,
            layout::lease_offset(slot, alignment),
            &vec![0; alignment as usize],
        )
        .ctx("cannot clear a volume lease in", &path)
    }

    /// Writes the record, then drops the initializing tag: the one
    /// `lvchange` that makes the volume exist.
    pub(super) fn publish(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()> {
        let c = self.catalogue()?;
        let lv = c.find(vol).ok_or(Error::VolumeNotFound(vol))?;
        if !lv.initializing {
            return Err(Error::VolumeAlreadyExists(vol));
        }
        let parent_tag = format!("{}{}", layout::PARENT_TAG, lv.parent);
        self.write_volume_record(img, vol, md, version)?;
        crate::failpoint::hit("block.volume.after_record")?;
        let mut add = Vec::new();
        let mut del = vec![layout::INITIALIZING_TAG.to_string()];
        // An import learns the parent only with the metadata.
        if md.parent != lv.parent {
            del.push(parent_tag);
            add.push(format!("{}{}", layout::PARENT_TAG, md.parent));
        }
        self.lv_tags_change(&[&vol.to_string()], &add, &del)?;
        // As VDSM does: a new volume is not left mapped on the SPM unless
        // its image is prepared here (work on it activates it again).
        if !self.is_prepared(img) {
            self.deactivate_lvs(&[vol.to_string()]);
        }
        Ok(())
    }

    fn write_volume_record(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        version: u32,
    ) -> Result<()> {
        let bytes = crate::format::volume_md::metadata_bytes(vol, md, version)?;
        self.write_record(img, vol, &bytes)
    }

    /// Metadata: the LV is retagged as deleted (VDSM's `_remove_me_`),
    /// which frees nothing yet but takes the volume out of its image in
    /// one `lvchange`. Data: the LV goes (its slot with it). Lease: the
    /// area is the slot's and is cleared when the slot is reused.
    pub(super) fn remove_volume_part(&self, img: Uuid, vol: Uuid, part: Part) -> Result<()> {
        let c = self.catalogue()?;
        let Some(lv) = c.find(vol) else {
            return Ok(());
        };
        let name = vol.to_string();
        match part {
            Part::Metadata if lv.img == Some(img) && !lv.initializing => self.lv_tags_change(
                &[&name],
                &[format!(
                    "{}{}{img}",
                    layout::IMAGE_TAG,
                    super::REMOVED_IMAGE
                )],
                &[format!("{}{img}", layout::IMAGE_TAG)],
            ),
            Part::Data if lv.img != Some(img) && lv.removed_from != Some(img) => Ok(()),
            Part::Data => {
                self.deactivate_lvs(std::slice::from_ref(&name));
                self.remove_lvs(&[&name])
            }
            Part::Metadata | Part::Lease => Ok(()),
        }
    }

    /// Zeroes (`blkdiscard --zeroout`) and/or discards the LV, as VDSM does.
    pub(super) fn scrub_lv(&self, vol: Uuid, zero: bool, discard: bool) -> Result<()> {
        let name = vol.to_string();
        self.ensure_active(&[&name])?;
        let path = self.lv_path(&name);
        let mut passes = Vec::new();
        if zero {
            passes.push(vec!["--zeroout"]);
        }
        if discard {
            passes.push(vec![]);
        }
        for extra in passes {
            let mut cmd = Command::new("blkdiscard");
            cmd.args(&extra).args(["--step", "32MiB"]).arg(&path);
            crate::primitives::child::die_with_parent(&mut cmd);
            let out = cmd.output().ctx("cannot run blkdiscard on", &path)?;
            if !out.status.success() {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                if extra.is_empty() {
                    // Discarding is best effort: not every device can.
                    tracing::info!(vol = %vol, reason = %why, "cannot discard");
                } else {
                    return Err(Error::io_path(
                        "cannot zero",
                        &path,
                        std::io::Error::other(why),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Grows a RAW volume's LV and zeroes what it gained.
    pub(super) fn grow_raw(&self, vol: Uuid, size: u64) -> Result<()> {
        let name = vol.to_string();
        let old = self.lv(&name)?.size;
        if size <= old {
            return Ok(());
        }
        self.lvm()
            .lvextend(&self.devices(), &self.vg, &name, size)
            .map_err(|e| self.lvm_error(LvmAction::ExtendLv, e))?;
        self.ensure_active(&[&name])?;
        let path = self.lv_path(&name);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .ctx("cannot open", &path)?;
        let new = self.lv(&name)?.size;
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::ZERO_RANGE, old, new - old)
            .map_err(|e| Error::io_path("cannot zero the grown part of", &path, e.into()))
    }

    /// Grows a thin volume's LV to at least `size` bytes; `map_here` false
    /// changes the VG metadata only (another host maps it first).
    pub(super) fn grow_lv(&self, vol: Uuid, size: u64, map_here: bool) -> Result<u64> {
        let name = vol.to_string();
        let before = self.lv(&name).map_err(|e| match e {
            Error::Lvm { source, .. } if source.is_not_found() => Error::VolumeNotFound(vol),
            e => e,
        })?;
        if before.size >= size {
            return Ok(before.size);
        }
        let lvm = self.lvm();
        let grown = if map_here {
            lvm.lvextend(&self.devices(), &self.vg, &name, size)
        } else {
            lvm.lvextend_metadata_only(&self.devices(), &self.vg, &name, size)
        };
        if let Err(e) = grown {
            if e.is_no_space() {
                let free = lvm
                    .vg(&self.devices(), &self.vg)
                    .map(|vg| vg.free)
                    .unwrap_or(0);
                return Err(Error::VolumeGroupFull {
                    sd: self.sd,
                    vol,
                    needed: size - before.size,
                    free,
                });
            }
            // Another extend may have won the race: that is success too.
            lvm.invalidate(&self.vg);
            match self.lv(&name) {
                Ok(lv) if lv.size >= size => return Ok(lv.size),
                _ => return Err(self.lvm_error(LvmAction::ExtendLv, e)),
            }
        }
        Ok(self.lv(&name)?.size)
    }

    /// Remaps an active LV here to the size the SPM gave it (one lvm
    /// command: the size is read from the device, not from `lvs`); an LV
    /// not active here is activated.
    pub(super) fn refresh_lv(&self, vol: Uuid) -> Result<u64> {
        let name = vol.to_string();
        if self.is_active(&name) {
            self.lvm()
                .refresh(&self.devices(), &self.vg, &name)
                .map_err(|e| self.lvm_error(LvmAction::RefreshLv, e))?;
        } else {
            self.lvm().invalidate(&self.vg);
            self.ensure_active(&[&name])?;
        }
        self.lv_size_here(&name)
            .ok_or_else(|| Error::LogicalVolumeMissing {
                vol,
                reason: "its device is not mapped on this host".into(),
            })
    }

    /// An imported volume's LV, sized as a new volume of its kind and at
    /// least `len`, open for writing (the copy writes all of `[0, len)`).
    pub(super) fn import_volume_data(
        &self,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
        len: u64,
    ) -> Result<File> {
        let spec = DataSpec {
            format: md.format,
            allocation: md.allocation,
            capacity: md.capacity,
            initial_size: None,
            // Room for what is copied; the guest's writes grow it.
            thin_start: 0,
            parent: None,
            compat: "1.1",
        };
        self.make_lv(img, vol, Uuid::nil(), lv_size(&spec).max(len))?;
        let name = vol.to_string();
        self.ensure_active(&[&name])?;
        let path = self.lv_path(&name);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .ctx("cannot open", &path)
    }

    /// How much of the LV holds the volume: a RAW volume's capacity, a
    /// qcow2 image's end (qemu-img check, under limits: the image is
    /// storage content).
    pub(super) fn volume_data_len(&self, vol: Uuid, md: &VolumeMetadata) -> Result<u64> {
        if md.format == VolumeFormat::Raw {
            return Ok(md.capacity);
        }
        let name = vol.to_string();
        self.ensure_active(&[&name])?;
        let check = qemu_img::check_untrusted(&self.lv_path(&name), "qcow2").map_err(|e| {
            Error::VolumeMetadataRead {
                vol,
                reason: format!("cannot check its qcow2 image: {e}"),
            }
        })?;
        check
            .image_end_offset
            .ok_or_else(|| Error::VolumeMetadataRead {
                vol,
                reason: "qemu-img check reports no image end".into(),
            })
    }

    pub(super) fn deactivate_lvs(&self, lvs: &[String]) {
        let active: Vec<&str> = lvs
            .iter()
            .map(String::as_str)
            .filter(|lv| self.is_active(lv))
            .collect();
        if active.is_empty() {
            return;
        }
        if let Err(e) = self
            .lvm()
            .set_active(&self.devices(), &self.vg, &active, false)
        {
            // In use here (a guest, a copy): it stays active, and the next
            // teardown tries again.
            tracing::info!(sd = %self.sd, lvs = ?active, error = %e, "cannot deactivate logical volumes");
        }
    }

    /// One `lvs` and one read of the used part of the `metadata` LV serve
    /// the whole listing.
    pub(super) fn scan_volumes(&self) -> Result<Vec<ScannedVolume>> {
        let c = self.catalogue()?;
        let version = self.version()?;
        let last = c.live().filter_map(|(lv, _)| lv.slot).max().unwrap_or(0);
        let start = layout::slot_offset(version, 0);
        let end = layout::slot_offset(version, last) + RECORD as u64;
        let f = self.metadata_lv(false)?;
        let mut area = AlignedBuf::new((end - start) as usize);
        f.read_exact_at(area.as_mut_slice(), start)
            .map_err(|source| Error::DomainAccess {
                sd: self.sd,
                source,
            })?;
        let bytes = area.as_slice();
        let mut out = Vec::new();
        for (lv, img) in c.live() {
            let md = match lv.slot {
                Some(slot) => {
                    let at = (layout::slot_offset(version, slot) - start) as usize;
                    VolumeMetadata::parse(super::trim_record(&bytes[at..at + RECORD])).map_err(
                        |e| Error::VolumeMetadataRead {
                            vol: lv.vol,
                            reason: format!("slot {slot}: {e}"),
                        },
                    )
                }
                None => Err(Error::VolumeMetadataRead {
                    vol: lv.vol,
                    reason: "its LV has no MD_ tag".into(),
                }),
            };
            let header = md
                .as_ref()
                .ok()
                .and_then(|md| crate::backend::Domain::volume_header(self, img, lv.vol, md));
            out.push(ScannedVolume {
                img,
                vol: lv.vol,
                md,
                sizes: Some((lv.size, lv.size)),
                header,
            });
        }
        Ok(out)
    }

    /// LVs a crash left: creates that never published (still
    /// initializing), deletes that never removed (`_remove_me_`), images
    /// retired but not purged. Runs on the SPM after recovery.
    pub(super) fn collect_leftovers(&self) -> Result<GcReport> {
        self.lvm().invalidate(&self.vg);
        let c = self.catalogue()?;
        let mut report = GcReport::default();
        let importing = |img: Uuid| {
            c.vg.tags
                .contains(&format!("{}{img}", super::IMPORTING_TAG))
        };
        let doomed: Vec<String> = c
            .lvs
            .iter()
            .filter(|lv| {
                lv.removed_from.is_some() || (lv.initializing && !lv.img.is_some_and(importing))
            })
            .map(|lv| lv.vol.to_string())
            .collect();
        self.deactivate_lvs(&doomed);
        for name in &doomed {
            self.remove_lvs(&[name])?;
            report.removed.push(format!("{}/{name}", self.vg));
        }
        let retired: Vec<String> =
            c.vg.tags
                .iter()
                .filter(|t| t.starts_with(RETIRED_TAG))
                .cloned()
                .collect();
        for tag in retired {
            if let Some(img) = tag
                .strip_prefix(RETIRED_TAG)
                .and_then(crate::types::parse_uuid)
            {
                crate::backend::Domain::purge_image(self, img, false, false)?;
                report.removed.push(format!("{}/{tag}", self.vg));
            }
        }
        if !report.is_empty() {
            tracing::info!(sd = %self.sd, ?report, "removed logical volumes crashes left behind");
        }
        Ok(report)
    }
}
