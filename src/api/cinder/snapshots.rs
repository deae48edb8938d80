//! `/v3/snapshots`: snapshots, their metadata and actions.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::lists::{self, truthy};
use super::{body_object, opt_string, require_admin, string_map, Answer, Ctx, Fault, Reply};
use crate::engine::catalog::{Catalog, NewSnapshot, SnapshotRecord, SnapshotStatus};
use crate::engine::Engine;

const FILTERS: [&str; 5] = [
    "name",
    "status",
    "volume_id",
    "metadata",
    "availability_zone",
];
const CREATE_KEYS: [&str; 7] = [
    "volume_id",
    "name",
    "display_name",
    "description",
    "display_description",
    "force",
    "metadata",
];
/// How long a create or delete waits for a quick one to finish.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

pub fn route(engine: &Arc<Engine>, ctx: &Ctx, method: &Method, s: &[&str], body: Value) -> Answer {
    match (method.as_str(), s) {
        ("GET", []) => list(engine, ctx, false),
        ("GET", ["detail"]) => list(engine, ctx, true),
        ("POST", []) => create(engine, ctx, &body),
        ("GET", [id]) => {
            let s = visible(engine, ctx, id)?;
            Ok(Reply::ok(json!({"snapshot": view(ctx, &s, true)})))
        }
        ("PUT", [id]) => {
            let obj = body_object(&body, "snapshot")?;
            let s = visible(engine, ctx, id)?;
            let pick = |a: &str, b: &str| -> Result<Option<Option<String>>, Fault> {
                if obj.contains_key(a) || obj.contains_key(b) {
                    Ok(Some(opt_string(obj, a)?.or(opt_string(obj, b)?)))
                } else {
                    Ok(None)
                }
            };
            let s = engine.update_catalog_snapshot(
                s.id,
                pick("name", "display_name")?,
                pick("description", "display_description")?,
                None,
            )?;
            Ok(Reply::ok(json!({"snapshot": view(ctx, &s, true)})))
        }
        ("DELETE", [id]) => {
            let s = visible(engine, ctx, id)?;
            engine.delete_catalog_snapshot(s.id, false)?;
            settle(engine, s.id)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        ("POST", [id, "action"]) => {
            let s = visible(engine, ctx, id)?;
            match body.as_object().and_then(|o| o.iter().next()) {
                Some((name, args)) if name == "os-reset_status" => {
                    require_admin(ctx)?;
                    let status = args
                        .get("status")
                        .and_then(Value::as_str)
                        .and_then(SnapshotStatus::parse)
                        .ok_or_else(|| {
                            Fault::bad("Invalid input received: a snapshot status is required")
                        })?;
                    engine.reset_catalog_snapshot_status(s.id, status)?;
                    Ok(Reply::status(StatusCode::ACCEPTED))
                }
                Some((name, _)) if name == "os-force_delete" => {
                    require_admin(ctx)?;
                    engine.delete_catalog_snapshot(s.id, true)?;
                    settle(engine, s.id)?;
                    Ok(Reply::status(StatusCode::ACCEPTED))
                }
                Some((name, _)) => Err(Fault::bad(format!("There is no such action: {name}"))),
                None => Err(Fault::bad("An action body names exactly one action")),
            }
        }
        ("GET", [id, "metadata"]) => Ok(Reply::ok(
            json!({"metadata": visible(engine, ctx, id)?.metadata}),
        )),
        ("POST", [id, "metadata"]) | ("PUT", [id, "metadata"]) => {
            let new = string_map(body.get("metadata").unwrap_or(&Value::Null), "metadata")?;
            let s = visible(engine, ctx, id)?;
            let merged = if method == Method::POST {
                let mut m = s.metadata.clone();
                m.extend(new);
                m
            } else {
                new
            };
            let s = engine.update_catalog_snapshot(s.id, None, None, Some(merged))?;
            Ok(Reply::ok(json!({"metadata": s.metadata})))
        }
        ("GET", [id, "metadata", key]) => {
            let s = visible(engine, ctx, id)?;
            let v = s.metadata.get(*key).ok_or_else(|| no_key(&s, key))?;
            Ok(Reply::ok(json!({"meta": {*key: v}})))
        }
        ("PUT", [id, "metadata", key]) => {
            let meta = string_map(body.get("meta").unwrap_or(&Value::Null), "meta")?;
            if meta.len() != 1 || !meta.contains_key(*key) {
                return Err(Fault::bad("Request body and URI mismatch"));
            }
            let s = visible(engine, ctx, id)?;
            let mut m = s.metadata.clone();
            m.extend(meta.clone());
            engine.update_catalog_snapshot(s.id, None, None, Some(m))?;
            Ok(Reply::ok(json!({"meta": meta})))
        }
        ("DELETE", [id, "metadata", key]) => {
            let s = visible(engine, ctx, id)?;
            let mut m = s.metadata.clone();
            m.remove(*key).ok_or_else(|| no_key(&s, key))?;
            engine.update_catalog_snapshot(s.id, None, None, Some(m))?;
            Ok(Reply::status(StatusCode::OK))
        }
        _ => Err(Fault::not_found("The resource could not be found.")),
    }
}

fn no_key(s: &SnapshotRecord, key: &str) -> Fault {
    Fault::not_found(format!("Snapshot {} has no metadata with key {key}.", s.id))
}

fn visible(engine: &Arc<Engine>, ctx: &Ctx, id: &str) -> Result<SnapshotRecord, Fault> {
    super::owned(&engine.catalog()?.snapshots, ctx, "Snapshot", id, |s| {
        &s.project
    })
}

/// Waits a little for a quick create or delete to end.
fn settle(engine: &Arc<Engine>, id: crate::types::Uuid) -> Result<Option<SnapshotRecord>, Fault> {
    let cat = engine.catalog()?;
    let deadline = std::time::Instant::now() + SETTLE;
    Ok(cat
        .snapshots
        .wait_for(id, deadline, |s| !s.status.is_transitional()))
}

fn view(ctx: &Ctx, s: &SnapshotRecord, detail: bool) -> Value {
    let mut v = json!({
        "id": s.id,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "name": s.name,
        "description": s.description,
        "volume_id": s.volume_id,
        "status": s.status.name(),
        "size": s.size,
        "metadata": s.metadata,
        "os-extended-snapshot-attributes:project_id": s.project,
        "os-extended-snapshot-attributes:progress": if s.status == SnapshotStatus::Available { "100%" } else { "0%" },
    });
    if detail {
        let o = v.as_object_mut().expect("object");
        if ctx.at_least(14) {
            o.insert("group_snapshot_id".into(), Value::Null);
        }
        if ctx.at_least(41) {
            o.insert("user_id".into(), json!(s.user));
        }
        if ctx.at_least(65) {
            o.insert("consumes_quota".into(), json!(true));
        }
    }
    v
}

fn listed(cat: &Catalog, ctx: &Ctx) -> Vec<SnapshotRecord> {
    let all = ctx.admin && ctx.query.get("all_tenants").is_some_and(|v| truthy(v));
    cat.snapshots
        .all()
        .into_iter()
        .filter(|s| all || s.project == ctx.project)
        .collect()
}

fn list(engine: &Arc<Engine>, ctx: &Ctx, detail: bool) -> Answer {
    let cat = engine.catalog()?;
    let items = listed(&cat, ctx)
        .iter()
        .map(|s| view(ctx, s, detail))
        .collect();
    let collection = if detail {
        "snapshots/detail"
    } else {
        "snapshots"
    };
    Ok(Reply::ok(lists::page(
        ctx,
        items,
        &FILTERS,
        collection,
        "snapshots_links",
        "snapshots",
    )?))
}

fn create(engine: &Arc<Engine>, ctx: &Ctx, body: &Value) -> Answer {
    let obj: &Map<String, Value> = body_object(body, "snapshot")?;
    if let Some(k) = obj.keys().find(|k| !CREATE_KEYS.contains(&k.as_str())) {
        return Err(Fault::bad(format!("Invalid input for field/attribute snapshot. Additional properties are not allowed ('{k}' was unexpected)")));
    }
    let force = match obj.get("force") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => Some(truthy(s)),
        Some(other) => return Err(Fault::bad(format!("Invalid value {other} for force"))),
    };
    if ctx.at_least(66) && force == Some(false) {
        return Err(Fault::bad("Invalid input received: force=False is not supported from microversion 3.66; leave it out"));
    }
    let volume = opt_string(obj, "volume_id")?
        .ok_or_else(|| Fault::bad("Missing required element 'volume_id' in request body."))?;
    let (_, vol) = super::volumes::visible(engine, ctx, &volume)?;
    let s = engine.create_catalog_snapshot(NewSnapshot {
        volume_id: vol.id,
        project: ctx.project.clone(),
        user: ctx.user.clone(),
        name: opt_string(obj, "name")?.or(opt_string(obj, "display_name")?),
        description: opt_string(obj, "description")?.or(opt_string(obj, "display_description")?),
        metadata: string_map(obj.get("metadata").unwrap_or(&Value::Null), "metadata")?,
    })?;
    let s = settle(engine, s.id)?.unwrap_or(s);
    Ok(Reply::accepted(json!({"snapshot": view(ctx, &s, true)})))
}
