//! `Host.getDeviceList`: the LUNs this host sees, with VDSM's fields, and
//! whether each is free for a new domain.

use serde::Serialize;

use crate::engine::Engine;
use crate::primitives::luns::{Lun, Transport};
use crate::primitives::lvm::PvInfo;
use crate::types::DomainType;

/// What VDSM's `BlockDeviceInfo` and `PhysicalVolumeInfo` both say of a
/// LUN.
#[derive(Debug, Serialize)]
pub struct LunFields {
    #[serde(rename = "GUID")]
    pub guid: String,
    pub devtype: &'static str,
    #[serde(rename = "vendorID")]
    pub vendor: String,
    #[serde(rename = "productID")]
    pub product: String,
    pub fwrev: String,
    pub serial: String,
    #[serde(rename = "pvUUID")]
    pub pv_uuid: String,
    #[serde(rename = "vgUUID")]
    pub vg_uuid: String,
    pub pathstatus: Vec<PathStatus>,
    pub pathlist: Vec<SessionInfo>,
}

/// One device as VDSM's `BlockDeviceInfo` describes it.
#[derive(Debug, Serialize)]
pub struct DeviceInfo {
    #[serde(flatten)]
    pub lun: LunFields,
    pub capacity: String,
    pub logicalblocksize: String,
    pub physicalblocksize: String,
    pub discard_max_bytes: u64,
    pub discard_zeroes_data: u32,
    pub pvsize: String,
    pub status: &'static str,
    pub partitioned: bool,
}

#[derive(Debug, Serialize)]
pub struct PathStatus {
    pub physdev: String,
    pub state: &'static str,
    pub capacity: String,
    pub lun: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// An iSCSI session a LUN is reached through. Unlike VDSM, no CHAP
/// credentials: they stay in open-iscsi's node records.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    pub connection: String,
    pub port: String,
    pub iqn: String,
    pub portal: String,
    pub initiatorname: String,
}

/// VDSM's `devtype`. A device the configuration names (a disk reached
/// without a network session) is reported as FCP, the kind a VDSM engine
/// treats as locally attached.
fn devtype(lun: &Lun) -> &'static str {
    match lun.transport {
        Transport::Iscsi => "iSCSI",
        Transport::Fcp | Transport::Configured => "FCP",
    }
}

impl Engine {
    /// `storage_type` keeps ISCSI or FCP devices only; `guids` keeps those;
    /// `check_status` tells free from used; `refresh` rescans iSCSI
    /// sessions and forgets what lvm reported first.
    pub fn device_list(
        &self,
        storage_type: Option<DomainType>,
        guids: &[String],
        check_status: bool,
        refresh: bool,
    ) -> crate::error::Result<Vec<DeviceInfo>> {
        if refresh {
            if let Err(e) = crate::primitives::iscsi::rescan_sessions() {
                tracing::warn!(error = %e, "cannot rescan iSCSI sessions");
            }
            crate::primitives::fc::rescan(std::path::Path::new(crate::primitives::fc::SYSFS));
        }
        let env = self.block_env();
        let luns: Vec<Lun> = self
            .luns()
            .into_iter()
            .filter(|l| guids.is_empty() || guids.contains(&l.guid))
            .filter(|l| match storage_type {
                Some(DomainType::Iscsi) => devtype(l) == "iSCSI",
                Some(DomainType::Fcp) => devtype(l) == "FCP",
                _ => true,
            })
            .collect();
        let pvs = env.lvm.pvs(&env.devices).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the physical volumes");
            Vec::new()
        });
        Ok(luns
            .iter()
            .map(|lun| {
                let pv = pvs.iter().find(|p| p.name == lun.path);
                let problem = crate::backend::lun_problem(&env, lun);
                device_info(lun, pv, problem.as_deref(), check_status)
            })
            .collect())
    }

    /// `LVMVolumeGroup.getInfo`: the VG whose UUID is `uuid`, with its PVs
    /// described as `Host.getDeviceList` describes their LUNs.
    pub fn vg_info(&self, uuid: &str) -> crate::error::Result<VolumeGroupInfo> {
        let env = self.block_env();
        let details = crate::backend::vg_details(&env, uuid)?;
        let luns = self.luns();
        let pvlist: Vec<PhysicalVolumeInfo> = details
            .pvs
            .iter()
            .filter_map(|pv| {
                let lun = luns.iter().find(|l| l.path == pv.name)?;
                Some(PhysicalVolumeInfo {
                    capacity: pv.size.to_string(),
                    devcapacity: lun.size.to_string(),
                    pe_count: pv.pe_count.to_string(),
                    pe_alloc_count: pv.pe_alloc_count.to_string(),
                    lun: lun_fields(lun, Some(pv)),
                })
            })
            .collect();
        let vg = details.vg;
        let attr: Vec<String> = format!("{:-<6}", vg.attr)
            .chars()
            .map(String::from)
            .collect();
        // A PV lvm knows of but this host cannot reach.
        let partial = attr[3] == "p" || pvlist.len() < details.pvs.len();
        let iscsi = pvlist.iter().all(|p| p.lun.devtype == "iSCSI");
        Ok(VolumeGroupInfo {
            name: vg.name,
            uuid: vg.uuid,
            vgsize: vg.size.to_string(),
            vgfree: vg.free.to_string(),
            attr: VgAttributes {
                permission: attr[0].clone(),
                resizeable: attr[1].clone(),
                exported: attr[2].clone(),
                partial: attr[3].clone(),
                allocation: attr[4].clone(),
                clustered: attr[5].clone(),
            },
            state: if partial { "PARTIAL" } else { "OK" },
            kind: if iscsi && !pvlist.is_empty() {
                DomainType::Iscsi
            } else {
                DomainType::Fcp
            }
            .id()
            .unwrap_or_default(),
            pvlist,
        })
    }
}

/// A LUN as `Host.getDeviceList` reports it; `problem` is why it cannot
/// hold a new VG (None if free), told as its status if `check_status`.
fn device_info(
    lun: &Lun,
    pv: Option<&PvInfo>,
    problem: Option<&str>,
    check_status: bool,
) -> DeviceInfo {
    DeviceInfo {
        lun: lun_fields(lun, pv),
        capacity: lun.size.to_string(),
        logicalblocksize: lun.logical_block.to_string(),
        physicalblocksize: lun.physical_block.to_string(),
        discard_max_bytes: lun.discard_max_bytes,
        discard_zeroes_data: 0,
        pvsize: pv.map(|p| p.size.to_string()).unwrap_or_default(),
        status: match (check_status, problem) {
            (false, _) => "unknown",
            (true, None) => "free",
            (true, Some(_)) => "used",
        },
        partitioned: problem.is_some_and(|p| p.contains("partitions")),
    }
}

fn lun_fields(lun: &Lun, pv: Option<&PvInfo>) -> LunFields {
    LunFields {
        guid: lun.guid.clone(),
        devtype: devtype(lun),
        vendor: lun.vendor.clone(),
        product: lun.product.clone(),
        fwrev: lun.fwrev.clone(),
        serial: lun.serial.clone(),
        pv_uuid: pv.map(|p| p.uuid.clone()).unwrap_or_default(),
        vg_uuid: pv.map(|p| p.vg_uuid.clone()).unwrap_or_default(),
        pathstatus: lun
            .paths
            .iter()
            .map(|p| PathStatus {
                physdev: p.device.clone(),
                state: if p.active { "active" } else { "failed" },
                capacity: lun.size.to_string(),
                lun: p.lun.to_string(),
                kind: devtype(lun),
            })
            .collect(),
        pathlist: lun
            .paths
            .iter()
            .filter_map(|p| p.iscsi.as_ref())
            .map(|s| SessionInfo {
                connection: s.address.clone(),
                port: s.port.clone(),
                iqn: s.iqn.clone(),
                portal: s.tpgt.clone(),
                initiatorname: s.iface.clone(),
            })
            .collect(),
    }
}

/// VDSM's `VolumeGroupInfo`.
#[derive(Debug, Serialize)]
pub struct VolumeGroupInfo {
    pub name: String,
    #[serde(rename = "vgUUID")]
    pub uuid: String,
    pub vgsize: String,
    pub vgfree: String,
    pub attr: VgAttributes,
    pub state: &'static str,
    #[serde(rename = "type")]
    pub kind: i64,
    pub pvlist: Vec<PhysicalVolumeInfo>,
}

/// lvm's `vg_attr`, a letter each, as VDSM reports them.
#[derive(Debug, Serialize)]
pub struct VgAttributes {
    pub permission: String,
    pub resizeable: String,
    pub exported: String,
    pub partial: String,
    pub allocation: String,
    pub clustered: String,
}

/// VDSM's `PhysicalVolumeInfo`: `capacity` is the PV's size,
/// `devcapacity` the LUN's.
#[derive(Debug, Serialize)]
pub struct PhysicalVolumeInfo {
    #[serde(flatten)]
    pub lun: LunFields,
    pub capacity: String,
    pub devcapacity: String,
    pub pe_count: String,
    pub pe_alloc_count: String,
}
