//! Transports: JSON-RPC over HTTP (`POST /jsonrpc`) and WebSocket
//! (`GET /jsonrpc`, which also carries event notifications), served on a
//! Unix socket and, when configured, on TCP.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::json;
use tokio::sync::broadcast;

use super::rpc::handle_text;
use super::verbs::task_status_value;
use crate::engine::Engine;

/// Largest request accepted (a batch of many calls fits easily).
const MAX_BODY: usize = 16 << 20;

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    events: broadcast::Sender<String>,
}

/// Builds the router and hooks task state changes to event notifications.
pub fn router(engine: Arc<Engine>) -> Router {
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
    Router::new()
        .route("/jsonrpc", post(http_rpc).get(ws_rpc))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(AppState {
            engine: engine.clone(),
            events,
        })
        .merge(super::transfer::routes().with_state(engine))
}

async fn http_rpc(State(st): State<AppState>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match handle_text(&st.engine, &text).await {
        Some(reply) => ([(header::CONTENT_TYPE, "application/json")], reply).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn ws_rpc(State(st): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| ws_session(socket, st))
}

async fn ws_session(mut socket: WebSocket, st: AppState) {
    let mut events = st.events.subscribe();
    loop {
        tokio::select! {
            msg = socket.recv() => {
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

/// Serves `router` on a Unix socket (mode 0660) until `shutdown` resolves.
pub async fn serve_unix(
    router: Router,
    path: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    tracing::info!(socket = %path.display(), "serving JSON-RPC on Unix socket");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

pub async fn serve_tcp(
    router: Router,
    addr: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "serving JSON-RPC on TCP (POST /jsonrpc, WebSocket GET /jsonrpc)");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
