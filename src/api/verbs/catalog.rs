//! Cairn's own verbs for the pool's catalog (volume types, QoS specs and
//! backups), the ones the `cairn` CLI uses; the Cinder face serves the
//! same records.
//! Documented in `docs/api.md`.

use super::*;
use crate::engine::catalog::{
    NewBackup, NewType, NewVolume, RestoreTarget, TypeChange, BACKUP_SERVICE,
};

/// An object of strings (`{"k": "v"}`); absent is empty.
fn string_map(p: &Params, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match p.opt_value(name) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(ApiError::invalid_params(format!(
                    "{name}.{k} must be a string, not {other}"
                ))),
            })
            .collect(),
        Some(other) => Err(ApiError::invalid_params(format!(
            "{name} must be an object of strings, not {other}"
        ))),
    }
}

/// A list of strings; absent is empty.
fn strings(p: &Params, name: &str) -> Result<Vec<String>, ApiError> {
    match p.opt_value(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => p
            .list(name)?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| ApiError::invalid_params(format!("{name} must list strings")))
            })
            .collect(),
    }
}

pub(super) const VOLUME_TYPE_LIST: Verb = Verb {
    name: "VolumeType.list",
    params: &[],
    handler: volume_type_list,
};

fn volume_type_list(e: &Arc<Engine>, _p: &Params) -> Reply {
    to_value(&e.catalog()?.types.all())
}

pub(super) const VOLUME_TYPE_CREATE: Verb = Verb {
    name: "VolumeType.create",
    params: &["name", "description", "isPublic", "extraSpecs"],
    handler: volume_type_create,
};

fn volume_type_create(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.create_catalog_type(NewType {
        name: p.string("name")?,
        description: p.opt_string("description")?,
        is_public: p.bool_or("isPublic", true)?,
        extra_specs: string_map(p, "extraSpecs")?,
    })?)
}

pub(super) const VOLUME_TYPE_UPDATE: Verb = Verb {
    name: "VolumeType.update",
    params: &["type", "name", "description", "setSpecs", "unsetSpecs"],
    handler: volume_type_update,
};

fn volume_type_update(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.update_catalog_type(
        &p.string("type")?,
        TypeChange {
            name: p.opt_string("name")?,
            description: p.opt_string("description")?,
            is_public: None,
            set_specs: string_map(p, "setSpecs")?,
            unset_specs: strings(p, "unsetSpecs")?,
        },
    )?)
}

pub(super) const VOLUME_TYPE_DELETE: Verb = Verb {
    name: "VolumeType.delete",
    params: &["type"],
    handler: volume_type_delete,
};

fn volume_type_delete(e: &Arc<Engine>, p: &Params) -> Reply {
    e.delete_catalog_type(&p.string("type")?)?;
    ok()
}

pub(super) const QOS_LIST: Verb = Verb {
    name: "QosSpecs.list",
    params: &[],
    handler: qos_list,
};

fn qos_list(e: &Arc<Engine>, _p: &Params) -> Reply {
    to_value(&e.catalog()?.qos.all())
}

pub(super) const QOS_CREATE: Verb = Verb {
    name: "QosSpecs.create",
    params: &["name", "consumer", "specs"],
    handler: qos_create,
};

fn qos_create(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.create_catalog_qos(
        p.string("name")?,
        p.opt_string("consumer")?,
        string_map(p, "specs")?,
    )?)
}

pub(super) const QOS_UPDATE: Verb = Verb {
    name: "QosSpecs.update",
    params: &["qosID", "set", "unset"],
    handler: qos_update,
};

fn qos_update(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.update_catalog_qos(
        p.uuid("qosID")?,
        string_map(p, "set")?,
        &strings(p, "unset")?,
    )?)
}

pub(super) const QOS_DELETE: Verb = Verb {
    name: "QosSpecs.delete",
    params: &["qosID", "force"],
    handler: qos_delete,
};

fn qos_delete(e: &Arc<Engine>, p: &Params) -> Reply {
    e.delete_catalog_qos(p.uuid("qosID")?, p.bool_or("force", false)?)?;
    ok()
}

pub(super) const QOS_ASSOCIATE: Verb = Verb {
    name: "QosSpecs.associate",
    params: &["qosID", "type", "associate"],
    handler: qos_associate,
};

fn qos_associate(e: &Arc<Engine>, p: &Params) -> Reply {
    e.associate_catalog_qos(
        p.uuid("qosID")?,
        Some(&p.string("type")?),
        p.bool_or("associate", true)?,
    )?;
    ok()
}

pub(super) const BACKUP_LIST: Verb = Verb {
    name: "Backup.list",
    params: &["volumeID"],
    handler: backup_list,
};

fn backup_list(e: &Arc<Engine>, p: &Params) -> Reply {
    let volume = p.opt_uuid("volumeID")?;
    let mut all: Vec<_> = e
        .catalog()?
        .backups
        .all()
        .into_iter()
        .filter(|b| volume.is_none_or(|v| b.volume_id == v))
        .collect();
    all.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    to_value(&all)
}

pub(super) const BACKUP_GET: Verb = Verb {
    name: "Backup.get",
    params: &["backupID"],
    handler: backup_get,
};

fn backup_get(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.catalog()?.backups.get(p.uuid("backupID")?)?)
}

pub(super) const BACKUP_CREATE: Verb = Verb {
    name: "Backup.create",
    params: &[
        "volumeID",
        "snapshotID",
        "name",
        "description",
        "incremental",
        "container",
    ],
    handler: backup_create,
};

fn backup_create(e: &Arc<Engine>, p: &Params) -> Reply {
    let vol = e.catalog()?.volumes.get(p.uuid("volumeID")?)?;
    to_value(&e.create_catalog_backup(NewBackup {
        volume_id: vol.id,
        snapshot_id: p.opt_uuid("snapshotID")?,
        // An operator's backup belongs to the volume's project.
        project: vol.project,
        user: vol.user,
        name: p.opt_string("name")?,
        description: p.opt_string("description")?,
        metadata: BTreeMap::new(),
        container: p.opt_string("container")?,
        incremental: p.bool_or("incremental", false)?,
        force: false,
    })?)
}

pub(super) const BACKUP_RESTORE: Verb = Verb {
    name: "Backup.restore",
    params: &["backupID", "volumeID", "name"],
    handler: backup_restore,
};

fn backup_restore(e: &Arc<Engine>, p: &Params) -> Reply {
    let b = e.catalog()?.backups.get(p.uuid("backupID")?)?;
    let into = match p.opt_uuid("volumeID")? {
        Some(v) => RestoreTarget::Existing(v),
        None => RestoreTarget::New(NewVolume {
            project: b.project.clone(),
            user: b.user.clone(),
            name: p.opt_string("name")?,
            ..NewVolume::default()
        }),
    };
    let (_, v) = e.restore_catalog_backup(b.id, into)?;
    to_value(&v)
}

pub(super) const BACKUP_DELETE: Verb = Verb {
    name: "Backup.delete",
    params: &["backupID", "force"],
    handler: backup_delete,
};

fn backup_delete(e: &Arc<Engine>, p: &Params) -> Reply {
    e.delete_catalog_backup(p.uuid("backupID")?, p.bool_or("force", false)?)?;
    ok()
}

pub(super) const BACKUP_EXPORT: Verb = Verb {
    name: "Backup.export",
    params: &["backupID"],
    handler: backup_export,
};

fn backup_export(e: &Arc<Engine>, p: &Params) -> Reply {
    let (service, url) = e.export_catalog_backup(p.uuid("backupID")?)?;
    to_value(&json!({"backupService": service, "backupURL": url}))
}

pub(super) const BACKUP_IMPORT: Verb = Verb {
    name: "Backup.import",
    params: &["backupURL", "backupService", "project", "user"],
    handler: backup_import,
};

fn backup_import(e: &Arc<Engine>, p: &Params) -> Reply {
    let service = p
        .opt_string("backupService")?
        .unwrap_or_else(|| BACKUP_SERVICE.to_string());
    let project = p.string("project")?;
    let user = p.opt_string("user")?.unwrap_or_else(|| project.clone());
    to_value(&e.import_catalog_backup(&service, &p.string("backupURL")?, &project, &user)?)
}
