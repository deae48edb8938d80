//! Cairn's own verbs for thin volumes, beyond VDSM's schema (VDSM grows
//! thin volumes inside its VM code and exposes no verb for it): a VM
//! manager asks for room, or registers a running qemu's drive for Cairn
//! to watch. Documented in `docs/api.md`.

use super::*;

pub(super) const VOLUME_REQUEST_EXTEND: Verb = Verb {
    name: "Volume.requestExtend",
    params: &[
        "volumeID",
        "storagepoolID",
        "storagedomainID",
        "imageID",
        "newSize",
    ],
    handler: volume_request_extend,
};

fn volume_request_extend(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.request_extend(
        p.uuid("storagepoolID")?,
        p.uuid("storagedomainID")?,
        p.uuid("imageID")?,
        p.uuid("volumeID")?,
        p.size("newSize")?,
    )?)
}

pub(super) const DRIVE_MONITOR_ADD: Verb = Verb {
    name: "DriveMonitor.add",
    params: &[
        "qmpSocket",
        "nodeName",
        "volumeID",
        "storagepoolID",
        "storagedomainID",
        "imageID",
    ],
    handler: drive_monitor_add,
};

fn drive_monitor_add(e: &Arc<Engine>, p: &Params) -> Reply {
    let id = e.monitor_drive(crate::engine::thin::monitor::DriveSpec {
        qmp_socket: p.string("qmpSocket")?.into(),
        node_name: p.string("nodeName")?,
        sp: p.uuid("storagepoolID")?,
        sd: p.uuid("storagedomainID")?,
        img: p.uuid("imageID")?,
        vol: p.uuid("volumeID")?,
    })?;
    to_value(&json!({ "monitorID": id }))
}

pub(super) const DRIVE_MONITOR_REMOVE: Verb = Verb {
    name: "DriveMonitor.remove",
    params: &["monitorID"],
    handler: drive_monitor_remove,
};

fn drive_monitor_remove(e: &Arc<Engine>, p: &Params) -> Reply {
    e.unmonitor_drive(p.uuid("monitorID")?)?;
    ok()
}

pub(super) const DRIVE_MONITOR_LIST: Verb = Verb {
    name: "DriveMonitor.list",
    params: &[],
    handler: drive_monitor_list,
};

fn drive_monitor_list(e: &Arc<Engine>, _p: &Params) -> Reply {
    let drives: Vec<Value> = e
        .monitored_drives()
        .into_iter()
        .map(|(id, spec, status)| {
            json!({
                "monitorID": id,
                "qmpSocket": spec.qmp_socket,
                "nodeName": spec.node_name,
                "storagepoolID": spec.sp,
                "storagedomainID": spec.sd,
                "imageID": spec.img,
                "volumeID": spec.vol,
                "status": status,
            })
        })
        .collect();
    to_value(&drives)
}
