//! TCP transports, over mutual TLS: HTTP POST /jsonrpc and the WebSocket
//! with events.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

fn tcp_daemon() -> Daemon {
    Daemon::start_with(Opts {
        embedded: true,
        tcp: true,
        ..Default::default()
    })
}

#[test]
fn http_over_tcp() {
    let d = tcp_daemon();
    let pools = d
        .tls_client()
        .call("Host.getConnectedStoragePools", json!({}))
        .unwrap();
    assert_eq!(pools.as_array().unwrap().len(), 1);
}

#[test]
fn websocket_calls_and_task_events() {
    let d = tcp_daemon();
    let (sp, sd) = d.embedded();
    let addr = d.tcp.clone().unwrap();
    let config = d.tls_config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = cairn::tls::server_name(&addr).unwrap();
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("TLS");
        let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/jsonrpc"), tls)
            .await
            .expect("websocket");
        let req = json!({"jsonrpc": "2.0", "id": 7, "method": "Volume.create", "params": volume_params(&sp, &sd, &uuid(), &uuid(), json!({}))});
        ws.send(Message::Text(req.to_string().into())).await.unwrap();
        let mut task = None;
        let mut saw_finished = false;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while !(task.is_some() && saw_finished) {
            let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("timed out").unwrap().unwrap();
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == 7 {
                task = Some(v["result"].as_str().expect("task id").to_string());
            } else if let Some(method) = v["method"].as_str() {
                assert!(method.starts_with("|storage|task_status|"), "{method}");
                let st = &v["params"]["status"];
                if st["taskState"] == "finished" {
                    assert_eq!(st["taskResult"], "success");
                    assert_eq!(method, format!("|storage|task_status|{}", st["taskID"].as_str().unwrap()));
                    saw_finished = true;
                }
            }
        }
        // Errors travel back on the same socket.
        ws.send(Message::Text(r#"{"jsonrpc":"2.0","id":8,"method":"Task.getStatus","params":{"taskID":"nope"}}"#.into())).await.unwrap();
        loop {
            let Message::Text(text) = ws.next().await.unwrap().unwrap() else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == 8 {
                assert_eq!(v["error"]["code"], 1000);
                break;
            }
        }
    });
}
