//! `LVMVolumeGroup.*`, and the `StorageDomain` verbs that grow a block
//! domain's VG: the VGs block domains are made in.

use super::*;

pub(super) const VG_CREATE: Verb = Verb {
    name: "LVMVolumeGroup.create",
    params: &["lvmvolumegroupID", "name", "devlist", "force"],
    handler: vg_create,
};

fn vg_create(e: &Arc<Engine>, p: &Params) -> Reply {
    refuse_force(p)?;
    let uuid = e.create_vg(p.uuid("name")?, &guids(p)?)?;
    to_value(&uuid)
}

/// VDSM's `force` wipes whatever the LUNs hold; Cairn refuses it.
fn refuse_force(p: &Params) -> Result<(), ApiError> {
    if p.bool_or("force", false)? {
        return Err(ApiError::invalid_params(
            "force is not supported: free the LUNs first (remove their volume group)",
        ));
    }
    Ok(())
}

/// `devlist`: LUN GUIDs.
fn guids(p: &Params) -> Result<Vec<String>, ApiError> {
    p.list("devlist")?
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(ApiError::invalid_params(format!(
                "devlist entries are LUN GUIDs (strings), not {other}"
            ))),
        })
        .collect()
}

// The VG's UUID is lvm's (32 characters in dashed groups), not an RFC
// 4122 UUID, whatever the schema's type says.
pub(super) const VG_GET_INFO: Verb = Verb {
    name: "LVMVolumeGroup.getInfo",
    params: &["lvmvolumegroupID"],
    handler: vg_get_info,
};

fn vg_get_info(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.vg_info(&p.string("lvmvolumegroupID")?)?)
}

pub(super) const VG_REMOVE: Verb = Verb {
    name: "LVMVolumeGroup.remove",
    params: &["lvmvolumegroupID"],
    handler: vg_remove,
};

fn vg_remove(e: &Arc<Engine>, p: &Params) -> Reply {
    e.remove_vg(&p.string("lvmvolumegroupID")?)?;
    ok()
}

pub(super) const DOMAIN_EXTEND: Verb = Verb {
    name: "StorageDomain.extend",
    params: &["storagedomainID", "storagepoolID", "devlist", "force"],
    handler: domain_extend,
};

fn domain_extend(e: &Arc<Engine>, p: &Params) -> Reply {
    refuse_force(p)?;
    e.extend_domain(
        p.uuid("storagepoolID")?,
        p.uuid("storagedomainID")?,
        &guids(p)?,
    )?;
    ok()
}

pub(super) const DOMAIN_RESIZE_PV: Verb = Verb {
    name: "StorageDomain.resizePV",
    params: &["storagedomainID", "storagepoolID", "guid"],
    handler: domain_resize_pv,
};

fn domain_resize_pv(e: &Arc<Engine>, p: &Params) -> Reply {
    let size = e.resize_pv(
        p.uuid("storagepoolID")?,
        p.uuid("storagedomainID")?,
        &p.string("guid")?,
    )?;
    to_value(&size)
}
