//! The Cinder face: OpenStack's Block Storage API v3 over the pool's
//! catalog (`engine::catalog`), so python-cinderclient, openstacksdk and
//! openstackclient manage Cairn volumes unchanged.
//!
//! One handler serves every `/v3` path: it negotiates the microversion,
//! authenticates the caller, drops the optional project segment, and
//! hands the rest to the resource modules, which run on a blocking
//! thread (the engine blocks on storage). Errors take Cinder's shape
//! (`{"badRequest": {"code": 400, "message": ...}}`), mapped once in
//! `Fault::from`.

mod attachments;
mod auth;
mod backups;
mod keystone;
mod lists;
mod misc;
mod qos;
mod snapshots;
mod transfers;
mod types;
mod version;
mod views;
mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

pub use auth::{CinderAuth, Principal};
pub use keystone::Keystone;
pub use version::{MAX_VERSION, MIN_VERSION};

use crate::engine::Engine;
use crate::error::Error;
use version::Version;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// How the Cinder face is set up.
#[derive(Debug, Clone)]
pub struct CinderSettings {
    pub auth: CinderAuth,
    /// The URL clients reach this listener at, for links and version
    /// documents; by default taken from the request's Host.
    pub public_url: Option<String>,
}

#[derive(Clone)]
struct App {
    engine: Arc<Engine>,
    settings: Arc<CinderSettings>,
}

/// Who asks, at which version, through which URL.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub project: String,
    pub user: String,
    pub admin: bool,
    pub version: Version,
    /// `http://host:port`, for links.
    pub base: String,
    /// The project segment the request URL carried, echoed in links.
    pub url_project: Option<String>,
    pub query: BTreeMap<String, String>,
}

impl Ctx {
    /// `<base>/v3[/<project>]/<rest>`.
    pub fn link(&self, rest: &str) -> String {
        match &self.url_project {
            Some(p) => format!("{}/v3/{p}/{rest}", self.base),
            None => format!("{}/v3/{rest}", self.base),
        }
    }

    pub fn at_least(&self, minor: u32) -> bool {
        self.version.at_least(minor)
    }
}

/// A successful answer.
pub struct Reply {
    status: StatusCode,
    body: Option<Value>,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Some(body),
        }
    }

    pub fn accepted(body: Value) -> Reply {
        Reply {
            status: StatusCode::ACCEPTED,
            body: Some(body),
        }
    }

    pub fn created(body: Value) -> Reply {
        Reply {
            status: StatusCode::CREATED,
            body: Some(body),
        }
    }

    pub fn status(status: StatusCode) -> Reply {
        Reply { status, body: None }
    }
}

/// A failed one, in Cinder's shape.
#[derive(Debug)]
pub struct Fault {
    pub status: StatusCode,
    pub message: String,
}

impl Fault {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Fault {
        Fault {
            status,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::NOT_FOUND, message)
    }

    fn name(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            406 => "notAcceptable",
            409 => "conflictingRequest",
            413 => "overLimit",
            415 => "badMediaType",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
    }
}

impl From<Error> for Fault {
    fn from(e: Error) -> Fault {
        let status = match &e {
            Error::CatalogNotFound { .. } => StatusCode::NOT_FOUND,
            Error::CatalogInvalid { .. } | Error::InvalidParameter { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::CatalogConflict(_) => StatusCode::CONFLICT,
            Error::CatalogOverQuota(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::CatalogUnavailable(_) | Error::NotSpm(_) | Error::PoolNotConnected(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ if e.is_no_space() => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, code = e.code(), "Cinder request failed");
        }
        Fault::new(status, e.to_string())
    }
}

pub type Answer = Result<Reply, Fault>;

/// The routes: the version documents and everything under `/v3`.
pub fn router(engine: Arc<Engine>, settings: CinderSettings) -> Router {
    let app = App {
        engine,
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/", any(serve))
        .route("/v3", any(serve))
        .route("/v3/", any(serve))
        .route("/v3/{*rest}", any(serve))
        .with_state(app)
}

async fn serve(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (version, answer) = handle(&app, &method, &uri, &headers, body).await;
    let mut response = match answer {
        Ok(reply) => match reply.body {
            Some(body) => (reply.status, axum::Json(body)).into_response(),
            None => reply.status.into_response(),
        },
        Err(fault) => {
            let body =
                json!({fault.name(): {"code": fault.status.as_u16(), "message": fault.message}});
            (fault.status, axum::Json(body)).into_response()
        }
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("volume {version}")) {
        h.insert("openstack-api-version", v);
    }
    h.insert("vary", HeaderValue::from_static("OpenStack-API-Version"));
    if let Ok(v) = HeaderValue::from_str(&format!("req-{}", uuid::Uuid::new_v4())) {
        h.insert("x-openstack-request-id", v);
    }
    response
}

async fn handle(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> (Version, Answer) {
    let version = match version::negotiate(headers) {
        Ok(v) => v,
        Err(fault) => return (Version::MIN, Err(fault)),
    };
    let base = base_url(&app.settings, headers);
    let path = uri.path().trim_end_matches('/');
    if path.is_empty() || path == "/v3" {
        let status = if path.is_empty() {
            StatusCode::MULTIPLE_CHOICES
        } else {
            StatusCode::OK
        };
        return (
            version,
            Ok(Reply {
                status,
                body: Some(version::document(&base)),
            }),
        );
    }
    let Some(rest) = path.strip_prefix("/v3/") else {
        return (version, Err(Fault::not_found("no such resource")));
    };
    let mut segments: Vec<String> = rest.split('/').map(|s| percent_decode(s, false)).collect();
    let url_project = match segments.first() {
        Some(first) if !is_collection(first) => Some(segments.remove(0)),
        _ => None,
    };
    // Off the async workers: Keystone's check is a blocking request.
    let (settings, head, project) = (app.settings.clone(), headers.clone(), url_project.clone());
    let checked = tokio::task::spawn_blocking(move || {
        auth::authenticate(&settings.auth, &head, project.as_deref())
    })
    .await
    .unwrap_or_else(|e| Err(Fault::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())));
    let principal = match checked {
        Ok(p) => p,
        Err(fault) => return (version, Err(fault)),
    };
    if body.len() > MAX_BODY {
        return (
            version,
            Err(Fault::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )),
        );
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return (
                    version,
                    Err(Fault::bad(format!("Malformed request body: {e}"))),
                )
            }
        }
    };
    let ctx = Ctx {
        project: principal.project,
        user: principal.user,
        admin: principal.admin,
        version,
        base,
        url_project,
        query: parse_query(uri.query().unwrap_or("")),
    };
    let engine = app.engine.clone();
    let method = method.clone();
    let answer =
        tokio::task::spawn_blocking(move || route(&engine, &ctx, &method, &segments, body))
            .await
            .unwrap_or_else(|e| Err(Fault::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())));
    (version, answer)
}

/// The first segments of Cinder's collections: anything else in that
/// place is a project id.
fn is_collection(s: &str) -> bool {
    matches!(
        s,
        "volumes"
            | "types"
            | "limits"
            | "os-availability-zone"
            | "os-services"
            | "scheduler-stats"
            | "messages"
            | "snapshots"
            | "backups"
            | "qos-specs"
            | "os-quota-sets"
            | "os-volume-transfer"
            | "volume-transfers"
            | "attachments"
            | "default-types"
            | "capabilities"
            | "extensions"
            | "resource_filters"
            | "groups"
            | "group_types"
            | "group_snapshots"
            | "workers"
            | "manageable_volumes"
            | "manageable_snapshots"
    )
}

fn route(engine: &Arc<Engine>, ctx: &Ctx, method: &Method, segs: &[String], body: Value) -> Answer {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["volumes", ..] => volumes::route(engine, ctx, method, &s[1..], body),
        ["types", ..] => types::route(engine, ctx, method, &s[1..], body),
        ["snapshots", ..] => snapshots::route(engine, ctx, method, &s[1..], body),
        ["qos-specs", ..] => qos::route(engine, ctx, method, &s[1..], body),
        ["backups", ..] => backups::route(engine, ctx, method, &s[1..], body),
        ["attachments", ..] => attachments::route(engine, ctx, method, &s[1..], body),
        [c @ ("volume-transfers" | "os-volume-transfer"), ..] => {
            transfers::route(engine, ctx, c, method, &s[1..], body)
        }
        _ => misc::route(engine, ctx, method, &s, body),
    }
}

fn base_url(settings: &CinderSettings, headers: &HeaderMap) -> String {
    if let Some(url) = &settings.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get("host"))
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `%XX` decoded; `plus` also turns `+` into a space (query strings).
fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(if plus && bytes[i] == b'+' {
            b' '
        } else {
            bytes[i]
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
            None => (percent_decode(p, true), String::new()),
        })
        .collect()
}

/// The object under `key` of a request body, or a 400 saying it is missing.
pub fn body_object<'a>(
    body: &'a Value,
    key: &str,
) -> Result<&'a serde_json::Map<String, Value>, Fault> {
    body.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| Fault::bad(format!("Missing required element '{key}' in request body.")))
}

/// A string field that may be absent or null.
pub fn opt_string(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, Fault> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Fault::bad(format!(
            "Invalid input: {key} must be a string, not {other}"
        ))),
    }
}

/// A `{"k": "v"}` map of strings.
pub fn string_map(v: &Value, what: &str) -> Result<BTreeMap<String, String>, Fault> {
    match v {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(Fault::bad(format!(
                    "Invalid input: {what} value for {k:?} must be a string, not {other}"
                ))),
            })
            .collect(),
        other => Err(Fault::bad(format!(
            "Invalid input: {what} must be an object, not {other}"
        ))),
    }
}

/// A whole number given as a number or a digit string (Cinder accepts both).
pub fn whole_number(v: &Value, what: &str) -> Result<u64, Fault> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        Fault::bad(format!(
            "Invalid input received: {what} must be a whole number, not {v}"
        ))
    })
}

/// Only administrators may.
pub fn require_admin(ctx: &Ctx) -> Result<(), Fault> {
    if ctx.admin {
        Ok(())
    } else {
        Err(Fault::new(
            StatusCode::FORBIDDEN,
            "Policy doesn't allow this operation to be performed.",
        ))
    }
}

/// Record `id` of `table` if the caller may see it (its project's, or any
/// for an admin); else Cinder's 404 naming `kind`.
pub fn owned<T: crate::engine::catalog::Record>(
    table: &crate::engine::catalog::Table<T>,
    ctx: &Ctx,
    kind: &str,
    id: &str,
    project: impl Fn(&T) -> &str,
) -> Result<T, Fault> {
    let missing = || Fault::not_found(format!("{kind} {id} could not be found."));
    let rec = crate::types::parse_uuid(id)
        .and_then(|uuid| table.get(uuid).ok())
        .ok_or_else(missing)?;
    if project(&rec) != ctx.project && !ctx.admin {
        return Err(missing());
    }
    Ok(rec)
}

/// A resource's `self` and `bookmark` links.
pub fn links(ctx: &Ctx, collection: &str, id: impl std::fmt::Display) -> Value {
    let href = ctx.link(&format!("{collection}/{id}"));
    let bookmark = href.replacen("/v3/", "/", 1);
    json!([{"rel": "self", "href": href}, {"rel": "bookmark", "href": bookmark}])
}
