//! Lists as Cinder serves them: filters, `sort`, `limit`/`marker`/`offset`,
//! a `next` link when a page is full, and `count` (3.45).

use std::cmp::Ordering;

use serde_json::{json, Map, Value};

use super::{Ctx, Fault};

/// Cinder's cap on a page (`osapi_max_limit`).
const MAX_LIMIT: usize = 1000;
/// Query keys that are not filters.
const CONTROL: [&str; 8] = [
    "limit",
    "marker",
    "offset",
    "sort",
    "sort_key",
    "sort_dir",
    "with_count",
    "all_tenants",
];

/// One page of `items` (views with an `id`): filtered by the query keys
/// in `filters`, sorted and cut. Returns the body's list, its links and
/// the count before cutting.
pub fn page(
    ctx: &Ctx,
    mut items: Vec<Value>,
    filters: &[&str],
    collection: &str,
    links_key: &str,
    list_key: &str,
) -> Result<Value, Fault> {
    for (key, want) in &ctx.query {
        if CONTROL.contains(&key.as_str()) {
            continue;
        }
        let (field, like) = match key.strip_suffix('~') {
            Some(f) if ctx.at_least(34) => (f, true),
            _ => (key.as_str(), false),
        };
        if !filters.contains(&field) {
            if ctx.at_least(31) && !ctx.admin {
                return Err(Fault::bad(format!(
                    "Invalid filters {key} are found in query options."
                )));
            }
            continue;
        }
        items.retain(|item| matches(item, field, want, like));
    }
    let count = items.len();
    sort(ctx, &mut items)?;
    let offset = number(ctx, "offset")?.unwrap_or(0);
    let limit = number(ctx, "limit")?.map_or(MAX_LIMIT, |l| l.min(MAX_LIMIT));
    if let Some(marker) = ctx.query.get("marker") {
        let at = items
            .iter()
            .position(|i| i["id"].as_str() == Some(marker.as_str()))
            .ok_or_else(|| Fault::bad(format!("marker [{marker}] not found")))?;
        items.drain(..=at);
    }
    let items: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let mut body = Map::new();
    if !items.is_empty() && items.len() >= limit {
        let last = items
            .last()
            .and_then(|i| i["id"].as_str())
            .unwrap_or_default();
        let mut query: Vec<String> = ctx
            .query
            .iter()
            .filter(|(k, _)| k.as_str() != "marker")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        query.push(format!("marker={last}"));
        body.insert(
            links_key.into(),
            json!([{"rel": "next", "href": format!("{}?{}", ctx.link(collection), query.join("&"))}]),
        );
    }
    body.insert(list_key.into(), Value::Array(items));
    if ctx.at_least(45) && ctx.query.get("with_count").is_some_and(|v| truthy(v)) {
        body.insert("count".into(), json!(count));
    }
    Ok(Value::Object(body))
}

pub fn truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on" | "t" | "y"
    )
}

fn number(ctx: &Ctx, key: &str) -> Result<Option<usize>, Fault> {
    ctx.query
        .get(key)
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| Fault::bad(format!("{key} param must be an integer, not {v:?}")))
        })
        .transpose()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn matches(item: &Value, field: &str, want: &str, like: bool) -> bool {
    let have = &item[field];
    if field == "metadata" {
        // A Python-literal dict: {'k': 'v'}.
        let Ok(Value::Object(want)) = serde_json::from_str::<Value>(&want.replace('\'', "\""))
        else {
            return false;
        };
        return want.iter().all(|(k, v)| have.get(k) == Some(v));
    }
    let have = text(have);
    if like {
        have.contains(want)
    } else {
        have == want || (field == "bootable" && truthy(&have) == truthy(want))
    }
}

fn sort(ctx: &Ctx, items: &mut [Value]) -> Result<(), Fault> {
    let q = &ctx.query;
    if q.contains_key("sort") && (q.contains_key("sort_key") || q.contains_key("sort_dir")) {
        return Err(Fault::bad(
            "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
        ));
    }
    let keys: Vec<(String, bool)> = match (q.get("sort"), q.get("sort_key")) {
        (Some(s), _) => s
            .split(',')
            .map(|k| match k.split_once(':') {
                Some((k, dir)) => direction(dir).map(|d| (k.trim().to_string(), d)),
                None => Ok((k.trim().to_string(), true)),
            })
            .collect::<Result<_, _>>()?,
        (None, Some(k)) => vec![(
            k.clone(),
            direction(q.get("sort_dir").map_or("desc", String::as_str))?,
        )],
        (None, None) => vec![("created_at".into(), true)],
    };
    items.sort_by(|a, b| {
        for (key, desc) in &keys {
            let o = compare(&a[key.as_str()], &b[key.as_str()]);
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        text(&b["id"]).cmp(&text(&a["id"]))
    });
    Ok(())
}

/// true: descending.
fn direction(dir: &str) -> Result<bool, Fault> {
    match dir.trim() {
        "desc" => Ok(true),
        "asc" => Ok(false),
        other => Err(Fault::bad(format!(
            "Unknown sort direction {other:?}, must be 'desc' or 'asc'"
        ))),
    }
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => text(a).cmp(&text(b)),
    }
}
