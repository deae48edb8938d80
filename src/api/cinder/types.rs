//! `/v3/types`: volume types and their extra specs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::lists;
use super::views;
use super::{body_object, opt_string, require_admin, string_map, Answer, Ctx, Fault, Reply};
use crate::engine::catalog::{NewType, TypeChange, TypeRecord};
use crate::engine::Engine;

const FILTERS: [&str; 1] = ["name"];

pub fn route(engine: &Arc<Engine>, ctx: &Ctx, method: &Method, s: &[&str], body: Value) -> Answer {
    match (method.as_str(), s) {
        ("GET", []) => {
            let cat = engine.catalog()?;
            // Cinder's is_public: absent lists public types, "None" every
            // type (private ones: an admin's, or those shared with the
            // project), else public or private ones.
            let mut ctx = ctx.clone();
            let is_public = match ctx.query.remove("is_public").as_deref() {
                None => Some(true),
                Some(v) if v.eq_ignore_ascii_case("none") => None,
                Some(v) => Some(lists::truthy(v)),
            };
            let types: Vec<Value> = cat
                .types
                .all()
                .iter()
                .filter(|t| is_public.is_none_or(|p| t.is_public == p))
                .filter(|t| ctx.admin || t.is_public || t.projects.contains(&ctx.project))
                .map(|t| views::volume_type(&ctx, t))
                .collect();
            // Types sort by name by default.
            ctx.query
                .entry("sort".into())
                .or_insert_with(|| "name:asc".into());
            Ok(Reply::ok(lists::page(
                &ctx,
                types,
                &FILTERS,
                "types",
                "volume_type_links",
                "volume_types",
            )?))
        }
        ("GET", ["default"]) => {
            let t = engine.catalog()?.default_type(&ctx.project)?;
            Ok(Reply::ok(
                json!({"volume_type": views::volume_type(ctx, &t)}),
            ))
        }
        ("GET", [id]) => Ok(Reply::ok(
            json!({"volume_type": views::volume_type(ctx, &visible(engine, ctx, id)?)}),
        )),
        ("POST", []) => {
            require_admin(ctx)?;
            let obj = body_object(&body, "volume_type")?;
            let name = opt_string(obj, "name")?
                .ok_or_else(|| Fault::bad("Volume type name can not be empty."))?;
            let is_public = match obj
                .get("os-volume-type-access:is_public")
                .or(obj.get("is_public"))
            {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => lists::truthy(s),
                Some(other) => {
                    return Err(Fault::bad(format!("Invalid value {other} for is_public")))
                }
            };
            let t = engine.create_catalog_type(NewType {
                name,
                description: opt_string(obj, "description")?,
                is_public,
                extra_specs: string_map(
                    obj.get("extra_specs").unwrap_or(&Value::Null),
                    "extra_specs",
                )?,
            })?;
            Ok(Reply::ok(
                json!({"volume_type": views::volume_type(ctx, &t)}),
            ))
        }
        ("PUT", [id]) => {
            require_admin(ctx)?;
            let obj = body_object(&body, "volume_type")?;
            let is_public = match obj.get("is_public") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(Value::String(s)) => Some(lists::truthy(s)),
                Some(other) => {
                    return Err(Fault::bad(format!("Invalid value {other} for is_public")))
                }
            };
            let change = TypeChange {
                name: opt_string(obj, "name")?,
                description: opt_string(obj, "description")?,
                is_public,
                ..TypeChange::default()
            };
            let t = engine.update_catalog_type(id, change)?;
            Ok(Reply::ok(
                json!({"volume_type": views::volume_type(ctx, &t)}),
            ))
        }
        ("DELETE", [id]) => {
            require_admin(ctx)?;
            engine.delete_catalog_type(id)?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        ("GET", [id, "extra_specs"]) => {
            let t = visible(engine, ctx, id)?;
            Ok(Reply::ok(
                json!({"extra_specs": views::volume_type(ctx, &t)["extra_specs"]}),
            ))
        }
        ("POST", [id, "extra_specs"]) => {
            require_admin(ctx)?;
            let specs = string_map(
                body.get("extra_specs").unwrap_or(&Value::Null),
                "extra_specs",
            )?;
            set_specs(engine, id, specs.clone())?;
            Ok(Reply::ok(json!({"extra_specs": specs})))
        }
        ("GET", [id, "extra_specs", key]) => {
            let t = visible(engine, ctx, id)?;
            match views::volume_type(ctx, &t)["extra_specs"].get(*key) {
                Some(v) => Ok(Reply::ok(json!({*key: v}))),
                None => Err(Fault::not_found(format!(
                    "Volume Type {} has no extra specs with key {key}.",
                    t.id
                ))),
            }
        }
        ("PUT", [id, "extra_specs", key]) => {
            require_admin(ctx)?;
            let specs = string_map(&body, "extra spec")?;
            if specs.len() != 1 || !specs.contains_key(*key) {
                return Err(Fault::bad("Request body and URI mismatch"));
            }
            set_specs(engine, id, specs.clone())?;
            Ok(Reply::ok(json!(specs)))
        }
        ("DELETE", [id, "extra_specs", key]) => {
            require_admin(ctx)?;
            engine.update_catalog_type(
                id,
                TypeChange {
                    unset_specs: vec![key.to_string()],
                    ..TypeChange::default()
                },
            )?;
            Ok(Reply::status(StatusCode::ACCEPTED))
        }
        _ => Err(Fault::not_found("The resource could not be found.")),
    }
}

fn set_specs(
    engine: &Arc<Engine>,
    id: &str,
    specs: BTreeMap<String, String>,
) -> Result<TypeRecord, Fault> {
    Ok(engine.update_catalog_type(
        id,
        TypeChange {
            set_specs: specs,
            ..TypeChange::default()
        },
    )?)
}

/// A type the caller may see, by id or name.
fn visible(engine: &Arc<Engine>, ctx: &Ctx, id: &str) -> Result<TypeRecord, Fault> {
    let t = engine
        .catalog()?
        .find_type(id)
        .map_err(|_| Fault::not_found(format!("Volume type {id} could not be found.")))?;
    if !(ctx.admin || t.is_public || t.projects.contains(&ctx.project)) {
        return Err(Fault::not_found(format!(
            "Volume type {id} could not be found."
        )));
    }
    Ok(t)
}
