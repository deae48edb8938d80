//! Format upgrades of a block domain, as VDSM's formatConverter makes
//! them (`vdsm-block.md` 4): each step adds what the new version needs
//! beside the old parts, so a crash leaves a valid domain of the old
//! version until the one metadata update that names the new one.

use super::create::format_xleases;
use super::volume::{open_direct, write_direct};
use super::BlockDomain;
use crate::error::{Error, IoContext, LvmAction, Result};
use crate::format::block_layout::{self as layout, RECORD_SIZE};
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::lvm::NewLv;

const XLEASES: &str = "xleases";
/// The version 4 slots, at the start of `metadata`; version 5's follow.
const V4_AREA: u64 = 1 << 20;

impl BlockDomain {
    /// Version 4: the `xleases` LV (one a cut-short try left is reused)
    /// with its index formatted.
    pub(super) fn add_xleases(&self) -> Result<()> {
        if self.lv(XLEASES).is_err() {
            let size = layout::special_lvs(4)
                .find(|lv| lv.name == XLEASES)
                .map(|lv| lv.size)
                .expect("xleases is a version 4 LV");
            self.lvm()
                .lvcreate(
                    &self.devices(),
                    &self.vg,
                    &NewLv {
                        name: XLEASES,
                        size,
                        tags: &[],
                        contiguous: false,
                        activate: true,
                    },
                )
                .map_err(|e| self.lvm_error(LvmAction::CreateLv, e))?;
        }
        self.ensure_active(&[XLEASES])?;
        format_xleases(&self.lv_path(XLEASES), self.sd, self.alignment()?)
    }

    /// Version 5: every volume's record also in the version 5 area
    /// (`1 MiB + slot × 8 KiB`), in version 5's keys; a record that does
    /// not parse is copied as it is.
    pub(super) fn stage_v5_records(&self) -> Result<()> {
        let c = self.catalogue()?;
        let path = self.lv_path("metadata");
        let f = open_direct(&path, true).ctx("cannot open", &path)?;
        for lv in &c.lvs {
            let Some(slot) = lv.slot else { continue };
            let old = self.read_slot(4, slot)?;
            let new = match VolumeMetadata::parse(super::trim_record(&old)) {
                Ok(md) => crate::format::volume_md::metadata_bytes(lv.vol, &md, 5)?,
                Err(_) => old,
            };
            write_direct(&f, layout::slot_offset(5, slot), &new).map_err(|e| {
                Error::VolumeMetadataWrite {
                    vol: lv.vol,
                    reason: e.to_string(),
                }
            })?;
        }
        Ok(())
    }

    /// Once the domain is version 5: the version 4 area is zeroed, so no
    /// reader finds stale records there (read first: usually it is).
    pub(super) fn clear_v4_records(&self) -> Result<()> {
        let path = self.lv_path("metadata");
        let f = open_direct(&path, true).ctx("cannot open", &path)?;
        let mut area = crate::primitives::pipeline::AlignedBuf::new(V4_AREA as usize);
        std::os::unix::fs::FileExt::read_exact_at(&f, area.as_mut_slice(), 0)
            .ctx("cannot read", &path)?;
        if area.as_slice().iter().all(|&b| b == 0) {
            return Ok(());
        }
        let zeros = vec![0u8; RECORD_SIZE as usize * 256];
        let mut at = 0;
        while at < V4_AREA {
            write_direct(&f, at, &zeros).ctx("cannot clear the version 4 records in", &path)?;
            at += zeros.len() as u64;
        }
        Ok(())
    }
}
