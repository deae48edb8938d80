//! `/v3/qos-specs` (administrators): QoS specs and their associations
//! with volume types, which Cinder makes with GET requests.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::lists::{self, truthy};
use super::{body_object, require_admin, string_map, Answer, Ctx, Fault, Reply};
use crate::engine::catalog::QosRecord;
use crate::engine::Engine;
use crate::types::Uuid;

const FILTERS: [&str; 3] = ["id", "name", "consumer"];

pub fn route(engine: &Arc<Engine>, ctx: &Ctx, method: &Method, s: &[&str], body: Value) -> Answer {
    require_admin(ctx)?;
    match (method.as_str(), s) {
        ("GET", []) => {
            let items = engine.catalog()?.qos.all().iter().map(view).collect();
            Ok(Reply::ok(lists::page(
                ctx,
                items,
                &FILTERS,
                "qos-specs",
                "qos_specs_links",
                "qos_specs",
            )?))
        }
        ("POST", []) => {
            let obj = body_object(&body, "qos_specs")?;
            let mut specs = string_map(&Value::Object(obj.clone()), "qos_specs")?;
            let name = specs
                .remove("name")
                .ok_or_else(|| Fault::bad("Missing required element 'name' in request body."))?;
            let consumer = specs.remove("consumer");
            let q = engine.create_catalog_qos(name, consumer, specs)?;
            Ok(Reply::ok(
                json!({"qos_specs": view(&q), "links": super::links(ctx, "qos-specs", q.id)}),
            ))
        }
        ("GET", [id]) => {
            let q = find(engine, id)?;
            Ok(Reply::ok(
                json!({"qos_specs": view(&q), "links": super::links(ctx, "qos-specs", q.id)}),
            ))
        }
        ("PUT", [id]) => {
            let q = find(engine, id)?;
            let set = string_map(body.get("qos_specs").unwrap_or(&Value::Null), "qos_specs")?;
            engine.update_catalog_qos(q.id, set.clone(), &[])?;
            Ok(Reply::ok(json!({"qos_specs": set})))
        }
        ("PUT", [id, "delete_keys"]) => {
            let q = find(engine, id)?;
            let keys: Vec<String> = body
                .get("keys")
                .and_then(Value::as_array)
                .ok_or_else(|| Fault::bad("Missing required element 'keys' in request body."))?
                .iter()
                .map(|k| {
                    k.as_str()
                        .map(String::from)
                        .ok_or_else(|| Fault::bad("keys must be strings"))
                })
                .collect::<Result<_, _>>()?;
            engine.update_catalog_qos(q.id, Default::default(), &keys)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        ("DELETE", [id]) => {
            let q = find(engine, id)?;
            let force = ctx.query.get("force").is_some_and(|f| truthy(f));
            engine.delete_catalog_qos(q.id, force)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        ("GET", [id, "associations"]) => {
            let q = find(engine, id)?;
            let assoc: Vec<Value> = engine
                .catalog()?
                .types
                .all()
                .iter()
                .filter(|t| t.qos_specs_id == Some(q.id))
                .map(|t| json!({"association_type": "volume_type", "name": t.name, "id": t.id}))
                .collect();
            Ok(Reply::ok(json!({"qos_associations": assoc})))
        }
        ("GET", [id, verb @ ("associate" | "disassociate")]) => {
            let q = find(engine, id)?;
            let t = ctx
                .query
                .get("vol_type_id")
                .ok_or_else(|| Fault::bad("Volume Type id must not be None."))?;
            engine.associate_catalog_qos(q.id, Some(t), *verb == "associate")?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        ("GET", [id, "disassociate_all"]) => {
            let q = find(engine, id)?;
            engine.associate_catalog_qos(q.id, None, false)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        _ => Err(Fault::not_found("The resource could not be found.")),
    }
}

fn find(engine: &Arc<Engine>, id: &str) -> Result<QosRecord, Fault> {
    let missing = || Fault::not_found(format!("No such QoS spec {id}."));
    let uuid: Uuid = crate::types::parse_uuid(id).ok_or_else(missing)?;
    engine.catalog()?.qos.get(uuid).map_err(|_| missing())
}

fn view(q: &QosRecord) -> Value {
    json!({"id": q.id, "name": q.name, "consumer": q.consumer, "specs": q.specs, "created_at": q.created_at})
}
