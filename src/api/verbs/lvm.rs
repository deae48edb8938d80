//! `LVMVolumeGroup.*`: the VGs block domains are made in.

use super::*;

pub(super) const VG_CREATE: Verb = Verb {
    name: "LVMVolumeGroup.create",
    params: &["lvmvolumegroupID", "name", "devlist", "force"],
    handler: vg_create,
};

fn vg_create(e: &Arc<Engine>, p: &Params) -> Reply {
    // VDSM's force wipes device-mapper holders and existing PVs; Cairn
    // never overwrites a LUN something else uses.
    if p.bool_or("force", false)? {
        return Err(ApiError::invalid_params(
            "force is not supported: free the LUNs first (remove their volume group)",
        ));
    }
    let guids = p
        .list("devlist")?
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(ApiError::invalid_params(format!(
                "devlist entries are LUN GUIDs (strings), not {other}"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let uuid = e.create_vg(p.uuid("name")?, &guids)?;
    to_value(&uuid)
}
