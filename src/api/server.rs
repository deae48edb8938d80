//! Transports: JSON-RPC over HTTP (`POST /jsonrpc`) and WebSocket
//! (`GET /jsonrpc`, which also carries event notifications), served on a
//! Unix socket and, when configured, on TCP with mutual TLS through the
//! unprivileged network front (`api::front`).
//!
//! Every connection is bounded: a listener takes at most `max_connections`
//! (each listener its own count, so a flood on TCP never starves the local
//! socket), a TLS handshake and a request's headers must arrive in time,
//! a JSON-RPC body too, and a connection that moves no byte for
//! `idle_timeout` is closed. Browsers cannot drive cairnd: a request with
//! an `Origin` not explicitly allowed is refused, and JSON-RPC over HTTP
//! must say `Content-Type: application/json` (which a form cannot).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{broadcast, Semaphore};
use tokio::time::{Instant, Sleep};

use super::rpc::handle_text;
use super::verbs::task_status_value;
use crate::engine::Engine;

/// Largest request accepted (a batch of many calls fits easily).
const MAX_BODY: usize = 16 << 20;
/// How long a JSON-RPC request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// WebSocket keep-alive: a ping this often, and a peer silent for three
/// of them is gone.
const WS_PING: Duration = Duration::from_secs(30);

/// Bounds on a listener's connections.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// For a TLS handshake, and for a request's headers.
    pub header_timeout: Duration,
    /// A connection that moves no byte this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    events: broadcast::Sender<String>,
}

/// Builds the router and hooks task state changes to event notifications.
/// Requests from a browser are refused unless their `Origin` is one of
/// `allowed_origins` (e.g. "https://dashboard.example:8443").
pub fn router(engine: Arc<Engine>, allowed_origins: Vec<String>) -> Router {
    let allowed = Arc::new(allowed_origins);
    let (events, _) = broadcast::channel(1024);
    let tx = events.clone();
    engine.tasks.set_listener(move |st| {
        // VDSM-style event: the method names the event, params carry it.
        let note = json!({
            "jsonrpc": "2.0",
            "method": format!("|storage|task_status|{}", st.id),
            "params": {"notify_time": crate::now_secs() * 1000, "status": task_status_value(st)},
        });
        let _ = tx.send(note.to_string());
    });
    let tx = events.clone();
    engine.thin.set_listener(move |name, body| {
        let vol = body["volUUID"].as_str().unwrap_or_default().to_string();
        let note = json!({
            "jsonrpc": "2.0",
            "method": format!("|storage|{name}|{vol}"),
            "params": {"notify_time": crate::now_secs() * 1000, "event": body},
        });
        let _ = tx.send(note.to_string());
    });
    Router::new()
        .route("/jsonrpc", post(http_rpc).get(ws_rpc))
        .with_state(AppState {
            engine: engine.clone(),
            events,
        })
        .merge(super::transfer::routes().with_state(engine))
        .layer(axum::middleware::from_fn(move |req, next| {
            allowed_origins_only(allowed.clone(), req, next)
        }))
}

/// Refuses what browsers send: they add `Origin` to every POST and
/// WebSocket upgrade, cairnd's clients (the CLI, VDSM's engine, scripts)
/// send none. Matching `Origin` against `Host` would not do: a page that
/// rebinds its own name to 127.0.0.1 is "same origin" to the browser.
async fn allowed_origins_only(allowed: Arc<Vec<String>>, req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        if !origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a == o))
        {
            tracing::warn!(origin = ?origin, "refused a request from a browser page");
            return (
                StatusCode::FORBIDDEN,
                "requests from browser pages are refused (allowed_origins)\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn http_rpc(State(st): State<AppState>, req: Request) -> Response {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "JSON-RPC requests need Content-Type: application/json\n",
        )
            .into_response();
    }
    let body = match tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(req.into_body(), MAX_BODY),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request too large or broken\n",
            )
                .into_response()
        }
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "request body too slow\n").into_response(),
    };
    rpc_reply(&st, body).await
}

async fn rpc_reply(st: &AppState, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match handle_text(&st.engine, &text).await {
        Some(reply) => ([(header::CONTENT_TYPE, "application/json")], reply).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn ws_rpc(State(st): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_BODY)
        .on_upgrade(move |socket| ws_session(socket, st))
}

async fn ws_session(mut socket: WebSocket, st: AppState) {
    let mut events = st.events.subscribe();
    let mut ping = tokio::time::interval(WS_PING);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            msg = socket.recv() => {
                heard = Instant::now();
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                };
                if let Some(reply) = handle_text(&st.engine, &text).await {
                    if socket.send(Message::Text(reply.into())).await.is_err() {
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > WS_PING * 3 {
                    tracing::info!("closing a websocket whose peer stopped answering");
                    return;
                }
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
            ev = events.recv() => match ev {
                Ok(note) => {
                    if socket.send(Message::Text(note.into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "websocket client is too slow; events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Raises the open-file limit to its hard maximum: the listeners' bounds
/// must fit below it with room for storage files and child processes.
pub fn raise_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Serves `router` on a Unix socket (mode 0660) until `shutdown` resolves.
pub async fn serve_unix(
    router: Router,
    path: &Path,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    tracing::info!(socket = %path.display(), max_connections = limits.max_connections, "serving JSON-RPC on Unix socket");
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => { accept_failed(&e).await; continue; }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse_full("unix");
            continue;
        };
        let (router, limits) = (router.clone(), limits.clone());
        tokio::spawn(async move {
            serve_connection(stream, router, &limits).await;
            drop(slot);
        });
    }
}

/// A failed accept (out of file descriptors, most likely): wait a moment
/// rather than spin.
pub(crate) async fn accept_failed(e: &io::Error) {
    tracing::warn!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A listener at its bound closes new connections at once; says so at most
/// once a second.
pub(crate) fn refuse_full(listener: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::now_secs();
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(
            listener,
            "connection limit reached; refusing new connections"
        );
    }
}

pub(crate) async fn serve_connection<S>(io: S, router: Router, limits: &Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let io = TokioIo::new(IdleTimeout::new(io, limits.idle_timeout));
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 << 10);
    if let Err(e) = http.serve_connection(io, service).with_upgrades().await {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// Closes a connection that moved no byte, either way, for a while.
pub(crate) struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
