//! `/v3/volumes`: volumes, their metadata and actions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::lists::{self, truthy};
use super::views;
use super::{
    body_object, opt_string, require_admin, string_map, whole_number, Answer, Ctx, Fault, Reply,
};
use crate::engine::catalog::{
    AttachStatus, AttachmentRecord, Catalog, NewVolume, RestoreTarget, Source, TypeRecord,
    VolumeRecord, VolumeStatus,
};
use crate::engine::Engine;
use crate::types::Uuid;

/// How long a request waits for a quick change (a thin create or delete
/// on a file domain) to finish before answering: scripts that go on at
/// once then find the volume ready.
const SETTLE: Duration = Duration::from_secs(5);

/// Filters a user may list volumes by (Cinder's resource_filters.json).
const FILTERS: [&str; 6] = [
    "name",
    "status",
    "metadata",
    "bootable",
    "availability_zone",
    "size",
];

/// Keys `POST /volumes` takes (schema `create_volume_v353`).
const CREATE_KEYS: [&str; 16] = [
    "size",
    "name",
    "description",
    "display_name",
    "display_description",
    "volume_type",
    "metadata",
    "snapshot_id",
    "source_volid",
    "backup_id",
    "group_id",
    "consistencygroup_id",
    "availability_zone",
    "imageRef",
    "image_id",
    "multiattach",
];

pub fn route(engine: &Arc<Engine>, ctx: &Ctx, method: &Method, s: &[&str], body: Value) -> Answer {
    match (method.as_str(), s) {
        ("GET", []) => list(engine, ctx, false),
        ("GET", ["detail"]) => list(engine, ctx, true),
        ("POST", []) => create(engine, ctx, &body),
        ("GET", ["summary"]) if ctx.at_least(12) => summary(engine, ctx),
        ("GET", [id]) => {
            let (cat, v) = visible(engine, ctx, id)?;
            Ok(Reply::ok(json!({"volume": detail(engine, &cat, ctx, &v)})))
        }
        ("PUT", [id]) => update(engine, ctx, id, &body),
        ("DELETE", [id]) => {
            let force = ctx.query.get("force").is_some_and(|f| truthy(f));
            if force && !ctx.at_least(23) {
                return Err(Fault::bad("force delete needs microversion 3.23 or later"));
            }
            if force {
                require_admin(ctx)?;
            }
            let cascade = ctx.query.get("cascade").is_some_and(|f| truthy(f));
            delete(engine, ctx, id, force, cascade)
        }
        ("POST", [id, "action"]) => action(engine, ctx, id, &body),
        ("GET", [id, "metadata"]) => {
            let (_, v) = visible(engine, ctx, id)?;
            Ok(Reply::ok(json!({"metadata": v.metadata})))
        }
        ("POST", [id, "metadata"]) | ("PUT", [id, "metadata"]) => {
            let new = string_map(body.get("metadata").unwrap_or(&Value::Null), "metadata")?;
            let (_, v) = visible(engine, ctx, id)?;
            let merged = if method == Method::POST {
                let mut m = v.metadata.clone();
                m.extend(new);
                m
            } else {
                new
            };
            let v = engine.update_catalog_volume(v.id, None, None, Some(merged))?;
            Ok(Reply::ok(json!({"metadata": v.metadata})))
        }
        ("GET", [id, "metadata", key]) => {
            let (_, v) = visible(engine, ctx, id)?;
            let value = v.metadata.get(*key).ok_or_else(|| no_metadata(&v, key))?;
            Ok(Reply::ok(json!({"meta": {*key: value}})))
        }
        ("PUT", [id, "metadata", key]) => {
            let meta = string_map(body.get("meta").unwrap_or(&Value::Null), "meta")?;
            if meta.len() != 1 || !meta.contains_key(*key) {
                return Err(Fault::bad("Request body and URI mismatch"));
            }
            let (_, v) = visible(engine, ctx, id)?;
            let mut m = v.metadata.clone();
            m.extend(meta.clone());
            engine.update_catalog_volume(v.id, None, None, Some(m))?;
            Ok(Reply::ok(json!({"meta": meta})))
        }
        ("DELETE", [id, "metadata", key]) => {
            let (_, v) = visible(engine, ctx, id)?;
            let mut m = v.metadata.clone();
            m.remove(*key).ok_or_else(|| no_metadata(&v, key))?;
            engine.update_catalog_volume(v.id, None, None, Some(m))?;
            Ok(Reply::status(StatusCode::OK))
        }
        _ => Err(Fault::not_found("The resource could not be found.")),
    }
}

fn no_metadata(v: &VolumeRecord, key: &str) -> Fault {
    Fault::not_found(format!("Volume {} has no metadata with key {key}.", v.id))
}

/// A volume the caller may see.
pub(super) fn visible(
    engine: &Arc<Engine>,
    ctx: &Ctx,
    id: &str,
) -> Result<(Arc<Catalog>, VolumeRecord), Fault> {
    let cat = engine.catalog()?;
    let v = super::owned(&cat.volumes, ctx, "Volume", id, |v| &v.project)?;
    Ok((cat, v))
}

/// What volumes' views need besides their records, gathered once for a
/// request (a list renders thousands).
struct Lookups {
    types: HashMap<Uuid, TypeRecord>,
    kinds: HashMap<Uuid, &'static str>,
    attachments: Vec<AttachmentRecord>,
}

impl Lookups {
    fn new(engine: &Arc<Engine>, cat: &Catalog, vols: &[VolumeRecord]) -> Lookups {
        let mut kinds = HashMap::new();
        for sd in vols.iter().filter_map(|v| v.domain) {
            kinds.entry(sd).or_insert_with(|| match engine.domain(sd) {
                Ok(d) if d.caps().qemu_driver == "host_device" => "block",
                _ => "file",
            });
        }
        Lookups {
            types: cat.types.all().into_iter().map(|t| (t.id, t)).collect(),
            kinds,
            attachments: cat.attachments.all(),
        }
    }

    fn detail(&self, ctx: &Ctx, v: &VolumeRecord) -> Value {
        let kind = v.domain.and_then(|sd| self.kinds.get(&sd).copied());
        views::volume_detail(ctx, v, self.types.get(&v.type_id), kind, &self.attachments)
    }
}

fn detail(engine: &Arc<Engine>, cat: &Catalog, ctx: &Ctx, v: &VolumeRecord) -> Value {
    Lookups::new(engine, cat, std::slice::from_ref(v)).detail(ctx, v)
}

fn listed(cat: &Catalog, ctx: &Ctx) -> Vec<VolumeRecord> {
    let all_tenants = ctx.admin && ctx.query.get("all_tenants").is_some_and(|v| truthy(v));
    cat.volumes
        .all()
        .into_iter()
        .filter(|v| all_tenants || v.project == ctx.project)
        .collect()
}

fn list(engine: &Arc<Engine>, ctx: &Ctx, with_detail: bool) -> Answer {
    let cat = engine.catalog()?;
    let vols = listed(&cat, ctx);
    let lookups = Lookups::new(engine, &cat, &vols);
    let details: Vec<Value> = vols.iter().map(|v| lookups.detail(ctx, v)).collect();
    let collection = if with_detail {
        "volumes/detail"
    } else {
        "volumes"
    };
    let mut body = lists::page(
        ctx,
        details,
        &FILTERS,
        collection,
        "volumes_links",
        "volumes",
    )?;
    if !with_detail {
        for item in body["volumes"].as_array_mut().into_iter().flatten() {
            *item = json!({"id": item["id"], "name": item["name"], "links": item["links"]});
        }
    }
    Ok(Reply::ok(body))
}

fn summary(engine: &Arc<Engine>, ctx: &Ctx) -> Answer {
    let cat = engine.catalog()?;
    let vols = listed(&cat, ctx);
    let mut metadata: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in &vols {
        for (k, val) in &v.metadata {
            let seen = metadata.entry(k.clone()).or_default();
            if !seen.contains(val) {
                seen.push(val.clone());
            }
        }
    }
    let mut s = json!({
        "total_count": vols.len(),
        "total_size": vols.iter().map(|v| v.size).sum::<u64>(),
    });
    if ctx.at_least(36) {
        s["metadata"] = json!(metadata);
    }
    Ok(Reply::ok(json!({"volume-summary": s})))
}

fn text_field(obj: &Map<String, Value>, key: &str, legacy: &str) -> Result<Option<String>, Fault> {
    Ok(opt_string(obj, key)?.or(opt_string(obj, legacy)?))
}

fn create(engine: &Arc<Engine>, ctx: &Ctx, body: &Value) -> Answer {
    let obj = body_object(body, "volume")?;
    if ctx.at_least(53) {
        if let Some(k) = obj.keys().find(|k| !CREATE_KEYS.contains(&k.as_str())) {
            return Err(Fault::bad(format!("Invalid input for field/attribute volume. Additional properties are not allowed ('{k}' was unexpected)")));
        }
    }
    let source_of = |key: &str| -> Result<Option<crate::types::Uuid>, Fault> {
        match opt_string(obj, key)? {
            None => Ok(None),
            Some(s) => crate::types::parse_uuid(&s)
                .map(Some)
                .ok_or_else(|| Fault::not_found(format!("{key} {s} could not be found."))),
        }
    };
    let source = match (source_of("snapshot_id")?, source_of("source_volid")?) {
        (Some(_), Some(_)) => {
            return Err(Fault::bad(
                "Invalid input received: give snapshot_id or source_volid, not both",
            ))
        }
        (Some(s), None) => Some(Source::Snapshot(s)),
        (None, Some(v)) => Some(Source::Volume(v)),
        (None, None) => None,
    };
    let backup = match opt_string(obj, "backup_id")? {
        Some(b) if ctx.at_least(47) => Some(super::backups::visible(engine, ctx, &b)?),
        _ => None,
    };
    if backup.is_some() && source.is_some() {
        return Err(Fault::bad(
            "Invalid input received: a volume is made from one of snapshot_id, source_volid and backup_id",
        ));
    }
    for other in ["imageRef", "image_id", "group_id"] {
        if obj.get(other).is_some_and(|v| !v.is_null()) {
            return Err(Fault::bad(format!(
                "Invalid input received: Cairn does not create volumes from {other} yet"
            )));
        }
    }
    if obj
        .get("multiattach")
        .is_some_and(|v| v.as_bool() == Some(true))
    {
        return Err(Fault::bad(
            "multiattach is set through the volume type, not the request",
        ));
    }
    let size = match obj.get("size") {
        None | Some(Value::Null) if source.is_some() || backup.is_some() => 0,
        None | Some(Value::Null) => {
            return Err(Fault::bad("Invalid input received: size is required"))
        }
        Some(v) => whole_number(v, "size")?,
    };
    let req = NewVolume {
        project: ctx.project.clone(),
        user: ctx.user.clone(),
        name: text_field(obj, "name", "display_name")?,
        description: text_field(obj, "description", "display_description")?,
        size,
        volume_type: opt_string(obj, "volume_type")?,
        metadata: string_map(obj.get("metadata").unwrap_or(&Value::Null), "metadata")?,
        availability_zone: opt_string(obj, "availability_zone")?,
        source,
    };
    let v = match backup {
        Some(b) => {
            engine
                .restore_catalog_backup(b.id, RestoreTarget::New(req))?
                .1
        }
        None => engine.create_catalog_volume(req)?,
    };
    let v = engine.settle_catalog_volume(v.id, SETTLE)?.unwrap_or(v);
    let cat = engine.catalog()?;
    Ok(Reply::accepted(
        json!({"volume": detail(engine, &cat, ctx, &v)}),
    ))
}

fn update(engine: &Arc<Engine>, ctx: &Ctx, id: &str, body: &Value) -> Answer {
    let obj = body_object(body, "volume")?;
    const KEYS: [&str; 5] = [
        "name",
        "description",
        "display_name",
        "display_description",
        "metadata",
    ];
    if ctx.at_least(53) {
        if obj.is_empty() {
            return Err(Fault::bad("Invalid input for field/attribute volume: at least one of name, description, metadata is required"));
        }
        if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(Fault::bad(format!("Invalid input for field/attribute volume. Additional properties are not allowed ('{k}' was unexpected)")));
        }
    }
    let (_, v) = visible(engine, ctx, id)?;
    let pick = |a: &str, b: &str| -> Result<Option<Option<String>>, Fault> {
        if obj.contains_key(a) || obj.contains_key(b) {
            Ok(Some(text_field(obj, a, b)?))
        } else {
            Ok(None)
        }
    };
    let metadata = obj
        .get("metadata")
        .map(|m| string_map(m, "metadata"))
        .transpose()?;
    let v = engine.update_catalog_volume(
        v.id,
        pick("name", "display_name")?,
        pick("description", "display_description")?,
        metadata,
    )?;
    let cat = engine.catalog()?;
    Ok(Reply::ok(json!({"volume": detail(engine, &cat, ctx, &v)})))
}

fn delete(engine: &Arc<Engine>, ctx: &Ctx, id: &str, force: bool, cascade: bool) -> Answer {
    let (_, v) = visible(engine, ctx, id)?;
    engine.delete_catalog_volume(v.id, force, cascade)?;
    engine.settle_catalog_volume(v.id, SETTLE)?;
    Ok(Reply::status(StatusCode::ACCEPTED))
}

/// The volume's attachment the legacy actions (reserve, initialize,
/// attach) work on: Cairn volumes have at most one.
fn legacy_attachment(
    engine: &Arc<Engine>,
    v: &VolumeRecord,
    pick: impl Fn(&AttachmentRecord) -> bool,
) -> Result<Option<AttachmentRecord>, Fault> {
    Ok(engine
        .catalog()?
        .attachments
        .find(|a| a.volume_id == v.id && pick(a)))
}

fn action(engine: &Arc<Engine>, ctx: &Ctx, id: &str, body: &Value) -> Answer {
    let obj = body
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| Fault::bad("An action body names exactly one action"))?;
    let (name, args) = obj.iter().next().expect("one entry");
    let (_, v) = visible(engine, ctx, id)?;
    match name.as_str() {
        "os-extend" => {
            let new_size = args
                .get("new_size")
                .ok_or_else(|| Fault::bad("Missing required element 'new_size' in request body."))
                .and_then(|n| whole_number(n, "new_size"))?;
            engine.extend_catalog_volume(v.id, new_size)?;
            engine.settle_catalog_volume(v.id, SETTLE)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-reset_status" => {
            require_admin(ctx)?;
            if let Some(status) = args.get("status").and_then(Value::as_str) {
                let status = VolumeStatus::parse(status)
                    .ok_or_else(|| Fault::bad(format!("Invalid input received: status {status:?} is not a volume status Cairn keeps")))?;
                engine.reset_catalog_volume_status(v.id, status)?;
            }
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-force_delete" => {
            require_admin(ctx)?;
            engine.delete_catalog_volume(v.id, true, false)?;
            engine.settle_catalog_volume(v.id, SETTLE)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-set_bootable" => {
            let bootable = match args.get("bootable") {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => truthy(s),
                _ => {
                    return Err(Fault::bad(
                        "Invalid input received: bootable must be a boolean",
                    ))
                }
            };
            engine.set_catalog_volume_bootable(v.id, bootable)?;
            Ok(Reply::status(StatusCode::OK))
        }
        "revert" if ctx.at_least(40) => {
            let snap = args
                .get("snapshot_id")
                .and_then(Value::as_str)
                .and_then(crate::types::parse_uuid)
                .ok_or_else(|| {
                    Fault::bad("Missing required element 'snapshot_id' in request body.")
                })?;
            engine.revert_catalog_volume(v.id, snap)?;
            engine.settle_catalog_volume(v.id, SETTLE)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-reserve" => {
            engine.create_catalog_attachment(v.id, &v.project, None, None, "rw")?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-unreserve" => {
            if let Some(a) = legacy_attachment(engine, &v, |a| a.device_path.is_none())? {
                engine.delete_catalog_attachment(a.id)?;
            }
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-initialize_connection" => {
            let connector = args
                .get("connector")
                .filter(|c| c.is_object())
                .cloned()
                .ok_or_else(|| {
                    Fault::bad("Missing required element 'connector' in request body.")
                })?;
            let att = match legacy_attachment(engine, &v, |a| a.status != AttachStatus::Attached)? {
                Some(a) => engine.connect_catalog_attachment(a.id, connector)?,
                None => engine.create_catalog_attachment(
                    v.id,
                    &v.project,
                    None,
                    Some(connector),
                    "rw",
                )?,
            };
            Ok(Reply::ok(
                json!({"connection_info": engine.catalog_connection_info(&att)?}),
            ))
        }
        "os-attach" => {
            let att = legacy_attachment(engine, &v, |a| a.device_path.is_some() && a.status != AttachStatus::Attached)?
                .ok_or_else(|| Fault::bad("Invalid volume: the volume has no connection to attach; call os-initialize_connection first"))?;
            let instance = args
                .get("instance_uuid")
                .and_then(Value::as_str)
                .map(String::from);
            engine.complete_catalog_attachment(att.id, instance)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-begin_detaching" | "os-roll_detaching" => {
            engine.mark_catalog_detaching(v.id, name == "os-begin_detaching")?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        // The volume stays prepared until os-detach ends the attachment.
        "os-terminate_connection" => Ok(Reply::status(StatusCode::ACCEPTED)),
        "os-detach" | "os-force_detach" => {
            if name == "os-force_detach" {
                require_admin(ctx)?;
            }
            let wanted = args
                .get("attachment_id")
                .and_then(Value::as_str)
                .map(String::from);
            let cat = engine.catalog()?;
            for a in cat.attachments.all().into_iter().filter(|a| {
                a.volume_id == v.id && wanted.as_ref().is_none_or(|w| *w == a.id.to_string())
            }) {
                engine.delete_catalog_attachment(a.id)?;
            }
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-retype" => {
            let new_type = args
                .get("new_type")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Fault::bad("Missing required element 'new_type' in request body.")
                })?;
            let on_demand = match args.get("migration_policy").and_then(Value::as_str) {
                None | Some("never") => false,
                Some("on-demand") => true,
                Some(other) => {
                    return Err(Fault::bad(format!(
                    "Invalid input received: migration_policy {other:?} is not never or on-demand"
                )))
                }
            };
            engine.retype_catalog_volume(v.id, new_type, on_demand)?;
            engine.settle_catalog_volume(v.id, SETTLE)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-migrate_volume" => {
            require_admin(ctx)?;
            // A back-end pool's name: <host>@<kind>#<domain UUID>.
            let host = args
                .get("host")
                .and_then(Value::as_str)
                .ok_or_else(|| Fault::bad("Missing required element 'host' in request body."))?;
            let dst = host
                .rsplit_once('#')
                .and_then(|(_, sd)| crate::types::parse_uuid(sd))
                .ok_or_else(|| Fault::bad(format!("Invalid input received: host {host:?} names no pool (<host>@<kind>#<domain>)")))?;
            engine.migrate_catalog_volume(v.id, dst)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        "os-update_readonly_flag" | "os-volume_upload_image" | "os-unmanage" => Err(Fault::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("Cairn does not implement the volume action {name} yet"),
        )),
        other => Err(Fault::bad(format!("There is no such action: {other}"))),
    }
}
