//! The image transfer data path (ovirt-imageio's `/images/` API) for the
//! tickets of `Host.add_image_ticket`:
//!
//! - `GET /images/{ticket}` reads, with an optional `Range: bytes=a-b`;
//! - `PUT /images/{ticket}` writes the body at `Content-Range: bytes a-b/*`
//!   (or at 0), then flushes unless `?flush=n`;
//! - `PATCH /images/{ticket}` with `{"op": "zero", "offset", "size",
//!   "flush"}` or `{"op": "flush"}`;
//! - `GET /images/{ticket}/extents` lists data and zero ranges, so clients
//!   transfer sparsely;
//! - `OPTIONS /images/{ticket}` tells clients what is supported.
//!
//! Bytes move between the HTTP body and the file on blocking threads, a few
//! MiB at a time, with reading or writing overlapping the network.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::engine::export::tickets::{Access, ActiveRequest, Denied};
use crate::engine::Engine;
use crate::types::parse_uuid;

/// Bytes moved per file read or write.
const CHUNK: usize = 4 << 20;
/// Chunks in flight between the network and the file.
const QUEUE: usize = 4;
const MAX_CLIENTS: u32 = 8;

type Shared = std::sync::Arc<Engine>;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/images/{ticket}",
            get(read).put(write).patch(patch).options(options),
        )
        .route("/images/{ticket}/extents", get(extents))
}

/// A refusal as HTTP: the status and a plain-text reason.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl From<Denied> for Failure {
    fn from(d: Denied) -> Failure {
        let status = match d {
            Denied::OutOfRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            _ => StatusCode::FORBIDDEN,
        };
        Failure(status, format!("{d}\n"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        let status = if crate::error::is_enospc(&e) {
            StatusCode::INSUFFICIENT_STORAGE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        tracing::warn!(error = %e, "image transfer I/O failed");
        Failure(status, format!("{e}\n"))
    }
}

fn bad_request(why: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, why.into() + "\n")
}

fn ticket(engine: &Engine, id: &str, access: Access) -> Result<ActiveRequest, Failure> {
    let id = parse_uuid(id).ok_or(Denied::Unknown)?;
    Ok(engine.ticket_for(id, access)?)
}

/// Parses `Range: bytes=a-b` or `bytes=a-` (one range).
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => size.checked_sub(1)?,
        b => b.parse().ok()?,
    };
    (end >= start).then(|| (start, end - start + 1))
}

/// Parses `Content-Range: bytes a-b/*` (or `/total`).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes ")?;
    let (range, _total) = spec.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (start, end): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (end >= start).then(|| (start, end - start + 1))
}

async fn read(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let t = ticket(&engine, &id, Access::Read)?;
    let size = t.size();
    let (offset, length, partial) = match headers.get(header::RANGE) {
        Some(v) => {
            let v = v.to_str().map_err(|_| bad_request("bad Range"))?;
            let (o, l) = parse_range(v, size).ok_or_else(|| bad_request("bad Range"))?;
            (o, l, true)
        }
        None => (0, size, false),
    };
    t.allow_range(offset, length)?;
    let filename = t.filename().map(str::to_string);
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(QUEUE);
    tokio::task::spawn_blocking(move || {
        let mut pos = offset;
        let end = offset + length;
        while pos < end {
            let n = ((end - pos) as usize).min(CHUNK);
            let mut buf = vec![0u8; n];
            let chunk = t.read_at(&mut buf, pos).map(|()| Bytes::from(buf));
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
            pos += n as u64;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut resp = Response::builder()
        .status(if partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length);
    if partial {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", offset, offset + length - 1),
        );
    }
    if let Some(f) = filename {
        resp = resp.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{f}\""),
        );
    }
    resp.body(Body::from_stream(stream))
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn write(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let t = ticket(&engine, &id, Access::Write)?;
    let header_num = |name: header::HeaderName| -> Result<Option<&str>, Failure> {
        headers
            .get(name)
            .map(|v| v.to_str().map_err(|_| bad_request("bad header")))
            .transpose()
    };
    let length: u64 = header_num(header::CONTENT_LENGTH)?
        .ok_or_else(|| {
            Failure(
                StatusCode::LENGTH_REQUIRED,
                "Content-Length is required\n".into(),
            )
        })?
        .parse()
        .map_err(|_| bad_request("bad Content-Length"))?;
    let offset = match header_num(header::CONTENT_RANGE)? {
        Some(v) => {
            let (o, l) = parse_content_range(v).ok_or_else(|| bad_request("bad Content-Range"))?;
            if l != length {
                return Err(bad_request("Content-Range and Content-Length disagree"));
            }
            o
        }
        None => 0,
    };
    t.allow_range(offset, length)?;
    let flush = query.get("flush").map(String::as_str) != Some("n");

    let (tx, mut rx) = mpsc::channel::<(u64, Vec<u8>)>(QUEUE);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        while let Some((at, buf)) = rx.blocking_recv() {
            t.write_at(&buf, at)?;
        }
        if flush {
            t.flush()?;
        }
        Ok(())
    });
    let mut stream = body.into_data_stream();
    let mut pos = offset;
    let mut buf = Vec::with_capacity(CHUNK);
    let mut received = 0u64;
    let mut failure = None;
    while let Some(frame) = stream.next().await {
        let data = match frame {
            Ok(d) => d,
            Err(e) => {
                failure = Some(bad_request(format!("cannot read the body: {e}")));
                break;
            }
        };
        received += data.len() as u64;
        if received > length {
            failure = Some(bad_request("the body is longer than Content-Length"));
            break;
        }
        buf.extend_from_slice(&data);
        if buf.len() >= CHUNK {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
            let n = full.len() as u64;
            if tx.send((pos, full)).await.is_err() {
                break;
            }
            pos += n;
        }
    }
    if failure.is_none() && !buf.is_empty() {
        let _ = tx.send((pos, buf)).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    written?;
    if let Some(f) = failure {
        return Err(f);
    }
    if received != length {
        return Err(bad_request(format!(
            "the body ended after {received} of {length} bytes"
        )));
    }
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum PatchOp {
    Zero {
        offset: u64,
        size: u64,
        #[serde(default)]
        flush: bool,
    },
    Flush,
}

async fn patch(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    let op: PatchOp =
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("bad request: {e}")))?;
    let t = ticket(&engine, &id, Access::Write)?;
    if let PatchOp::Zero { offset, size, .. } = op {
        t.allow_range(offset, size)?;
    }
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        match op {
            PatchOp::Zero {
                offset,
                size,
                flush,
            } => {
                t.zero(offset, size)?;
                if flush {
                    t.flush()?;
                }
                Ok(())
            }
            PatchOp::Flush => t.flush(),
        }
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(StatusCode::OK.into_response())
}

async fn options(
    State(engine): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    // "*" asks what the server supports; a ticket id, what it allows.
    if id != "*" {
        ticket(&engine, &id, Access::Read).or_else(|_| ticket(&engine, &id, Access::Write))?;
    }
    let features = json!({
        "features": ["extents", "zero", "flush"],
        "max_readers": MAX_CLIENTS,
        "max_writers": MAX_CLIENTS,
    });
    Ok(([(header::ALLOW, "OPTIONS,GET,PUT,PATCH")], Json(features)).into_response())
}

async fn extents(
    State(engine): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    match query.get("context").map(String::as_str) {
        None | Some("zero") => {}
        Some(other) => {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                format!("extents context {other:?} is not supported here (dirty extents: export the bitmap with NBD.start_server)\n"),
            ))
        }
    }
    let t = ticket(&engine, &id, Access::Read).or_else(|_| ticket(&engine, &id, Access::Write))?;
    let list = tokio::task::spawn_blocking(move || t.extents())
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(list).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 100)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 100)));
        assert_eq!(parse_range("bytes=5-4", 1000), None);
        assert_eq!(parse_range("bytes=-5", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, 10)));
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10, 10)));
        assert_eq!(parse_content_range("bytes 19-10/*"), None);
    }
}
