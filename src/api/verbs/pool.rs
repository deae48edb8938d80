//! StoragePool.*: connections, pool life cycle, SPM, membership, merge tasks.

use super::*;

pub(super) const POOL_CONNECT_STORAGE_SERVER: Verb = Verb {
    name: "StoragePool.connectStorageServer",
    params: &["storagepoolID", "domainType", "connectionParams"],
    handler: pool_connect_storage_server,
};

fn pool_connect_storage_server(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("storagepoolID")?;
    let kind = p.enumeration::<DomainType>("domainType")?;
    let conns = connection_list(p)?;
    status_list(e.connect_storage_server(kind, &conns))
}

pub(super) const POOL_DISCONNECT_STORAGE_SERVER: Verb = Verb {
    name: "StoragePool.disconnectStorageServer",
    params: &["storagepoolID", "domainType", "connectionParams"],
    handler: pool_disconnect_storage_server,
};

fn pool_disconnect_storage_server(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("storagepoolID")?;
    let kind = p.enumeration::<DomainType>("domainType")?;
    let conns = connection_list(p)?;
    status_list(e.disconnect_storage_server(kind, &conns))
}

pub(super) const POOL_CREATE: Verb = Verb {
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
};

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
                crate::api::errors::INVALID_PARAMETER,
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

pub(super) const POOL_CONNECT: Verb = Verb {
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
};

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

pub(super) const POOL_DISCONNECT: Verb = Verb {
    name: "StoragePool.disconnect",
    params: &["storagepoolID", "hostID", "scsiKey", "remove"],
    handler: pool_disconnect,
};

fn pool_disconnect(e: &Arc<Engine>, p: &Params) -> Reply {
    e.disconnect_pool(p.uuid("storagepoolID")?, host_id(p)?)?;
    ok()
}

pub(super) const POOL_GET_INFO: Verb = Verb {
    name: "StoragePool.getInfo",
    params: &["storagepoolID"],
    handler: pool_get_info,
};

fn pool_get_info(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.pool_info(p.uuid("storagepoolID")?)?)
}

pub(super) const POOL_SPM_START: Verb = Verb {
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
};

fn pool_spm_start(e: &Arc<Engine>, p: &Params) -> Reply {
    // prevID, prevLver, enableScsiFencing and maxHostID are deprecated in
    // VDSM; accept and ignore them, but check their types. domVersion
    // upgrades the pool's domains to that format.
    p.opt_int("prevID")?;
    p.opt_int("prevLver")?;
    p.opt_int("maxHostID")?;
    let dom_version = p
        .opt_int("domVersion")?
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    task_id(e.spm_start(p.uuid("storagepoolID")?, dom_version)?)
}

pub(super) const POOL_SPM_STOP: Verb = Verb {
    name: "StoragePool.spmStop",
    params: &["storagepoolID"],
    handler: pool_spm_stop,
};

fn pool_spm_stop(e: &Arc<Engine>, p: &Params) -> Reply {
    e.spm_stop(p.uuid("storagepoolID")?)?;
    ok()
}

pub(super) const POOL_SPM_STATUS: Verb = Verb {
    name: "StoragePool.getSpmStatus",
    params: &["storagepoolID"],
    handler: pool_spm_status,
};

fn pool_spm_status(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.spm_status(p.uuid("storagepoolID")?)?)
}

pub(super) const POOL_PREPARE_MERGE: Verb = Verb {
    name: "StoragePool.prepareMerge",
    params: &["storagepoolID", "subchainInfo"],
    handler: pool_prepare_merge,
};

fn pool_prepare_merge(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.prepare_merge(p.uuid("storagepoolID")?, subchain(p, "subchainInfo")?)?)
}

pub(super) const POOL_FINALIZE_MERGE: Verb = Verb {
    name: "StoragePool.finalizeMerge",
    params: &["storagepoolID", "subchainInfo"],
    handler: pool_finalize_merge,
};

fn pool_finalize_merge(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.finalize_merge(p.uuid("storagepoolID")?, subchain(p, "subchainInfo")?)?)
}

pub(super) const POOL_RECONSTRUCT_MASTER: Verb = Verb {
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
};

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

pub(super) const POOL_SWITCH_MASTER: Verb = Verb {
    name: "StoragePool.switchMaster",
    params: &[
        "storagepoolID",
        "oldMasterUUID",
        "newMasterUUID",
        "masterVersion",
    ],
    handler: pool_switch_master,
};

fn pool_switch_master(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.switch_master(SwitchMaster {
        pool: p.uuid("storagepoolID")?,
        old_master: p.uuid("oldMasterUUID")?,
        new_master: p.uuid("newMasterUUID")?,
        master_version: p.int("masterVersion")?,
    })?)
}

pub(super) const POOL_REFRESH: Verb = Verb {
    name: "StoragePool.refresh",
    params: &["storagepoolID", "masterSdUUID", "masterVersion"],
    handler: pool_refresh,
};

fn pool_refresh(e: &Arc<Engine>, p: &Params) -> Reply {
    e.refresh_pool(
        p.uuid("storagepoolID")?,
        p.uuid("masterSdUUID")?,
        p.int("masterVersion")?,
    )?;
    ok()
}
