//! JSON-RPC 2.0 envelope: requests, notifications and batches.
//!
//! Transport-independent: the HTTP, Unix-socket and WebSocket adapters all
//! hand the request text here. Verbs run on the blocking pool because the
//! engine does storage I/O. Results arrive already serialized and are
//! spliced into the response, so large results are written once.

use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::errors::{ApiError, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR};
use super::params::Params;
use super::verbs;
use crate::engine::Engine;

/// Handles one message; None when nothing is to be sent back (only
/// notifications).
pub async fn handle_text(engine: &Arc<Engine>, text: &str) -> Option<String> {
    let parsed: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Some(error_response(
                &Value::Null,
                ApiError::new(PARSE_ERROR, format!("parse error: {e}")),
            ))
        }
    };
    match parsed {
        Value::Array(batch) if batch.is_empty() => Some(error_response(
            &Value::Null,
            ApiError::new(INVALID_REQUEST, "empty batch"),
        )),
        Value::Array(batch) => {
            let mut out = Vec::new();
            for req in batch {
                if let Some(resp) = handle_request(engine, req).await {
                    out.push(resp);
                }
            }
            (!out.is_empty()).then(|| format!("[{}]", out.join(",")))
        }
        single => handle_request(engine, single).await,
    }
}

async fn handle_request(engine: &Arc<Engine>, req: Value) -> Option<String> {
    let Value::Object(mut obj) = req else {
        return Some(error_response(
            &Value::Null,
            ApiError::new(INVALID_REQUEST, "a request must be an object"),
        ));
    };
    let id = obj.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    if !matches!(reply_id, Value::Null | Value::String(_) | Value::Number(_)) {
        return Some(error_response(
            &Value::Null,
            ApiError::new(INVALID_REQUEST, "id must be a string, a number or null"),
        ));
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error_response(
            &reply_id,
            ApiError::new(INVALID_REQUEST, "jsonrpc must be \"2.0\""),
        ));
    }
    let Some(method) = obj
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Some(error_response(
            &reply_id,
            ApiError::new(INVALID_REQUEST, "method must be a string"),
        ));
    };
    let result = call(engine, &method, obj.remove("params")).await;
    // A request without an id is a notification: run it, answer nothing.
    id.map(|_| match result {
        Ok(raw) => format!(
            r#"{{"jsonrpc":"2.0","id":{reply_id},"result":{}}}"#,
            raw.get()
        ),
        Err(e) => error_response(&reply_id, e),
    })
}

/// Runs one verb.
pub async fn call(
    engine: &Arc<Engine>,
    method: &str,
    params: Option<Value>,
) -> Result<Box<RawValue>, ApiError> {
    let verb = verbs::find(method)
        .ok_or_else(|| ApiError::new(METHOD_NOT_FOUND, format!("method not found: {method}")))?;
    let engine = engine.clone();
    let start = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let p = Params::new(params.as_ref(), verb.params)?;
        (verb.handler)(&engine, &p)
    })
    .await
    .unwrap_or_else(|e| {
        Err(ApiError::new(
            INTERNAL_ERROR,
            format!("internal error: {e}"),
        ))
    });
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match &out {
        Ok(_) => tracing::debug!(method, ms, "call succeeded"),
        Err(e) => tracing::info!(method, ms, code = e.code, error = %e.message, "call failed"),
    }
    out
}

fn error_response(id: &Value, e: ApiError) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}}).to_string()
}
