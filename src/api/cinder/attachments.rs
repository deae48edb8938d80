//! `/v3/attachments` (3.27; `os-complete` 3.44): reserve a volume for a
//! consumer, connect it with the consumer host's connector, complete it,
//! and delete it.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::lists::{self, truthy};
use super::{body_object, opt_string, Answer, Ctx, Fault, Reply};
use crate::engine::catalog::AttachmentRecord;
use crate::engine::Engine;

const FILTERS: [&str; 3] = ["volume_id", "status", "instance"];

pub fn route(engine: &Arc<Engine>, ctx: &Ctx, method: &Method, s: &[&str], body: Value) -> Answer {
    if !ctx.at_least(27) {
        return Err(Fault::not_found("The resource could not be found."));
    }
    match (method.as_str(), s) {
        ("GET", []) | ("GET", ["detail"]) => {
            let detail = !s.is_empty();
            let cat = engine.catalog()?;
            let all = ctx.admin && ctx.query.get("all_tenants").is_some_and(|v| truthy(v));
            let items = cat
                .attachments
                .all()
                .iter()
                .filter(|a| all || a.project == ctx.project)
                .map(|a| {
                    if detail {
                        view_detail(engine, a)
                    } else {
                        Ok(summary(a))
                    }
                })
                .collect::<Result<Vec<_>, Fault>>()?;
            let path = if detail {
                "attachments/detail"
            } else {
                "attachments"
            };
            Ok(Reply::ok(lists::page(
                ctx,
                items,
                &FILTERS,
                path,
                "attachments_links",
                "attachments",
            )?))
        }
        ("POST", []) => {
            let obj = body_object(&body, "attachment")?;
            let vol = opt_string(obj, "volume_uuid")?.ok_or_else(|| {
                Fault::bad("Missing required element 'volume_uuid' in request body.")
            })?;
            let (_, v) = super::volumes::visible(engine, ctx, &vol)?;
            let connector = obj
                .get("connector")
                .filter(|c| c.as_object().is_some_and(|m| !m.is_empty()))
                .cloned();
            let mode = match opt_string(obj, "mode")?.as_deref() {
                None | Some("null") => "rw".to_string(),
                Some(m) => m.to_string(),
            };
            let a = engine.create_catalog_attachment(
                v.id,
                &v.project,
                opt_string(obj, "instance_uuid")?,
                connector,
                &mode,
            )?;
            Ok(Reply::ok(json!({"attachment": view_detail(engine, &a)?})))
        }
        ("GET", [id]) => Ok(Reply::ok(
            json!({"attachment": view_detail(engine, &super::owned(&engine.catalog()?.attachments, ctx, "Attachment", id, |a| &a.project)?)?}),
        )),
        ("PUT", [id]) => {
            let a = super::owned(&engine.catalog()?.attachments, ctx, "Attachment", id, |a| {
                &a.project
            })?;
            let obj = body_object(&body, "attachment")?;
            let connector = obj.get("connector").cloned().ok_or_else(|| {
                Fault::bad("Missing required element 'connector' in request body.")
            })?;
            let a = engine.connect_catalog_attachment(a.id, connector)?;
            Ok(Reply::ok(json!({"attachment": view_detail(engine, &a)?})))
        }
        ("POST", [id, "action"]) if body.get("os-complete").is_some() && ctx.at_least(44) => {
            let a = super::owned(&engine.catalog()?.attachments, ctx, "Attachment", id, |a| {
                &a.project
            })?;
            engine.complete_catalog_attachment(a.id, None)?;
            Ok(Reply::status(StatusCode::NO_CONTENT))
        }
        ("DELETE", [id]) => {
            let a = super::owned(&engine.catalog()?.attachments, ctx, "Attachment", id, |a| {
                &a.project
            })?;
            let left = engine.delete_catalog_attachment(a.id)?;
            Ok(Reply::ok(
                json!({"attachments": left.iter().map(summary).collect::<Vec<_>>()}),
            ))
        }
        _ => Err(Fault::not_found("The resource could not be found.")),
    }
}

fn summary(a: &AttachmentRecord) -> Value {
    json!({"id": a.id, "status": a.status.name(), "instance": a.instance, "volume_id": a.volume_id})
}

fn view_detail(engine: &Arc<Engine>, a: &AttachmentRecord) -> Result<Value, Fault> {
    let mut v = summary(a);
    v["attached_at"] = json!(a.attached_at.clone().unwrap_or_default());
    v["detached_at"] = json!("");
    v["attach_mode"] = json!(a.mode);
    v["connection_info"] = engine.catalog_connection_info(a)?;
    Ok(v)
}
