//! The VG under a block domain, beyond making it: reading it
//! (`LVMVolumeGroup.getInfo`), removing an unused one
//! (`LVMVolumeGroup.remove`), growing a domain onto more LUNs
//! (`StorageDomain.extend`) and onto a grown LUN (`StorageDomain.resizePV`).

use std::path::PathBuf;
use std::process::Command;

use super::create::{check_lun, PV_METADATA_SIZE};
use super::{BlockDomain, BlockEnv};
use crate::error::{Error, LvmAction, Result};
use crate::format::block_layout::DOMAIN_TAG;
use crate::format::domain_md::DomainMetadata;
use crate::primitives::luns::Lun;
use crate::primitives::lvm::{LvmError, PvInfo, VgInfo};

/// A VG and its PVs, read now.
#[derive(Debug, Clone)]
pub struct VgDetails {
    pub vg: VgInfo,
    pub pvs: Vec<PvInfo>,
}

fn read_error(source: LvmError) -> Error {
    Error::Lvm {
        action: LvmAction::ReadVg,
        source,
    }
}

/// The VG whose UUID is `uuid`, among those on the host's LUNs.
fn find_vg(env: &BlockEnv, uuid: &str) -> Result<VgInfo> {
    env.lvm
        .vgs(&env.devices)
        .map_err(read_error)?
        .into_iter()
        .find(|v| v.uuid == uuid)
        .ok_or_else(|| Error::VolumeGroupNotFound(uuid.to_string()))
}

pub fn vg_details(env: &BlockEnv, uuid: &str) -> Result<VgDetails> {
    let vg = find_vg(env, uuid)?;
    let pvs = env
        .lvm
        .pvs(&env.devices)
        .map_err(read_error)?
        .into_iter()
        .filter(|p| p.vg_uuid == vg.uuid)
        .collect();
    Ok(VgDetails { vg, pvs })
}

/// Removes a VG that holds no domain and no LV, and wipes its PVs so
/// their LUNs are free again (VDSM leaves them PVs).
pub fn remove_vg(env: &BlockEnv, uuid: &str) -> Result<()> {
    let VgDetails { vg, pvs } = vg_details(env, uuid)?;
    if vg.tags.iter().any(|t| t == DOMAIN_TAG) {
        return Err(Error::VolumeGroupHasDomain { vg: vg.name });
    }
    let lvs = env.lvm.lvs(&env.devices, &vg.name).map_err(read_error)?;
    if !lvs.is_empty() {
        return Err(Error::VolumeGroupInUse {
            vg: vg.name,
            reason: format!("it holds {} logical volumes", lvs.len()),
        });
    }
    let lvm_error = |action| move |source| Error::Lvm { action, source };
    env.lvm
        .vgremove(&env.devices, &vg.name)
        .map_err(lvm_error(LvmAction::RemoveVg))?;
    let devices: Vec<PathBuf> = pvs.into_iter().map(|p| p.name).collect();
    env.lvm
        .pvremove(&devices)
        .map_err(lvm_error(LvmAction::RemoveVg))?;
    tracing::info!(vg = %vg.name, uuid, "removed volume group");
    Ok(())
}

/// The `PV<n>` keys of a domain on `pvs` (VDSM's legacy extent mapping):
/// PVs already named keep their entries (VDSM never updates a `pecount`);
/// new ones follow, each mapped after the one before. The PV holding the
/// metadata LV's first extent is PV0; `pvs` lists it first at creation.
pub(super) fn pv_mapping(old: &DomainMetadata, pvs: &[(String, &PvInfo)]) -> Vec<(String, String)> {
    let key = |i: usize| format!("PV{i}");
    let mut out: Vec<(String, String)> = (0..)
        .map_while(|i| old.get(&key(i)).map(|v| (key(i), v.to_string())))
        .collect();
    let field = |entry: &str, name: &str| -> u64 {
        entry
            .split(',')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
            .unwrap_or(0)
    };
    for (guid, pv) in pvs {
        let known = out
            .iter()
            .any(|(_, v)| v.split(',').any(|f| f == format!("pv:{guid}")));
        if known {
            continue;
        }
        let offset = out
            .last()
            .map_or(0, |(_, v)| field(v, "mapoffset") + field(v, "pecount"));
        out.push((
            key(out.len()),
            format!(
                "pv:{guid},uuid:{},pestart:0,pecount:{},mapoffset:{offset}",
                pv.uuid, pv.pe_count
            ),
        ));
    }
    out
}

impl BlockDomain {
    /// `StorageDomain.extend`: `luns` join the VG (one `vgextend`), then
    /// the domain metadata names them. LUNs already in the VG are taken as
    /// added, so a run a crash cut short is finished by running it again.
    pub(super) fn add_luns(&self, luns: &[Lun]) -> Result<()> {
        let pvs = self.lvm().pvs(&self.devices()).map_err(read_error)?;
        let vg_uuid = self
            .lvm()
            .vg(&self.devices(), &self.vg)
            .map_err(read_error)?
            .uuid;
        let mut new = Vec::new();
        for lun in luns {
            match pvs.iter().find(|p| p.name == lun.path) {
                Some(pv) if pv.vg_uuid == vg_uuid => {}
                _ => {
                    check_lun(&self.env, lun)?;
                    new.push(lun.path.clone());
                }
            }
        }
        {
            let mut devices = self.devices.write().expect("domain devices");
            for lun in luns {
                if !devices.contains(&lun.path) {
                    devices.push(lun.path.clone());
                }
            }
        }
        if !new.is_empty() {
            self.lvm()
                .vgextend(&self.devices(), &self.vg, &new, PV_METADATA_SIZE)
                .map_err(|e| self.lvm_error(LvmAction::ExtendVg, e))?;
            crate::failpoint::hit("block.extend.after_vgextend")?;
        }
        self.write_pv_mapping(luns)?;
        tracing::info!(sd = %self.sd, luns = ?luns.iter().map(|l| &l.guid).collect::<Vec<_>>(), "domain extended");
        Ok(())
    }

    /// Rewrites the `PV<n>` keys for the VG's PVs as they are now.
    fn write_pv_mapping(&self, luns: &[Lun]) -> Result<()> {
        self.lvm().invalidate(&self.vg);
        let vg_uuid = self
            .lvm()
            .vg(&self.devices(), &self.vg)
            .map_err(read_error)?
            .uuid;
        let pvs = self.lvm().pvs(&self.devices()).map_err(read_error)?;
        let known = crate::primitives::luns::discover(&self.devices());
        let named: Vec<(String, &PvInfo)> = pvs
            .iter()
            .filter(|p| p.vg_uuid == vg_uuid)
            .map(|p| {
                let guid = known
                    .iter()
                    .chain(luns)
                    .find(|l| l.path == p.name)
                    .map_or_else(|| p.name.display().to_string(), |l| l.guid.clone());
                (guid, p)
            })
            .collect();
        use super::Domain;
        self.update_metadata(&mut |md| {
            for (key, value) in pv_mapping(md, &named) {
                md.set(&key, value);
            }
            Ok(())
        })
    }

    /// `StorageDomain.resizePV`: the PV on `lun` grows to the LUN's size
    /// (the storage grew it; this host rescans its paths first). Returns
    /// the PV's new size.
    pub(super) fn resize_lun(&self, lun: &Lun) -> Result<u64> {
        let in_vg = |pvs: &[PvInfo]| {
            pvs.iter()
                .find(|p| p.name == lun.path && p.vg_name == self.vg)
                .cloned()
        };
        let pvs = self.lvm().pvs(&self.devices()).map_err(read_error)?;
        if in_vg(&pvs).is_none() {
            return Err(Error::PhysicalVolumeNotFound {
                guid: lun.guid.clone(),
                vg: self.vg.clone(),
            });
        }
        rescan_size(lun);
        self.lvm()
            .pvresize(&self.devices(), &self.vg, &lun.path)
            .map_err(|e| self.lvm_error(LvmAction::ResizePv, e))?;
        let pvs = self.lvm().pvs(&self.devices()).map_err(read_error)?;
        let pv = in_vg(&pvs).ok_or_else(|| Error::PhysicalVolumeNotFound {
            guid: lun.guid.clone(),
            vg: self.vg.clone(),
        })?;
        tracing::info!(sd = %self.sd, guid = %lun.guid, size = pv.size, "physical volume resized");
        Ok(pv.size)
    }
}

/// Makes the kernel read a LUN's size again: each SCSI path is rescanned,
/// then a multipath map is resized over them. Best effort: a LUN the
/// kernel sees at its new size already needs neither.
fn rescan_size(lun: &Lun) {
    for path in &lun.paths {
        let rescan = PathBuf::from("/sys/block")
            .join(&path.device)
            .join("device/rescan");
        if let Err(e) = std::fs::write(&rescan, "1") {
            tracing::info!(path = %path.device, error = %e, "cannot rescan a SCSI path");
        }
    }
    let map = lun.path.to_string_lossy();
    if let Some(name) = map.strip_prefix("/dev/mapper/") {
        let mut cmd = Command::new("multipathd");
        cmd.args(["resize", "map", name]);
        crate::primitives::child::die_with_parent(&mut cmd);
        match cmd.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                tracing::warn!(map = name, error = %String::from_utf8_lossy(&out.stderr).trim(), "multipathd cannot resize the map")
            }
            Err(e) => tracing::warn!(map = name, error = %e, "cannot run multipathd"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(uuid: &str, pe_count: u64) -> PvInfo {
        PvInfo {
            name: PathBuf::from("/dev/x"),
            uuid: uuid.into(),
            size: 0,
            vg_name: "vg".into(),
            vg_uuid: "vgu".into(),
            pe_start: 0,
            pe_count,
            pe_alloc_count: 0,
        }
    }

    #[test]
    fn new_pvs_are_mapped_after_the_known_ones() {
        let mut md = DomainMetadata::default();
        md.set("PV0", "pv:A,uuid:a,pestart:0,pecount:100,mapoffset:0");
        let (a, b, c) = (pv("a", 180), pv("b", 50), pv("c", 70));
        let pvs = vec![
            ("A".to_string(), &a),
            ("B".to_string(), &b),
            ("C".to_string(), &c),
        ];
        let keys = pv_mapping(&md, &pvs);
        assert_eq!(
            keys,
            vec![
                // A grew to 180 extents; VDSM keeps its old count.
                (
                    "PV0".to_string(),
                    "pv:A,uuid:a,pestart:0,pecount:100,mapoffset:0".to_string()
                ),
                (
                    "PV1".to_string(),
                    "pv:B,uuid:b,pestart:0,pecount:50,mapoffset:100".to_string()
                ),
                (
                    "PV2".to_string(),
                    "pv:C,uuid:c,pestart:0,pecount:70,mapoffset:150".to_string()
                ),
            ]
        );
        // Written again, nothing changes.
        for (k, v) in &keys {
            md.set(k, v.clone());
        }
        assert_eq!(pv_mapping(&md, &pvs), keys);
    }
}
