//! Host.*: storage domains, pools, tasks, monitoring, image tickets, jobs.

use super::*;

pub(super) const HOST_GET_STORAGE_DOMAINS: Verb = Verb {
    name: "Host.getStorageDomains",
    params: &["storagepoolID", "domainClass", "storageType", "remotePath"],
    handler: host_get_storage_domains,
};

fn host_get_storage_domains(e: &Arc<Engine>, p: &Params) -> Reply {
    let filter = DomainFilter {
        pool: p.opt_uuid("storagepoolID")?.filter(|u| *u != BLANK_UUID),
        class: p.opt_enum::<DomainClass>("domainClass")?,
        domain_type: p.opt_enum::<DomainType>("storageType")?,
        remote_path: p.opt_string("remotePath")?.filter(|s| !s.is_empty()),
    };
    to_value(&e.host_domains(&filter)?)
}

pub(super) const HOST_GET_DEVICE_LIST: Verb = Verb {
    name: "Host.getDeviceList",
    params: &["storageType", "guids", "checkStatus", "refresh"],
    handler: host_get_device_list,
};

fn host_get_device_list(e: &Arc<Engine>, p: &Params) -> Reply {
    let guids = match p.opt_value("guids") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) => p
            .list("guids")?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::invalid_params(format!(
                    "guids are strings, not {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
    };
    to_value(&e.device_list(
        p.opt_enum::<DomainType>("storageType")?,
        &guids,
        p.bool_or("checkStatus", true)?,
        p.bool_or("refresh", true)?,
    )?)
}

pub(super) const HOST_GET_CONNECTED_POOLS: Verb = Verb {
    name: "Host.getConnectedStoragePools",
    params: &[],
    handler: host_get_connected_pools,
};

fn host_get_connected_pools(e: &Arc<Engine>, _: &Params) -> Reply {
    to_value(&e.connected_pool_id().into_iter().collect::<Vec<_>>())
}

pub(super) const HOST_ALL_TASK_STATUSES: Verb = Verb {
    name: "Host.getAllTasksStatuses",
    params: &[],
    handler: host_all_task_statuses,
};

fn host_all_task_statuses(e: &Arc<Engine>, _: &Params) -> Reply {
    let all: BTreeMap<Uuid, Value> = e
        .tasks
        .all()
        .iter()
        .map(|s| (s.id, task_status_value(s)))
        .collect();
    to_value(&all)
}

pub(super) const HOST_ALL_TASK_INFOS: Verb = Verb {
    name: "Host.getAllTasksInfo",
    params: &[],
    handler: host_all_task_infos,
};

fn host_all_task_infos(e: &Arc<Engine>, _: &Params) -> Reply {
    let all: BTreeMap<Uuid, Value> = e
        .tasks
        .all()
        .iter()
        .map(|s| (s.id, task_info_value(s)))
        .collect();
    to_value(&all)
}

pub(super) const HOST_START_MONITORING: Verb = Verb {
    name: "Host.startMonitoringDomain",
    params: &["sdUUID", "hostID"],
    handler: host_start_monitoring,
};

fn host_start_monitoring(e: &Arc<Engine>, p: &Params) -> Reply {
    e.start_monitoring(p.uuid("sdUUID")?, p.int("hostID")?)?;
    ok()
}

pub(super) const HOST_STOP_MONITORING: Verb = Verb {
    name: "Host.stopMonitoringDomain",
    params: &["sdUUID"],
    handler: host_stop_monitoring,
};

fn host_stop_monitoring(e: &Arc<Engine>, p: &Params) -> Reply {
    e.stop_monitoring(p.uuid("sdUUID")?);
    ok()
}

pub(super) const HOST_REPO_STATS: Verb = Verb {
    name: "Host.getStorageRepoStats",
    params: &["domains"],
    handler: host_repo_stats,
};

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

pub(super) const HOST_ADD_IMAGE_TICKET: Verb = Verb {
    name: "Host.add_image_ticket",
    params: &["ticket"],
    handler: host_add_image_ticket,
};

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

pub(super) const HOST_GET_IMAGE_TICKET: Verb = Verb {
    name: "Host.get_image_ticket",
    params: &["uuid"],
    handler: host_get_image_ticket,
};

fn host_get_image_ticket(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.get_image_ticket(p.uuid("uuid")?)?)
}

pub(super) const HOST_REMOVE_IMAGE_TICKET: Verb = Verb {
    name: "Host.remove_image_ticket",
    params: &["uuid"],
    handler: host_remove_image_ticket,
};

fn host_remove_image_ticket(e: &Arc<Engine>, p: &Params) -> Reply {
    e.remove_image_ticket(p.uuid("uuid")?)?;
    ok()
}

pub(super) const HOST_EXTEND_IMAGE_TICKET: Verb = Verb {
    name: "Host.extend_image_ticket",
    params: &["uuid", "timeout"],
    handler: host_extend_image_ticket,
};

fn host_extend_image_ticket(e: &Arc<Engine>, p: &Params) -> Reply {
    e.extend_image_ticket(p.uuid("uuid")?, p.size("timeout")?)?;
    ok()
}

pub(super) const HOST_GET_JOBS: Verb = Verb {
    name: "Host.getJobs",
    params: &["job_type", "job_ids"],
    handler: host_get_jobs,
};

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
