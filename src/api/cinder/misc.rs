//! The small resources: limits, quotas, availability zones, services,
//! scheduler pools, capabilities, resource filters, messages; and an honest 501 for
//! the collections Cairn does not serve yet.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::lists::truthy;
use super::{require_admin, Answer, Ctx, Fault, Reply};
use crate::engine::catalog::{host_name, QUOTA_RESOURCES};
use crate::engine::Engine;

/// Not served yet: the resources of later work.
const LATER: [&str; 2] = ["groups", "group_snapshots"];

pub fn route(engine: &Arc<Engine>, ctx: &Ctx, method: &Method, s: &[&str], body: Value) -> Answer {
    match (method.as_str(), s) {
        ("GET", ["limits"]) => {
            let cat = engine.catalog()?;
            let (limit, used) = (
                cat.quota_limits(&ctx.project),
                cat.quota_usage(&ctx.project),
            );
            Ok(Reply::ok(json!({"limits": {"rate": [], "absolute": {
                "maxTotalVolumes": limit["volumes"], "maxTotalSnapshots": limit["snapshots"],
                "maxTotalVolumeGigabytes": limit["gigabytes"], "maxTotalBackups": limit["backups"],
                "maxTotalBackupGigabytes": limit["backup_gigabytes"],
                "totalVolumesUsed": used["volumes"], "totalGigabytesUsed": used["gigabytes"],
                "totalSnapshotsUsed": used["snapshots"], "totalBackupsUsed": used["backups"],
                "totalBackupGigabytesUsed": used["backup_gigabytes"],
            }}})))
        }
        ("GET", ["os-quota-sets", project, "defaults"]) => Ok(Reply::ok(json!({"quota_set":
            quota_set(project, &QUOTA_RESOURCES.iter().map(|r| (r.to_string(), -1)).collect(), None)}))),
        ("GET", ["os-quota-sets", project]) => {
            if !ctx.admin && *project != ctx.project {
                return Err(Fault::new(
                    StatusCode::FORBIDDEN,
                    "Policy doesn't allow showing another project's quotas.",
                ));
            }
            let cat = engine.catalog()?;
            let usage = ctx
                .query
                .get("usage")
                .is_some_and(|v| truthy(v))
                .then(|| cat.quota_usage(project));
            Ok(Reply::ok(
                json!({"quota_set": quota_set(project, &cat.quota_limits(project), usage.as_ref())}),
            ))
        }
        ("PUT", ["os-quota-sets", project]) => {
            require_admin(ctx)?;
            let obj = super::body_object(&body, "quota_set")?;
            let mut set = std::collections::BTreeMap::new();
            for (k, v) in obj {
                // cinderclient sends the project along; Cinder ignores it.
                if ["tenant_id", "id", "skip_validation"].contains(&k.as_str()) {
                    continue;
                }
                let n = v
                    .as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        Fault::bad(format!(
                            "Invalid input received: quota {k} must be an integer"
                        ))
                    })?;
                set.insert(k.clone(), n);
            }
            let limits = engine.set_catalog_quotas(project, set)?;
            Ok(Reply::ok(
                json!({"quota_set": quota_set(project, &limits, None)}),
            ))
        }
        ("DELETE", ["os-quota-sets", project]) => {
            require_admin(ctx)?;
            engine.reset_catalog_quotas(project)?;
            Ok(Reply::status(StatusCode::OK))
        }
        ("GET", ["os-availability-zone"]) => Ok(Reply::ok(json!({"availabilityZoneInfo": [
            {"zoneName": crate::engine::catalog::AVAILABILITY_ZONE, "zoneState": {"available": true}}
        ]}))),
        ("GET", ["os-services"]) => {
            require_admin(ctx)?;
            let cat = engine.catalog()?;
            let host = host_name();
            let now = crate::engine::catalog::timestamp();
            let service = |binary: &str, host: String| {
                json!({
                    "binary": binary, "host": host, "zone": crate::engine::catalog::AVAILABILITY_ZONE,
                    "status": "enabled", "state": "up", "updated_at": now, "disabled_reason": null,
                })
            };
            let mut kinds: Vec<&str> = engine.backend_pools(&cat)?.iter().map(|p| p.kind).collect();
            kinds.sort();
            kinds.dedup();
            let mut services = vec![service("cinder-scheduler", host.clone())];
            services.extend(
                kinds
                    .iter()
                    .map(|k| service("cinder-volume", format!("{host}@{k}"))),
            );
            Ok(Reply::ok(json!({"services": services})))
        }
        ("GET", ["scheduler-stats", "get_pools"]) => {
            require_admin(ctx)?;
            let cat = engine.catalog()?;
            let detail = ctx
                .query
                .get("detail")
                .is_some_and(|d| super::lists::truthy(d));
            let host = host_name();
            let pools: Vec<Value> = engine
                .backend_pools(&cat)?
                .iter()
                .map(|p| {
                    let name = format!("{host}@{}#{}", p.kind, p.domain);
                    if detail {
                        json!({"name": name, "capabilities": p.capabilities()})
                    } else {
                        json!({"name": name})
                    }
                })
                .collect();
            Ok(Reply::ok(json!({"pools": pools})))
        }
        ("GET", ["resource_filters"]) if ctx.at_least(33) => {
            Ok(Reply::ok(json!({"resource_filters": [
                {"resource": "volume", "filters": ["name", "status", "metadata", "bootable", "availability_zone", "size"]},
                {"resource": "volume_type", "filters": ["is_public", "name"]},
            {"resource": "snapshot", "filters": ["name", "status", "volume_id", "metadata"]},
            ]})))
        }
        ("GET", ["messages"]) if ctx.at_least(3) => {
            // A volume's last failure, as Cinder's user messages tell them.
            let cat = engine.catalog()?;
            let messages: Vec<Value> = cat
                .volumes
                .all()
                .iter()
                .filter(|v| v.project == ctx.project || ctx.admin)
                .filter_map(|v| {
                    let fault = v.fault.as_ref()?;
                    let at = v.updated_at.clone().unwrap_or_else(|| v.created_at.clone());
                    Some(json!({
                        "id": v.id, "event_id": "VOLUME_VOLUME_001_002", "user_message": fault,
                        "message_level": "ERROR", "resource_type": "VOLUME", "resource_uuid": v.id,
                        "created_at": at, "guaranteed_until": at, "request_id": format!("req-{}", v.id),
                        "links": [{"rel": "self", "href": ctx.link(&format!("messages/{}", v.id))}],
                    }))
                })
                .collect();
            Ok(Reply::ok(json!({"messages": messages})))
        }
        (m, ["default-types", rest @ ..]) if ctx.at_least(62) => {
            default_types(engine, ctx, m, rest, &body)
        }
        (_, [first, ..]) if LATER.contains(first) => Err(Fault::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("Cairn does not serve /{first} yet"),
        )),
        _ => Err(Fault::not_found("The resource could not be found.")),
    }
}

/// `/default-types` (3.62, administrators): a project's own default type.
fn default_types(
    engine: &Arc<Engine>,
    ctx: &Ctx,
    method: &str,
    rest: &[&str],
    body: &Value,
) -> Answer {
    require_admin(ctx)?;
    let cat = engine.catalog()?;
    let view = |d: &crate::engine::catalog::DefaultTypeRecord| json!({"project_id": d.project, "volume_type_id": d.type_id});
    let missing =
        |p: &str| Fault::not_found(format!("Default type for project {p} could not be found."));
    match (method, rest) {
        ("GET", []) => Ok(Reply::ok(
            json!({"default_types": cat.default_types.all().iter().map(view).collect::<Vec<_>>()}),
        )),
        ("GET", [project]) => {
            let d = cat
                .default_types
                .find(|d| d.project == *project)
                .ok_or_else(|| missing(project))?;
            Ok(Reply::ok(json!({"default_type": view(&d)})))
        }
        ("PUT", [project]) => {
            let t = body
                .get("default_type")
                .and_then(|d| d.get("volume_type"))
                .and_then(Value::as_str)
                .ok_or_else(|| Fault::bad("Missing required element 'default_type' with 'volume_type' in request body."))?;
            let d = engine.set_catalog_default_type(project, t)?;
            Ok(Reply::ok(json!({"default_type": view(&d)})))
        }
        ("DELETE", [project]) => {
            engine
                .unset_catalog_default_type(project)
                .map_err(|_| missing(project))?;
            Ok(Reply::status(StatusCode::NO_CONTENT))
        }
        _ => Err(Fault::not_found("The resource could not be found.")),
    }
}

/// A `quota_set`: limits, or with `usage` each as `{limit, in_use, ...}`.
fn quota_set(
    project: &str,
    limits: &std::collections::BTreeMap<String, i64>,
    usage: Option<&std::collections::BTreeMap<String, i64>>,
) -> Value {
    let mut set = serde_json::Map::new();
    set.insert("id".into(), json!(project));
    for (k, limit) in limits {
        let v = match usage {
            Some(u) => {
                json!({"limit": limit, "in_use": u.get(k).copied().unwrap_or(0), "reserved": 0, "allocated": 0})
            }
            None => json!(limit),
        };
        set.insert(k.clone(), v);
    }
    Value::Object(set)
}
