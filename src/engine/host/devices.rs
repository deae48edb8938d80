//! `Host.getDeviceList`: the LUNs this host sees, with VDSM's fields, and
//! whether each is free for a new domain.

use serde::Serialize;

use crate::engine::Engine;
use crate::primitives::luns::{Lun, Transport};
use crate::types::DomainType;

/// One device as VDSM's `BlockDeviceInfo` describes it.
#[derive(Debug, Serialize)]
pub struct DeviceInfo {
    #[serde(rename = "GUID")]
    pub guid: String,
    pub capacity: String,
    pub devtype: &'static str,
    #[serde(rename = "vendorID")]
    pub vendor: String,
    #[serde(rename = "productID")]
    pub product: String,
    pub fwrev: String,
    pub serial: String,
    pub logicalblocksize: String,
    pub physicalblocksize: String,
    pub discard_max_bytes: u64,
    pub discard_zeroes_data: u32,
    #[serde(rename = "pvUUID")]
    pub pv_uuid: String,
    pub pvsize: String,
    #[serde(rename = "vgUUID")]
    pub vg_uuid: String,
    pub status: &'static str,
    pub partitioned: bool,
    pub pathstatus: Vec<PathStatus>,
    pub pathlist: Vec<SessionInfo>,
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
                DeviceInfo {
                    guid: lun.guid.clone(),
                    capacity: lun.size.to_string(),
                    devtype: devtype(lun),
                    vendor: lun.vendor.clone(),
                    product: lun.product.clone(),
                    fwrev: lun.fwrev.clone(),
                    serial: lun.serial.clone(),
                    logicalblocksize: lun.logical_block.to_string(),
                    physicalblocksize: lun.physical_block.to_string(),
                    discard_max_bytes: lun.discard_max_bytes,
                    discard_zeroes_data: 0,
                    pv_uuid: pv.map(|p| p.uuid.clone()).unwrap_or_default(),
                    pvsize: pv.map(|p| p.size.to_string()).unwrap_or_default(),
                    vg_uuid: pv.map(|p| p.vg_uuid.clone()).unwrap_or_default(),
                    status: match (check_status, &problem) {
                        (false, _) => "unknown",
                        (true, None) => "free",
                        (true, Some(_)) => "used",
                    },
                    partitioned: problem.as_deref().is_some_and(|p| p.contains("partitions")),
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
            })
            .collect())
    }
}
