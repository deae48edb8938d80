//! The verb table: VDSM method names, their parameters in schema order, and
//! thin handlers that parse parameters, call the engine and shape results.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::errors::{vdsm_code, ApiError};
use super::params::{uuid_value, Params};
use crate::engine::domains::{CreateDomain, DomainFilter};
use crate::engine::image_move::MoveImage;
use crate::engine::images::DeleteImage;
use crate::engine::jobs::{VolumeAttrs, VolumeRef};
use crate::engine::master::SwitchMaster;
use crate::engine::membership::Reconstruct;
use crate::engine::merge::Subchain;
use crate::engine::nbd::NbdConfig;
use crate::engine::pool::CreatePool;
use crate::engine::tickets::TicketSpec;
use crate::engine::volumes::{CreateVolume, DeleteVolume};
use crate::engine::{ConnectionParams, Engine, TaskResult, TaskState, TaskStatus};
use crate::types::{DiskType, DomainClass, DomainType, Uuid, VolumeRole, BLANK_UUID};

/// A handler returns its result already serialized: large results (a
/// domain dump) never exist as a `Value` tree.
pub type Reply = Result<Box<RawValue>, ApiError>;
type Handler = fn(&Arc<Engine>, &Params) -> Reply;

pub struct Verb {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub handler: Handler,
}

const VOLUME_IDS: &[&str] = &["volumeID", "storagepoolID", "storagedomainID", "imageID"];

pub static VERBS: &[Verb] = &[
    Verb {
        name: "Host.getStorageDomains",
        params: &["storagepoolID", "domainClass", "storageType", "remotePath"],
        handler: host_get_storage_domains,
    },
    Verb {
        name: "Host.getConnectedStoragePools",
        params: &[],
        handler: host_get_connected_pools,
    },
    Verb {
        name: "Host.getAllTasksStatuses",
        params: &[],
        handler: host_all_task_statuses,
    },
    Verb {
        name: "Host.getAllTasksInfo",
        params: &[],
        handler: host_all_task_infos,
    },
    Verb {
        name: "StoragePool.connectStorageServer",
        params: &["storagepoolID", "domainType", "connectionParams"],
        handler: pool_connect_storage_server,
    },
    Verb {
        name: "StoragePool.disconnectStorageServer",
        params: &["storagepoolID", "domainType", "connectionParams"],
        handler: pool_disconnect_storage_server,
    },
    Verb {
        name: "StoragePool.create",
        params: &[
            "storagepoolID",
            "name",
            "masterSdUUID",
            "masterVersion",
            "domainList",
            "lockRenewalIntervalSec",
            "leaseTimeSec",
            "ioOpTimeoutSec",
            "leaseRetries",
        ],
        handler: pool_create,
    },
    Verb {
        name: "StoragePool.connect",
        params: &[
            "storagepoolID",
            "hostID",
            "scsiKey",
            "masterSdUUID",
            "masterVersion",
            "domainDict",
        ],
        handler: pool_connect,
    },
    Verb {
        name: "StoragePool.disconnect",
        params: &["storagepoolID", "hostID", "scsiKey", "remove"],
        handler: pool_disconnect,
    },
    Verb {
        name: "StoragePool.getInfo",
        params: &["storagepoolID"],
        handler: pool_get_info,
    },
    Verb {
        name: "StoragePool.spmStart",
        params: &[
            "storagepoolID",
            "prevID",
            "prevLver",
            "enableScsiFencing",
            "maxHostID",
            "domVersion",
        ],
        handler: pool_spm_start,
    },
    Verb {
        name: "StoragePool.spmStop",
        params: &["storagepoolID"],
        handler: pool_spm_stop,
    },
    Verb {
        name: "StoragePool.getSpmStatus",
        params: &["storagepoolID"],
        handler: pool_spm_status,
    },
    Verb {
        name: "StorageDomain.create",
        params: &[
            "storagedomainID",
            "domainType",
            "typeArgs",
            "name",
            "domainClass",
            "version",
            "blockSize",
            "maxHosts",
        ],
        handler: domain_create,
    },
    Verb {
        name: "StorageDomain.getInfo",
        params: &["storagedomainID"],
        handler: domain_get_info,
    },
    Verb {
        name: "StorageDomain.getStats",
        params: &["storagedomainID"],
        handler: domain_get_stats,
    },
    Verb {
        name: "StorageDomain.getImages",
        params: &["storagedomainID"],
        handler: domain_get_images,
    },
    Verb {
        name: "StorageDomain.getVolumes",
        params: &["storagedomainID", "storagepoolID", "imageID"],
        handler: domain_get_volumes,
    },
    Verb {
        name: "StorageDomain.format",
        params: &["storagedomainID", "autoDetach"],
        handler: domain_format,
    },
    Verb {
        name: "StorageDomain.dump",
        params: &["sd_id", "full"],
        handler: domain_dump,
    },
    Verb {
        name: "Volume.create",
        params: &[
            "volumeID",
            "storagepoolID",
            "storagedomainID",
            "imageID",
            "size",
            "volFormat",
            "preallocate",
            "diskType",
            "desc",
            "srcImgUUID",
            "srcVolUUID",
            "initialSize",
            "addBitmaps",
            "legal",
            "sequence",
            "bitmap",
        ],
        handler: volume_create,
    },
    Verb {
        name: "Volume.delete",
        params: &[
            "volumeID",
            "storagepoolID",
            "storagedomainID",
            "imageID",
            "postZero",
            "force",
            "discard",
        ],
        handler: volume_delete,
    },
    Verb {
        name: "Volume.getInfo",
        params: VOLUME_IDS,
        handler: volume_get_info,
    },
    Verb {
        name: "Volume.getSize",
        params: VOLUME_IDS,
        handler: volume_get_size,
    },
    Verb {
        name: "Volume.setLegality",
        params: &[
            "volumeID",
            "storagepoolID",
            "storagedomainID",
            "imageID",
            "legality",
        ],
        handler: volume_set_legality,
    },
    Verb {
        name: "Image.getVolumes",
        params: &["imageID", "storagepoolID", "storagedomainID"],
        handler: image_get_volumes,
    },
    Verb {
        name: "Image.delete",
        params: &[
            "imageID",
            "storagepoolID",
            "storagedomainID",
            "postZero",
            "force",
            "discard",
        ],
        handler: image_delete,
    },
    Verb {
        name: "Image.prepare",
        params: &[
            "storagepoolID",
            "storagedomainID",
            "imageID",
            "volumeID",
            "allowIllegal",
        ],
        handler: image_prepare,
    },
    Verb {
        name: "Image.teardown",
        params: &["storagepoolID", "storagedomainID", "imageID", "volumeID"],
        handler: image_teardown,
    },
    Verb {
        name: "Image.move",
        params: &[
            "imageID",
            "storagepoolID",
            "storagedomainID",
            "dstSdUUID",
            "operation",
            "postZero",
            "force",
            "discard",
        ],
        handler: image_move,
    },
    Verb {
        name: "Volume.extendSize",
        params: &[
            "storagepoolID",
            "storagedomainID",
            "imageID",
            "volumeID",
            "newSize",
        ],
        handler: volume_extend_size,
    },
    Verb {
        name: "Volume.measure",
        params: &[
            "volumeID",
            "storagepoolID",
            "storagedomainID",
            "imageID",
            "dstVolFormat",
            "backing_chain",
            "baseID",
        ],
        handler: volume_measure,
    },
    Verb {
        name: "Volume.getQemuImageInfo",
        params: VOLUME_IDS,
        handler: volume_qemu_info,
    },
    Verb {
        name: "SDM.update_volume",
        params: &["job_id", "vol_info", "vol_attr"],
        handler: sdm_update_volume,
    },
    Verb {
        name: "SDM.copy_data",
        params: &["job_id", "source", "destination", "copy_bitmaps"],
        handler: sdm_copy_data,
    },
    Verb {
        name: "SDM.sparsify_volume",
        params: &["job_id", "vol_info"],
        handler: sdm_sparsify_volume,
    },
    Verb {
        name: "SDM.amend_volume",
        params: &["job_id", "vol_info", "qcow2_attr"],
        handler: sdm_amend_volume,
    },
    Verb {
        name: "SDM.add_bitmap",
        params: &["job_id", "vol_info", "bitmap"],
        handler: sdm_add_bitmap,
    },
    Verb {
        name: "SDM.remove_bitmap",
        params: &["job_id", "vol_info", "bitmap"],
        handler: sdm_remove_bitmap,
    },
    Verb {
        name: "SDM.clear_bitmaps",
        params: &["job_id", "vol_info"],
        handler: sdm_clear_bitmaps,
    },
    Verb {
        name: "SDM.merge",
        params: &["job_id", "subchain_info", "merge_bitmaps"],
        handler: sdm_merge,
    },
    Verb {
        name: "StoragePool.prepareMerge",
        params: &["storagepoolID", "subchainInfo"],
        handler: pool_prepare_merge,
    },
    Verb {
        name: "StoragePool.finalizeMerge",
        params: &["storagepoolID", "subchainInfo"],
        handler: pool_finalize_merge,
    },
    Verb {
        name: "NBD.start_server",
        params: &["server_id", "config"],
        handler: nbd_start_server,
    },
    Verb {
        name: "NBD.stop_server",
        params: &["server_id"],
        handler: nbd_stop_server,
    },
    Verb {
        name: "Host.add_image_ticket",
        params: &["ticket"],
        handler: host_add_image_ticket,
    },
    Verb {
        name: "Host.get_image_ticket",
        params: &["uuid"],
        handler: host_get_image_ticket,
    },
    Verb {
        name: "Host.remove_image_ticket",
        params: &["uuid"],
        handler: host_remove_image_ticket,
    },
    Verb {
        name: "Host.extend_image_ticket",
        params: &["uuid", "timeout"],
        handler: host_extend_image_ticket,
    },
    Verb {
        name: "Host.startMonitoringDomain",
        params: &["sdUUID", "hostID"],
        handler: host_start_monitoring,
    },
    Verb {
        name: "Host.stopMonitoringDomain",
        params: &["sdUUID"],
        handler: host_stop_monitoring,
    },
    Verb {
        name: "Host.getStorageRepoStats",
        params: &["domains"],
        handler: host_repo_stats,
    },
    Verb {
        name: "StorageDomain.attach",
        params: &["storagedomainID", "storagepoolID"],
        handler: domain_attach,
    },
    Verb {
        name: "StorageDomain.detach",
        params: &[
            "storagedomainID",
            "storagepoolID",
            "masterSdUUID",
            "masterVersion",
            "force",
        ],
        handler: domain_detach,
    },
    Verb {
        name: "StorageDomain.activate",
        params: &["storagedomainID", "storagepoolID"],
        handler: domain_activate,
    },
    Verb {
        name: "StorageDomain.deactivate",
        params: &[
            "storagedomainID",
            "storagepoolID",
            "masterSdUUID",
            "masterVersion",
        ],
        handler: domain_deactivate,
    },
    Verb {
        name: "StoragePool.reconstructMaster",
        params: &[
            "storagepoolID",
            "hostId",
            "name",
            "masterSdUUID",
            "masterVersion",
            "domainDict",
            "lockRenewalIntervalSec",
            "leaseTimeSec",
            "ioOpTimeoutSec",
            "leaseRetries",
        ],
        handler: pool_reconstruct_master,
    },
    Verb {
        name: "StoragePool.switchMaster",
        params: &[
            "storagepoolID",
            "oldMasterUUID",
            "newMasterUUID",
            "masterVersion",
        ],
        handler: pool_switch_master,
    },
    Verb {
        name: "StoragePool.refresh",
        params: &["storagepoolID", "masterSdUUID", "masterVersion"],
        handler: pool_refresh,
    },
    Verb {
        name: "Host.getJobs",
        params: &["job_type", "job_ids"],
        handler: host_get_jobs,
    },
    Verb {
        name: "Task.getStatus",
        params: &["taskID"],
        handler: task_get_status,
    },
    Verb {
        name: "Task.getInfo",
        params: &["taskID"],
        handler: task_get_info,
    },
    Verb {
        name: "Task.clear",
        params: &["taskID"],
        handler: task_clear,
    },
    Verb {
        name: "Task.revert",
        params: &["taskID"],
        handler: task_revert,
    },
    Verb {
        name: "Task.stop",
        params: &["taskID"],
        handler: task_stop,
    },
];

pub fn find(name: &str) -> Option<&'static Verb> {
    VERBS.iter().find(|v| v.name == name)
}

fn to_value<T: Serialize + ?Sized>(v: &T) -> Reply {
    Ok(serde_json::value::to_raw_value(v).expect("results serialize"))
}

fn ok() -> Reply {
    to_value(&true)
}

fn task_id(id: Uuid) -> Reply {
    to_value(&id)
}

// ---- Host ----

fn host_get_storage_domains(e: &Arc<Engine>, p: &Params) -> Reply {
    let filter = DomainFilter {
        pool: p.opt_uuid("storagepoolID")?.filter(|u| *u != BLANK_UUID),
        class: p.opt_enum::<DomainClass>("domainClass")?,
        domain_type: p.opt_enum::<DomainType>("storageType")?,
        remote_path: p.opt_string("remotePath")?.filter(|s| !s.is_empty()),
    };
    to_value(&e.host_domains(&filter)?)
}

fn host_get_connected_pools(e: &Arc<Engine>, _: &Params) -> Reply {
    to_value(&e.connected_pool_id().into_iter().collect::<Vec<_>>())
}

fn host_all_task_statuses(e: &Arc<Engine>, _: &Params) -> Reply {
    let all: BTreeMap<Uuid, Value> = e
        .tasks
        .all()
        .iter()
        .map(|s| (s.id, task_status_value(s)))
        .collect();
    to_value(&all)
}

fn host_all_task_infos(e: &Arc<Engine>, _: &Params) -> Reply {
    let all: BTreeMap<Uuid, Value> = e
        .tasks
        .all()
        .iter()
        .map(|s| (s.id, task_info_value(s)))
        .collect();
    to_value(&all)
}

// ---- StoragePool: connections ----

fn connection_list(p: &Params) -> Result<Vec<ConnectionParams>, ApiError> {
    p.list("connectionParams")?
        .iter()
        .enumerate()
        .map(|(i, v)| connection_entry(i, v))
        .collect()
}

/// One connection entry: VDSM's wire names (`connection`, `vfs_type`,
/// `mnt_options`, `protocol_version`) or the schema's (`path`, `spec`,
/// `export`, `vfstype`, `options`, `version`).
fn connection_entry(i: usize, v: &Value) -> Result<ConnectionParams, ApiError> {
    let obj = v.as_object().ok_or_else(|| {
        ApiError::invalid_params(format!("connectionParams[{i}] must be an object"))
    })?;
    let field = |names: &[&str]| -> Result<Option<String>, ApiError> {
        for n in names {
            match obj.get(*n) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => return Ok(Some(s.clone())),
                Some(Value::Number(num)) => return Ok(Some(num.to_string())),
                Some(_) => {
                    return Err(ApiError::invalid_params(format!(
                        "connectionParams[{i}].{n} must be a string"
                    )))
                }
            }
        }
        Ok(None)
    };
    let number = |name: &str| -> Result<Option<u32>, ApiError> {
        match field(&[name])? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                ApiError::new(
                    super::errors::INVALID_PARAMETER,
                    format!("connectionParams[{i}].{name}: {s:?} is not a number"),
                )
            }),
        }
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    let spec = field(&["connection", "path", "spec", "export"])?.ok_or_else(|| {
        ApiError::invalid_params(format!(
            "connectionParams[{i}] needs 'connection' (or 'path'/'spec')"
        ))
    })?;
    Ok(ConnectionParams {
        id,
        spec,
        vfs_type: field(&["vfs_type", "vfstype"])?,
        options: field(&["mnt_options", "options"])?,
        nfs_version: field(&["protocol_version", "version"])?,
        nfs_timeout: number("timeout")?,
        nfs_retrans: number("retrans")?,
    })
}

fn status_list(results: Vec<(Value, crate::Result<()>)>) -> Reply {
    let list: Vec<Value> = results
        .into_iter()
        .map(|(id, r)| json!({"id": id, "status": r.as_ref().map_or_else(vdsm_code, |_| 0)}))
        .collect();
    to_value(&list)
}

fn pool_connect_storage_server(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("storagepoolID")?;
    let kind = p.enumeration::<DomainType>("domainType")?;
    let conns = connection_list(p)?;
    status_list(e.connect_storage_server(kind, &conns))
}

fn pool_disconnect_storage_server(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("storagepoolID")?;
    let kind = p.enumeration::<DomainType>("domainType")?;
    let conns = connection_list(p)?;
    status_list(e.disconnect_storage_server(kind, &conns))
}

// ---- StoragePool ----

fn pool_create(e: &Arc<Engine>, p: &Params) -> Reply {
    let domains = p
        .list("domainList")?
        .iter()
        .map(|v| uuid_value("domainList", v))
        .collect::<Result<Vec<_>, _>>()?;
    for lease_param in [
        "lockRenewalIntervalSec",
        "leaseTimeSec",
        "ioOpTimeoutSec",
        "leaseRetries",
    ] {
        if p.opt_int(lease_param)?.is_some_and(|v| v < 0) {
            return Err(ApiError::new(
                super::errors::INVALID_PARAMETER,
                format!("invalid parameter '{lease_param}': negative"),
            ));
        }
    }
    e.create_pool(&CreatePool {
        id: p.uuid("storagepoolID")?,
        name: p.string("name")?,
        master_sd: p.uuid("masterSdUUID")?,
        master_version: p.int("masterVersion")?,
        domains,
    })?;
    ok()
}

fn host_id(p: &Params) -> Result<u32, ApiError> {
    p.opt_u32("hostID")?
        .ok_or_else(|| ApiError::invalid_params("missing required parameter 'hostID'"))
}

fn pool_connect(e: &Arc<Engine>, p: &Params) -> Reply {
    if p.opt_value("domainDict").is_some() {
        return Err(ApiError::invalid_params("domainDict (memory-backed pools) is not supported; pool metadata lives on the master domain"));
    }
    e.connect_pool(
        p.uuid("storagepoolID")?,
        host_id(p)?,
        p.uuid("masterSdUUID")?,
        p.int("masterVersion")?,
    )?;
    ok()
}

fn pool_disconnect(e: &Arc<Engine>, p: &Params) -> Reply {
    e.disconnect_pool(p.uuid("storagepoolID")?, host_id(p)?)?;
    ok()
}

fn pool_get_info(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.pool_info(p.uuid("storagepoolID")?)?)
}

fn pool_spm_start(e: &Arc<Engine>, p: &Params) -> Reply {
    // prevID, prevLver, enableScsiFencing, maxHostID and domVersion are
    // deprecated in VDSM; accept and ignore them, but check their types.
    p.opt_int("prevID")?;
    p.opt_int("prevLver")?;
    p.opt_int("maxHostID")?;
    p.opt_int("domVersion")?;
    task_id(e.spm_start(p.uuid("storagepoolID")?)?)
}

fn pool_spm_stop(e: &Arc<Engine>, p: &Params) -> Reply {
    e.spm_stop(p.uuid("storagepoolID")?)?;
    ok()
}

fn pool_spm_status(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.spm_status(p.uuid("storagepoolID")?)?)
}

// ---- StorageDomain ----

fn domain_create(e: &Arc<Engine>, p: &Params) -> Reply {
    // typeArgs: the remote path as a string, or {"remotePath": ...}.
    let remote_path = match p.opt_value("typeArgs") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => match o.get("remotePath") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ApiError::invalid_params(
                    "typeArgs needs a 'remotePath' string",
                ))
            }
        },
        Some(_) => {
            return Err(ApiError::invalid_params(
                "typeArgs must be a remote path string or {\"remotePath\": ...}",
            ))
        }
        None => {
            return Err(ApiError::invalid_params(
                "missing required parameter 'typeArgs'",
            ))
        }
    };
    let version = p.opt_u32("version")?;
    e.create_domain(&CreateDomain {
        sd: p.uuid("storagedomainID")?,
        domain_type: p.enumeration("domainType")?,
        remote_path,
        name: p.string("name")?,
        class: p.enumeration("domainClass")?,
        version,
        block_size: p.opt_u32("blockSize")?.unwrap_or(512),
        max_hosts: p.opt_u32("maxHosts")?.unwrap_or(2000),
    })?;
    ok()
}

fn domain_get_info(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.domain_info(p.uuid("storagedomainID")?)?)
}

fn domain_get_stats(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.domain_stats(p.uuid("storagedomainID")?)?)
}

fn domain_get_images(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.domain_images(p.uuid("storagedomainID")?)?)
}

fn domain_get_volumes(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("storagepoolID")?;
    let img = p.opt_uuid("imageID")?.filter(|u| *u != BLANK_UUID);
    to_value(&e.domain_volumes(p.uuid("storagedomainID")?, img)?)
}

fn domain_format(e: &Arc<Engine>, p: &Params) -> Reply {
    e.format_domain(p.uuid("storagedomainID")?, p.bool_or("autoDetach", false)?)?;
    ok()
}

fn domain_dump(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.dump_domain(p.uuid("sd_id")?, p.bool_or("full", false)?)?)
}

// ---- Volume ----

fn volume_create(e: &Arc<Engine>, p: &Params) -> Reply {
    let sequence = p.opt_int("sequence")?.unwrap_or(0);
    let req = CreateVolume {
        vol: p.uuid("volumeID")?,
        pool: p.uuid("storagepoolID")?,
        sd: p.uuid("storagedomainID")?,
        img: p.uuid("imageID")?,
        size: p.size("size")?,
        format: p.enumeration("volFormat")?,
        allocation: p.enumeration("preallocate")?,
        disk_type: p.opt_enum("diskType")?.unwrap_or(DiskType::Data),
        description: p.opt_string("desc")?.unwrap_or_default(),
        src_img: p.opt_uuid("srcImgUUID")?.unwrap_or(BLANK_UUID),
        src_vol: p.opt_uuid("srcVolUUID")?.unwrap_or(BLANK_UUID),
        initial_size: p.opt_size("initialSize")?,
        legal: p.bool_or("legal", true)?,
        add_bitmaps: p.bool_or("addBitmaps", false)?,
        bitmap: p.opt_uuid("bitmap")?,
        sequence: u64::try_from(sequence).map_err(|_| {
            ApiError::new(
                super::errors::INVALID_PARAMETER,
                "invalid parameter 'sequence': negative",
            )
        })?,
    };
    task_id(e.create_volume(req)?)
}

fn volume_delete(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.delete_volume(DeleteVolume {
        vol: p.uuid("volumeID")?,
        pool: p.uuid("storagepoolID")?,
        sd: p.uuid("storagedomainID")?,
        img: p.uuid("imageID")?,
        force: p.bool_or("force", false)?,
        post_zero: p.bool_or("postZero", false)?,
        discard: p.bool_or("discard", false)?,
    })?)
}

fn volume_ids(p: &Params) -> Result<(Uuid, Uuid, Uuid), ApiError> {
    p.opt_uuid("storagepoolID")?;
    Ok((
        p.uuid("storagedomainID")?,
        p.uuid("imageID")?,
        p.uuid("volumeID")?,
    ))
}

fn volume_get_info(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    to_value(&e.volume_info(sd, img, vol)?)
}

fn volume_get_size(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    to_value(&e.volume_size(sd, img, vol)?)
}

fn volume_set_legality(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    e.set_volume_legality(
        p.uuid("storagepoolID")?,
        sd,
        img,
        vol,
        p.enumeration("legality")?,
    )?;
    ok()
}

fn volume_extend_size(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    task_id(e.extend_volume(p.uuid("storagepoolID")?, sd, img, vol, p.size("newSize")?)?)
}

fn volume_measure(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    let required = e.measure_volume(
        sd,
        img,
        vol,
        p.enumeration("dstVolFormat")?,
        p.bool_or("backing_chain", true)?,
        p.opt_uuid("baseID")?.filter(|b| *b != BLANK_UUID),
    )?;
    to_value(&json!({ "required": required }))
}

fn volume_qemu_info(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    to_value(&e.volume_qemu_info(sd, img, vol)?)
}

// ---- Image ----

fn image_get_volumes(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("storagepoolID")?;
    to_value(&e.image_volumes(p.uuid("storagedomainID")?, p.uuid("imageID")?)?)
}

fn image_delete(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.delete_image(DeleteImage {
        img: p.uuid("imageID")?,
        pool: p.uuid("storagepoolID")?,
        sd: p.uuid("storagedomainID")?,
        post_zero: p.bool_or("postZero", false)?,
        force: p.bool_or("force", false)?,
        discard: p.bool_or("discard", false)?,
    })?)
}

fn image_prepare(e: &Arc<Engine>, p: &Params) -> Reply {
    let path = e.prepare_image(
        p.uuid("storagepoolID")?,
        p.uuid("storagedomainID")?,
        p.uuid("imageID")?,
        p.uuid("volumeID")?,
        p.bool_or("allowIllegal", false)?,
    )?;
    to_value(&json!({ "path": path.display().to_string() }))
}

fn image_move(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.move_image(MoveImage {
        pool: p.uuid("storagepoolID")?,
        sd: p.uuid("storagedomainID")?,
        img: p.uuid("imageID")?,
        dst_sd: p.uuid("dstSdUUID")?,
        operation: p.enumeration("operation")?,
        post_zero: p.bool_or("postZero", false)?,
        force: p.bool_or("force", false)?,
        discard: p.bool_or("discard", false)?,
    })?)
}

fn image_teardown(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("volumeID")?;
    e.teardown_image(
        p.uuid("storagepoolID")?,
        p.uuid("storagedomainID")?,
        p.uuid("imageID")?,
    )?;
    ok()
}

// ---- Host jobs ----

/// A `CopyDataDIVEndpoint`-shaped volume reference inside a parameter.
fn volume_ref(name: &str, v: Option<&Value>) -> Result<VolumeRef, ApiError> {
    let obj = v.and_then(Value::as_object).ok_or_else(|| {
        ApiError::invalid_params(format!(
            "'{name}' must be an object with sd_id, img_id, vol_id"
        ))
    })?;
    let id = |k: &str| -> Result<Uuid, ApiError> {
        let v = obj
            .get(k)
            .ok_or_else(|| ApiError::invalid_params(format!("'{name}' lacks '{k}'")))?;
        uuid_value(&format!("{name}.{k}"), v)
    };
    let generation = match obj.get("generation") {
        None | Some(Value::Null) => None,
        Some(g) => Some(
            g.as_u64()
                .and_then(|g| u32::try_from(g).ok())
                .ok_or_else(|| {
                    ApiError::invalid_params(format!(
                        "'{name}.generation' must be a non-negative integer"
                    ))
                })?,
        ),
    };
    Ok(VolumeRef {
        sd: id("sd_id")?,
        img: id("img_id")?,
        vol: id("vol_id")?,
        generation,
    })
}

fn volume_attrs(v: Option<&Value>) -> Result<VolumeAttrs, ApiError> {
    let obj = v
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::invalid_params("'vol_attr' must be an object"))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["legality", "description", "generation", "type"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid_params(format!(
            "unknown volume attribute '{k}'"
        )));
    }
    let attrs = Params::new(
        Some(v.expect("checked")),
        &["legality", "description", "generation", "type"],
    )?;
    Ok(VolumeAttrs {
        legality: attrs.opt_enum("legality")?,
        description: attrs.opt_string("description")?,
        generation: attrs.opt_u32("generation")?,
        role: attrs.opt_enum::<VolumeRole>("type")?,
    })
}

fn sdm_update_volume(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let target = volume_ref("vol_info", p.opt_value("vol_info"))?;
    e.update_volume(job, target, volume_attrs(p.opt_value("vol_attr"))?)?;
    ok()
}

fn sdm_copy_data(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let source = endpoint("source", p.opt_value("source"))?;
    let destination = endpoint("destination", p.opt_value("destination"))?;
    e.copy_data(job, source, destination, p.bool_or("copy_bitmaps", false)?)?;
    ok()
}

fn sdm_sparsify_volume(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    e.sparsify_volume(job, volume_ref("vol_info", p.opt_value("vol_info"))?)?;
    ok()
}

fn sdm_amend_volume(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let target = volume_ref("vol_info", p.opt_value("vol_info"))?;
    let attrs = object_param(p, "qcow2_attr", &["compat"])?;
    e.amend_volume(job, target, attrs.string("compat")?)?;
    ok()
}

fn sdm_add_bitmap(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let target = volume_ref("vol_info", p.opt_value("vol_info"))?;
    e.add_bitmap(job, target, p.string("bitmap")?)?;
    ok()
}

fn sdm_remove_bitmap(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let target = volume_ref("vol_info", p.opt_value("vol_info"))?;
    e.remove_bitmap(job, target, p.string("bitmap")?)?;
    ok()
}

fn sdm_clear_bitmaps(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    e.clear_bitmaps(job, volume_ref("vol_info", p.opt_value("vol_info"))?)?;
    ok()
}

fn sdm_merge(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let sc = subchain(p, "subchain_info")?;
    e.merge(job, sc, p.bool_or("merge_bitmaps", false)?)?;
    ok()
}

fn pool_prepare_merge(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.prepare_merge(p.uuid("storagepoolID")?, subchain(p, "subchainInfo")?)?)
}

fn pool_finalize_merge(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.finalize_merge(p.uuid("storagepoolID")?, subchain(p, "subchainInfo")?)?)
}

fn nbd_start_server(e: &Arc<Engine>, p: &Params) -> Reply {
    let id = p.uuid("server_id")?;
    let c = object_param(
        p,
        "config",
        &[
            "sd_id",
            "img_id",
            "vol_id",
            "readonly",
            "discard",
            "detect_zeroes",
            "backing_chain",
            "bitmap",
        ],
    )?;
    let config = NbdConfig {
        sd: c.uuid("sd_id")?,
        img: c.uuid("img_id")?,
        vol: c.uuid("vol_id")?,
        readonly: c.bool_or("readonly", false)?,
        discard: c.bool_or("discard", false)?,
        detect_zeroes: c.bool_or("detect_zeroes", false)?,
        // null means the default, as in VDSM.
        backing_chain: c.bool_or("backing_chain", true)?,
        bitmap: c.opt_string("bitmap")?,
    };
    to_value(&e.start_nbd_server(id, config)?)
}

fn nbd_stop_server(e: &Arc<Engine>, p: &Params) -> Reply {
    e.stop_nbd_server(p.uuid("server_id")?);
    ok()
}

fn domain_attach(e: &Arc<Engine>, p: &Params) -> Reply {
    e.attach_domain(p.uuid("storagedomainID")?, p.uuid("storagepoolID")?)?;
    ok()
}

/// `masterSdUUID`/`masterVersion` of detach and deactivate name a new
/// master; Cairn does not move the master, so they must name the current
/// one when given.
fn check_master_unchanged(e: &Arc<Engine>, p: &Params) -> Result<(), ApiError> {
    let pool = p.uuid("storagepoolID")?;
    if let Some(master) = p.opt_uuid("masterSdUUID")?.filter(|m| *m != BLANK_UUID) {
        let info = e.pool_info(pool)?;
        if info.info.master_uuid != master {
            return Err(ApiError::new(
                super::errors::INVALID_PARAMETER,
                "invalid parameter 'masterSdUUID': moving the master domain is not supported",
            ));
        }
    }
    Ok(())
}

fn domain_detach(e: &Arc<Engine>, p: &Params) -> Reply {
    check_master_unchanged(e, p)?;
    e.detach_domain(
        p.uuid("storagedomainID")?,
        p.uuid("storagepoolID")?,
        p.bool_or("force", false)?,
    )?;
    ok()
}

fn domain_activate(e: &Arc<Engine>, p: &Params) -> Reply {
    e.activate_domain(p.uuid("storagedomainID")?, p.uuid("storagepoolID")?)?;
    ok()
}

fn domain_deactivate(e: &Arc<Engine>, p: &Params) -> Reply {
    check_master_unchanged(e, p)?;
    e.deactivate_domain(p.uuid("storagedomainID")?, p.uuid("storagepoolID")?)?;
    ok()
}

fn pool_reconstruct_master(e: &Arc<Engine>, p: &Params) -> Reply {
    let dict = p
        .opt_value("domainDict")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ApiError::invalid_params("'domainDict' must be an object {sdUUID: status}")
        })?;
    let mut domains = Vec::new();
    for (sd, status) in dict {
        let sd = uuid_value("domainDict", &json!(sd))?;
        let status = match status.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("active") => "Active",
            Some("attached") => "Attached",
            _ => {
                return Err(ApiError::invalid_params(format!(
                    "'domainDict.{sd}' must be \"active\" or \"attached\""
                )))
            }
        };
        domains.push((sd, status.to_string()));
    }
    let host_id = u32::try_from(p.int("hostId")?)
        .map_err(|_| ApiError::invalid_params("'hostId' must be a host id"))?;
    e.reconstruct_master(&Reconstruct {
        pool: p.uuid("storagepoolID")?,
        host_id,
        name: p.opt_string("name")?.unwrap_or_default(),
        master_sd: p.uuid("masterSdUUID")?,
        master_version: p.int("masterVersion")?,
        domains,
    })?;
    ok()
}

fn pool_switch_master(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.switch_master(SwitchMaster {
        pool: p.uuid("storagepoolID")?,
        old_master: p.uuid("oldMasterUUID")?,
        new_master: p.uuid("newMasterUUID")?,
        master_version: p.int("masterVersion")?,
    })?)
}

fn pool_refresh(e: &Arc<Engine>, p: &Params) -> Reply {
    e.refresh_pool(
        p.uuid("storagepoolID")?,
        p.uuid("masterSdUUID")?,
        p.int("masterVersion")?,
    )?;
    ok()
}

fn host_start_monitoring(e: &Arc<Engine>, p: &Params) -> Reply {
    e.start_monitoring(p.uuid("sdUUID")?, p.int("hostID")?)?;
    ok()
}

fn host_stop_monitoring(e: &Arc<Engine>, p: &Params) -> Reply {
    e.stop_monitoring(p.uuid("sdUUID")?);
    ok()
}

fn host_repo_stats(e: &Arc<Engine>, p: &Params) -> Reply {
    let only = match p.opt_value("domains") {
        None => Vec::new(),
        Some(_) => p
            .list("domains")?
            .iter()
            .map(|v| uuid_value("domains", v))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let stats: BTreeMap<Uuid, _> = e.repo_stats(&only).into_iter().collect();
    to_value(&stats)
}

fn host_add_image_ticket(e: &Arc<Engine>, p: &Params) -> Reply {
    let t = object_param(
        p,
        "ticket",
        &["size", "url", "timeout", "uuid", "ops", "filename"],
    )?;
    let mut spec = TicketSpec {
        id: t.uuid("uuid")?,
        size: t.size("size")?,
        url: t.string("url")?,
        timeout: t.size("timeout")?,
        read: false,
        write: false,
        filename: t.opt_string("filename")?,
    };
    for op in t.list("ops")? {
        match op.as_str() {
            Some("read") => spec.read = true,
            Some("write") => spec.write = true,
            _ => {
                return Err(ApiError::invalid_params(format!(
                    "'ticket.ops': {op} is not an operation (read, write)"
                )))
            }
        }
    }
    e.add_image_ticket(spec)?;
    ok()
}

fn host_get_image_ticket(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.get_image_ticket(p.uuid("uuid")?)?)
}

fn host_remove_image_ticket(e: &Arc<Engine>, p: &Params) -> Reply {
    e.remove_image_ticket(p.uuid("uuid")?)?;
    ok()
}

fn host_extend_image_ticket(e: &Arc<Engine>, p: &Params) -> Reply {
    e.extend_image_ticket(p.uuid("uuid")?, p.size("timeout")?)?;
    ok()
}

/// A `SubchainInfo` parameter.
fn subchain(p: &Params, name: &str) -> Result<Subchain, ApiError> {
    let o = object_param(
        p,
        name,
        &["sd_id", "img_id", "top_id", "base_id", "base_generation"],
    )?;
    Ok(Subchain {
        sd: o.uuid("sd_id")?,
        img: o.uuid("img_id")?,
        top: o.uuid("top_id")?,
        base: o.uuid("base_id")?,
        base_generation: o.opt_u32("base_generation")?,
    })
}

/// A parameter that is an object with these fields.
fn object_param(p: &Params, name: &str, fields: &[&str]) -> Result<Params, ApiError> {
    match p.opt_value(name) {
        Some(v @ Value::Object(_)) => Params::new(Some(v), fields)
            .map_err(|e| ApiError::invalid_params(format!("'{name}': {}", e.message))),
        _ => Err(ApiError::invalid_params(format!(
            "'{name}' must be an object with {}",
            fields.join(", ")
        ))),
    }
}

/// A `CopyDataEndpoint`: only the "div" (domain, image, volume) kind.
fn endpoint(name: &str, v: Option<&Value>) -> Result<VolumeRef, ApiError> {
    match v.and_then(|v| v.get("endpoint_type")) {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "div" => {}
        Some(t) => {
            return Err(ApiError::invalid_params(format!(
                "'{name}.endpoint_type' {t} is not supported; use \"div\""
            )))
        }
    }
    volume_ref(name, v)
}

fn host_get_jobs(e: &Arc<Engine>, p: &Params) -> Reply {
    let ids = match p.opt_value("job_ids") {
        None => Vec::new(),
        Some(_) => p
            .list("job_ids")?
            .iter()
            .map(|v| uuid_value("job_ids", v))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let jobs = match p.opt_string("job_type")?.as_deref() {
        None | Some("storage") => e.get_jobs(&ids),
        Some("v2v") => Vec::new(),
        Some(other) => {
            return Err(ApiError::invalid_params(format!(
                "unknown job_type {other:?}; expected storage or v2v"
            )))
        }
    };
    let map: BTreeMap<Uuid, _> = jobs.into_iter().map(|j| (j.id, j)).collect();
    to_value(&map)
}

// ---- Task ----

/// `TaskStatus` as VDSM reports it.
pub fn task_status_value(s: &TaskStatus) -> Value {
    let (code, message) = match (&s.error, s.state) {
        (Some(e), _) => (vdsm_code(e), e.to_string()),
        (None, TaskState::Finished) => (0, "1 jobs completed successfully".to_string()),
        (None, _) => (0, "running job 1 of 1".to_string()),
    };
    let state = match s.state {
        // VDSM's API state names: queued tasks are still "init".
        TaskState::Init => "init",
        TaskState::Running => "running",
        TaskState::Aborting => "aborting",
        TaskState::Cleaning => "cleaning",
        TaskState::Finished => "finished",
    };
    json!({
        "taskID": s.id,
        "taskState": state,
        "taskResult": if s.state == TaskState::Finished { s.result.name() } else { TaskResult::InProgress.name() },
        "code": code,
        "message": message,
    })
}

fn task_info_value(s: &TaskStatus) -> Value {
    json!({ "id": s.id, "verb": s.verb })
}

fn task_get_status(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&task_status_value(&e.tasks.status(p.uuid("taskID")?)?))
}

fn task_get_info(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&task_info_value(&e.tasks.status(p.uuid("taskID")?)?))
}

fn task_clear(e: &Arc<Engine>, p: &Params) -> Reply {
    e.tasks.clear(p.uuid("taskID")?)?;
    ok()
}

fn task_revert(e: &Arc<Engine>, p: &Params) -> Reply {
    e.revert_task(p.uuid("taskID")?)?;
    ok()
}

fn task_stop(e: &Arc<Engine>, p: &Params) -> Reply {
    e.tasks.stop(p.uuid("taskID")?)?;
    ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (Names are checked against VDSM's schema in the integration tests.)
    #[test]
    fn verbs_are_unique() {
        let mut names: Vec<_> = VERBS.iter().map(|v| v.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
    }

    /// Each parameter a handler reads by name is one its verb declares: a
    /// misspelt optional parameter would otherwise be ignored silently
    /// (unknown names are refused before the handler runs, so it would
    /// never see a value). Reads in helpers are caught at run time by
    /// `Params`'s debug check.
    #[test]
    fn handlers_read_only_declared_parameters() {
        let src = include_str!("verbs.rs");
        let table = &src[src.find("pub static VERBS").unwrap()..];
        let table = &table[..table.find("\n];").unwrap()];
        let mut handlers: Vec<(&str, &str)> = Vec::new();
        for entry in table.split("Verb {").skip(1) {
            let field = |key: &str, end: char| {
                let at = entry.find(key).unwrap() + key.len();
                entry[at..].split(end).next().unwrap().trim()
            };
            handlers.push((field("name: \"", '"'), field("handler:", ',')));
        }
        assert_eq!(handlers.len(), VERBS.len());
        for (verb, handler) in handlers {
            let start = src
                .find(&format!("\nfn {handler}("))
                .unwrap_or_else(|| panic!("no fn {handler}"));
            let body = &src[start..];
            let body = &body[..body.find("\n}\n").unwrap()];
            let declared = find(verb).unwrap().params;
            for read in body.split("p.").skip(1) {
                let Some((method, rest)) = read.split_once("(\"") else {
                    continue;
                };
                if !method.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    continue;
                }
                let name = rest.split('"').next().unwrap();
                assert!(
                    declared.contains(&name),
                    "{handler} reads {name:?}, which {verb} does not declare"
                );
            }
        }
    }
}
