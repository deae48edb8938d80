//! `/v3/backups`: backups of volumes and snapshots, restores, and the
//! administrators' actions on them.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::lists::{self, truthy};
use super::{body_object, opt_string, require_admin, string_map, Answer, Ctx, Fault, Reply};
use crate::engine::catalog::{BackupRecord, BackupStatus, NewBackup, NewVolume, RestoreTarget};
use crate::engine::Engine;

const FILTERS: [&str; 3] = ["name", "status", "volume_id"];
const CREATE_KEYS: [&str; 10] = [
    "volume_id",
    "container",
    "name",
    "description",
    "incremental",
    "force",
    "snapshot_id",
    "metadata",
    "availability_zone",
    "display_name",
];

pub fn route(engine: &Arc<Engine>, ctx: &Ctx, method: &Method, s: &[&str], body: Value) -> Answer {
    match (method.as_str(), s) {
        ("GET", []) => list(engine, ctx, false),
        ("GET", ["detail"]) => list(engine, ctx, true),
        ("POST", []) => create(engine, ctx, &body),
        ("GET", [id]) => {
            let b = visible(engine, ctx, id)?;
            Ok(Reply::ok(json!({"backup": view(engine, ctx, &b)})))
        }
        ("PUT", [id]) if ctx.at_least(9) => {
            let obj = body_object(&body, "backup")?;
            let b = visible(engine, ctx, id)?;
            let metadata = match obj.get("metadata") {
                Some(m) if ctx.at_least(43) => Some(string_map(m, "metadata")?),
                _ => None,
            };
            let b = engine.update_catalog_backup(
                b.id,
                opt_string(obj, "name")?,
                opt_string(obj, "description")?,
                metadata,
            )?;
            Ok(Reply::ok(json!({"backup": summary(ctx, &b)})))
        }
        ("DELETE", [id]) => {
            let b = visible(engine, ctx, id)?;
            let force = ctx.query.get("force").is_some_and(|v| truthy(v));
            if force {
                require_admin(ctx)?;
            }
            engine.delete_catalog_backup(b.id, force)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        ("GET", [id, "export_record"]) => {
            require_admin(ctx)?;
            let b = visible(engine, ctx, id)?;
            let (service, url) = engine.export_catalog_backup(b.id)?;
            Ok(Reply::ok(json!({"backup-record": {
                "backup_service": service, "backup_url": url,
            }})))
        }
        ("POST", ["import_record"]) => {
            require_admin(ctx)?;
            let obj = body_object(&body, "backup-record")?;
            let field = |k: &str| {
                opt_string(obj, k)?.ok_or_else(|| {
                    Fault::bad(format!(
                        "Invalid input received: Incorrect request body format: {k} is required"
                    ))
                })
            };
            let b = engine.import_catalog_backup(
                &field("backup_service")?,
                &field("backup_url")?,
                &ctx.project,
                &ctx.user,
            )?;
            Ok(Reply::created(json!({"backup": summary(ctx, &b)})))
        }
        ("POST", [id, "restore"]) => {
            let b = visible(engine, ctx, id)?;
            let obj = body_object(&body, "restore")?;
            let into = match opt_string(obj, "volume_id")? {
                Some(v) => RestoreTarget::Existing(super::volumes::visible(engine, ctx, &v)?.1.id),
                None => RestoreTarget::New(NewVolume {
                    project: ctx.project.clone(),
                    user: ctx.user.clone(),
                    name: opt_string(obj, "name")?,
                    ..NewVolume::default()
                }),
            };
            let (b, v) = engine.restore_catalog_backup(b.id, into)?;
            Ok(Reply::accepted(json!({"restore": {
                "backup_id": b.id, "volume_id": v.id, "volume_name": v.name,
            }})))
        }
        ("POST", [id, "action"]) => {
            require_admin(ctx)?;
            let b = visible(engine, ctx, id)?;
            match body.as_object().and_then(|o| o.iter().next()) {
                Some((name, args)) if name == "os-reset_status" => {
                    let status = args
                        .get("status")
                        .and_then(Value::as_str)
                        .and_then(BackupStatus::parse)
                        .filter(|s| matches!(s, BackupStatus::Available | BackupStatus::Error))
                        .ok_or_else(|| {
                            Fault::bad("Invalid input received: a backup's status can be reset to available or error")
                        })?;
                    engine.reset_catalog_backup_status(b.id, status)?;
                    Ok(Reply::status(StatusCode::ACCEPTED))
                }
                Some((name, _)) if name == "os-force_delete" => {
                    engine.delete_catalog_backup(b.id, true)?;
                    Ok(Reply::status(StatusCode::ACCEPTED))
                }
                Some((name, _)) => Err(Fault::bad(format!("There is no such action: {name}"))),
                None => Err(Fault::bad("An action body names exactly one action")),
            }
        }
        _ => Err(Fault::not_found("The resource could not be found.")),
    }
}

pub(super) fn visible(engine: &Arc<Engine>, ctx: &Ctx, id: &str) -> Result<BackupRecord, Fault> {
    super::owned(&engine.catalog()?.backups, ctx, "Backup", id, |b| {
        &b.project
    })
}

fn summary(ctx: &Ctx, b: &BackupRecord) -> Value {
    json!({"id": b.id, "name": b.name, "links": super::links(ctx, "backups", b.id)})
}

fn view(engine: &Arc<Engine>, ctx: &Ctx, b: &BackupRecord) -> Value {
    let cat = engine.catalog().ok();
    let has_dependents = cat
        .as_ref()
        .is_some_and(|c| c.backups.find(|o| o.parent_id == Some(b.id)).is_some());
    let mut v = json!({
        "id": b.id,
        "status": b.status.name(),
        "size": b.size,
        "object_count": b.object_count,
        "availability_zone": b.availability_zone,
        "container": b.container,
        "created_at": b.created_at,
        "updated_at": b.updated_at,
        "name": b.name,
        "description": b.description,
        "fail_reason": b.fail_reason,
        "volume_id": b.volume_id,
        "links": super::links(ctx, "backups", b.id),
        "is_incremental": b.parent_id.is_some(),
        "has_dependent_backups": has_dependents,
        "snapshot_id": b.snapshot_id,
        "data_timestamp": b.data_timestamp,
    });
    let o = v.as_object_mut().expect("object");
    if ctx.at_least(18) && ctx.admin {
        o.insert("os-backup-project-attr:project_id".into(), json!(b.project));
    }
    if ctx.at_least(43) {
        o.insert("metadata".into(), json!(b.metadata));
    }
    if ctx.at_least(56) && ctx.admin {
        o.insert("user_id".into(), json!(b.user));
    }
    if ctx.at_least(64) {
        o.insert("encryption_key_id".into(), Value::Null);
    }
    v
}

fn list(engine: &Arc<Engine>, ctx: &Ctx, detail: bool) -> Answer {
    let cat = engine.catalog()?;
    let all = ctx.admin && ctx.query.get("all_tenants").is_some_and(|v| truthy(v));
    // Filtered on the details; a summary list is cut down after.
    let items = cat
        .backups
        .all()
        .iter()
        .filter(|b| all || b.project == ctx.project)
        .map(|b| view(engine, ctx, b))
        .collect();
    let collection = if detail { "backups/detail" } else { "backups" };
    let mut body = lists::page(ctx, items, &FILTERS, collection, "backups_links", "backups")?;
    if !detail {
        for item in body["backups"].as_array_mut().into_iter().flatten() {
            *item = json!({"id": item["id"], "name": item["name"], "links": item["links"]});
        }
    }
    Ok(Reply::ok(body))
}

fn create(engine: &Arc<Engine>, ctx: &Ctx, body: &Value) -> Answer {
    let obj: &Map<String, Value> = body_object(body, "backup")?;
    if let Some(k) = obj.keys().find(|k| !CREATE_KEYS.contains(&k.as_str())) {
        return Err(Fault::bad(format!("Invalid input for field/attribute backup. Additional properties are not allowed ('{k}' was unexpected)")));
    }
    let flag = |key: &str| -> Result<bool, Fault> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => Ok(truthy(s)),
            Some(other) => Err(Fault::bad(format!("Invalid value {other} for {key}"))),
        }
    };
    let volume = opt_string(obj, "volume_id")?
        .ok_or_else(|| Fault::bad("Missing required element 'volume_id' in request body."))?;
    let (_, vol) = super::volumes::visible(engine, ctx, &volume)?;
    let snapshot_id = match opt_string(obj, "snapshot_id")? {
        Some(s) => Some(
            crate::types::parse_uuid(&s)
                .ok_or_else(|| Fault::not_found(format!("Snapshot {s} could not be found.")))?,
        ),
        None => None,
    };
    let metadata = match obj.get("metadata") {
        Some(m) if ctx.at_least(43) => string_map(m, "metadata")?,
        _ => Default::default(),
    };
    let b = engine.create_catalog_backup(NewBackup {
        volume_id: vol.id,
        snapshot_id,
        project: ctx.project.clone(),
        user: ctx.user.clone(),
        name: opt_string(obj, "name")?.or(opt_string(obj, "display_name")?),
        description: opt_string(obj, "description")?,
        metadata,
        container: opt_string(obj, "container")?,
        incremental: flag("incremental")?,
        force: flag("force")?,
    })?;
    Ok(Reply::accepted(json!({"backup": summary(ctx, &b)})))
}
