//! `/v3/volume-transfers` (3.55) and `/v3/os-volume-transfer`: offering a
//! volume to another project, and taking it.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::lists::{self, truthy};
use super::{body_object, opt_string, Answer, Ctx, Fault, Reply};
use crate::engine::catalog::TransferRecord;
use crate::engine::Engine;

const FILTERS: [&str; 2] = ["name", "volume_id"];

/// `collection`: the path the client used, for links.
pub fn route(
    engine: &Arc<Engine>,
    ctx: &Ctx,
    collection: &str,
    method: &Method,
    s: &[&str],
    body: Value,
) -> Answer {
    match (method.as_str(), s) {
        ("GET", []) | ("GET", ["detail"]) => {
            let detail = !s.is_empty();
            let cat = engine.catalog()?;
            let all = ctx.admin && ctx.query.get("all_tenants").is_some_and(|v| truthy(v));
            let items = cat
                .transfers
                .all()
                .iter()
                .filter(|t| all || t.source_project == ctx.project)
                .map(|t| view(ctx, collection, t, detail))
                .collect();
            let path = if detail {
                format!("{collection}/detail")
            } else {
                collection.to_string()
            };
            Ok(Reply::ok(lists::page(
                ctx,
                items,
                &FILTERS,
                &path,
                "transfers_links",
                "transfers",
            )?))
        }
        ("POST", []) => {
            let obj = body_object(&body, "transfer")?;
            let vol = opt_string(obj, "volume_id")?.ok_or_else(|| {
                Fault::bad("Missing required element 'volume_id' in request body.")
            })?;
            let (_, v) = super::volumes::visible(engine, ctx, &vol)?;
            let no_snapshots = ctx.at_least(55)
                && obj
                    .get("no_snapshots")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            let (t, key) = engine.create_catalog_transfer(
                v.id,
                &v.project,
                opt_string(obj, "name")?,
                no_snapshots,
            )?;
            let mut body = view(ctx, collection, &t, true);
            body["auth_key"] = json!(key);
            Ok(Reply::accepted(json!({"transfer": body})))
        }
        ("GET", [id]) => {
            let t = super::owned(&engine.catalog()?.transfers, ctx, "Transfer", id, |t| {
                &t.source_project
            })?;
            Ok(Reply::ok(
                json!({"transfer": view(ctx, collection, &t, true)}),
            ))
        }
        ("DELETE", [id]) => {
            let t = super::owned(&engine.catalog()?.transfers, ctx, "Transfer", id, |t| {
                &t.source_project
            })?;
            engine.delete_catalog_transfer(t.id)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        ("POST", [id, "accept"]) => {
            let key = body
                .get("accept")
                .and_then(|a| a.get("auth_key"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Fault::bad("Missing required element 'auth_key' in request body.")
                })?;
            // Anyone with the key may take it: not only its project sees it.
            let missing = || Fault::not_found(format!("Transfer {id} could not be found."));
            let uuid = crate::types::parse_uuid(id).ok_or_else(missing)?;
            let t = engine
                .accept_catalog_transfer(uuid, key, &ctx.project, &ctx.user)
                .map_err(|e| match e {
                    crate::error::Error::CatalogNotFound { .. } => missing(),
                    e => e.into(),
                })?;
            Ok(Reply::accepted(json!({"transfer": {
                "id": t.id, "name": t.name, "volume_id": t.volume_id,
                "links": super::links(ctx, collection, t.id),
            }})))
        }
        _ => Err(Fault::not_found("The resource could not be found.")),
    }
}

fn view(ctx: &Ctx, collection: &str, t: &TransferRecord, detail: bool) -> Value {
    let mut v = json!({"id": t.id, "name": t.name, "volume_id": t.volume_id, "links": super::links(ctx, collection, t.id)});
    if detail {
        v["created_at"] = json!(t.created_at);
        if ctx.at_least(55) {
            v["no_snapshots"] = json!(t.no_snapshots);
        }
        if ctx.at_least(57) {
            v["source_project_id"] = json!(t.source_project);
            v["destination_project_id"] = Value::Null;
            v["accepted"] = json!(false);
        }
    }
    v
}
