//! The verb table: VDSM method names, their parameters in schema order, and
//! thin handlers that parse parameters, call the engine and shape results.
//! Each verb is described once, as a `Verb` constant beside its handler, in
//! the file of its namespace; [`VERBS`] lists them (a constant left out of
//! it is dead code, which the build reports).

mod catalog;
mod domain;
mod host;
mod image;
mod lvm;
mod nbd;
mod pool;
mod sdm;
mod task;
mod thin;
mod volume;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::errors::{vdsm_code, ApiError};
use super::params::{uuid_value, Params};
use crate::engine::domains::{CreateDomain, DomainFilter};
use crate::engine::export::nbd::NbdConfig;
use crate::engine::export::tickets::TicketSpec;
use crate::engine::image::merge::Subchain;
use crate::engine::image::move_image::MoveImage;
use crate::engine::image::DeleteImage;
use crate::engine::jobs::{VolumeAttrs, VolumeRef};
use crate::engine::pool::master::SwitchMaster;
use crate::engine::pool::membership::Reconstruct;
use crate::engine::pool::CreatePool;
use crate::engine::volume::{CreateVolume, DeleteVolume};
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
    host::HOST_GET_STORAGE_DOMAINS,
    host::HOST_GET_DEVICE_LIST,
    host::HOST_GET_CONNECTED_POOLS,
    host::HOST_ALL_TASK_STATUSES,
    host::HOST_ALL_TASK_INFOS,
    lvm::VG_CREATE,
    lvm::VG_GET_INFO,
    lvm::VG_REMOVE,
    lvm::DOMAIN_EXTEND,
    lvm::DOMAIN_RESIZE_PV,
    pool::POOL_CONNECT_STORAGE_SERVER,
    pool::POOL_DISCONNECT_STORAGE_SERVER,
    pool::POOL_CREATE,
    pool::POOL_CONNECT,
    pool::POOL_DISCONNECT,
    pool::POOL_GET_INFO,
    pool::POOL_SPM_START,
    pool::POOL_SPM_STOP,
    pool::POOL_SPM_STATUS,
    domain::DOMAIN_CREATE,
    domain::DOMAIN_GET_INFO,
    domain::DOMAIN_GET_STATS,
    domain::DOMAIN_GET_IMAGES,
    domain::DOMAIN_GET_VOLUMES,
    domain::DOMAIN_FORMAT,
    domain::DOMAIN_DUMP,
    volume::VOLUME_CREATE,
    volume::VOLUME_DELETE,
    volume::VOLUME_GET_INFO,
    volume::VOLUME_GET_SIZE,
    volume::VOLUME_SET_LEGALITY,
    image::IMAGE_GET_VOLUMES,
    image::IMAGE_DELETE,
    image::IMAGE_PREPARE,
    image::IMAGE_TEARDOWN,
    image::IMAGE_MOVE,
    volume::VOLUME_EXTEND_SIZE,
    volume::VOLUME_MEASURE,
    volume::VOLUME_QEMU_INFO,
    sdm::SDM_UPDATE_VOLUME,
    sdm::SDM_COPY_DATA,
    sdm::SDM_SPARSIFY_VOLUME,
    sdm::SDM_AMEND_VOLUME,
    sdm::SDM_ADD_BITMAP,
    sdm::SDM_REMOVE_BITMAP,
    sdm::SDM_CLEAR_BITMAPS,
    sdm::SDM_MERGE,
    pool::POOL_PREPARE_MERGE,
    pool::POOL_FINALIZE_MERGE,
    nbd::NBD_START_SERVER,
    nbd::NBD_STOP_SERVER,
    host::HOST_ADD_IMAGE_TICKET,
    host::HOST_GET_IMAGE_TICKET,
    host::HOST_REMOVE_IMAGE_TICKET,
    host::HOST_EXTEND_IMAGE_TICKET,
    host::HOST_START_MONITORING,
    host::HOST_STOP_MONITORING,
    host::HOST_REPO_STATS,
    domain::DOMAIN_ATTACH,
    domain::DOMAIN_DETACH,
    domain::DOMAIN_ACTIVATE,
    domain::DOMAIN_DEACTIVATE,
    pool::POOL_RECONSTRUCT_MASTER,
    pool::POOL_SWITCH_MASTER,
    pool::POOL_REFRESH,
    host::HOST_GET_JOBS,
    task::TASK_GET_STATUS,
    task::TASK_GET_INFO,
    task::TASK_CLEAR,
    task::TASK_REVERT,
    task::TASK_STOP,
];

/// Cairn's verbs that VDSM's schema has no counterpart for.
pub static CAIRN_VERBS: &[Verb] = &[
    thin::VOLUME_REQUEST_EXTEND,
    thin::DRIVE_MONITOR_ADD,
    thin::DRIVE_MONITOR_REMOVE,
    thin::DRIVE_MONITOR_LIST,
    catalog::VOLUME_TYPE_LIST,
    catalog::VOLUME_TYPE_CREATE,
    catalog::VOLUME_TYPE_UPDATE,
    catalog::VOLUME_TYPE_DELETE,
    catalog::QOS_LIST,
    catalog::QOS_CREATE,
    catalog::QOS_UPDATE,
    catalog::QOS_DELETE,
    catalog::QOS_ASSOCIATE,
    catalog::BACKUP_LIST,
    catalog::BACKUP_GET,
    catalog::BACKUP_CREATE,
    catalog::BACKUP_RESTORE,
    catalog::BACKUP_DELETE,
    catalog::BACKUP_EXPORT,
    catalog::BACKUP_IMPORT,
];

pub fn find(name: &str) -> Option<&'static Verb> {
    VERBS.iter().chain(CAIRN_VERBS).find(|v| v.name == name)
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
        port: number("port")?,
        tpgt: number("tpgt")?,
        iqn: field(&["iqn"])?,
        iface: field(&["ifaceName"])?,
        iface_binding: crate::primitives::iscsi::IfaceBinding {
            net_ifacename: field(&["netIfaceName"])?,
            initiatorname: field(&["initiatorName"])?,
        },
        user: field(&["user"])?,
        password: field(&["password"])?,
    })
}

fn status_list(results: Vec<(Value, crate::Result<()>)>) -> Reply {
    let list: Vec<Value> = results
        .into_iter()
        .map(|(id, r)| json!({"id": id, "status": r.as_ref().map_or_else(vdsm_code, |_| 0)}))
        .collect();
    to_value(&list)
}

fn host_id(p: &Params) -> Result<u32, ApiError> {
    p.opt_u32("hostID")?
        .ok_or_else(|| ApiError::invalid_params("missing required parameter 'hostID'"))
}

fn volume_ids(p: &Params) -> Result<(Uuid, Uuid, Uuid), ApiError> {
    p.opt_uuid("storagepoolID")?;
    Ok((
        p.uuid("storagedomainID")?,
        p.uuid("imageID")?,
        p.uuid("volumeID")?,
    ))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// (Names are checked against VDSM's schema in the integration tests.)
    #[test]
    fn verbs_are_unique() {
        let mut names: Vec<_> = VERBS.iter().chain(CAIRN_VERBS).map(|v| v.name).collect();
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
        let files = [
            include_str!("catalog.rs"),
            include_str!("domain.rs"),
            include_str!("host.rs"),
            include_str!("image.rs"),
            include_str!("lvm.rs"),
            include_str!("nbd.rs"),
            include_str!("pool.rs"),
            include_str!("sdm.rs"),
            include_str!("task.rs"),
            include_str!("thin.rs"),
            include_str!("volume.rs"),
        ];
        let mut checked = 0;
        for src in files {
            for entry in src.split(": Verb = Verb {").skip(1) {
                let field = |key: &str, end: char| {
                    let at = entry.find(key).unwrap() + key.len();
                    entry[at..].split(end).next().unwrap().trim()
                };
                let (verb, handler) = (field("name: \"", '"'), field("handler:", ','));
                let start = src
                    .find(&format!("\nfn {handler}("))
                    .unwrap_or_else(|| panic!("no fn {handler} beside {verb}"));
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
                checked += 1;
            }
        }
        assert_eq!(
            checked,
            VERBS.len() + CAIRN_VERBS.len(),
            "every verb is described beside its handler"
        );
    }
}
