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

/// Each extension of a thin volume, and each refusal, is an event on the
/// WebSocket (`|storage|volume_extended|<vol>`, `|storage|extend_refused|<vol>`).
#[test]
fn thin_volume_extensions_and_refusals_are_events() {
    let Some(luns) = TestLuns::new(1) else { return };
    let d = Daemon::start_with(Opts {
        embedded: false,
        tcp: true,
        env: luns.env_vars(),
        ..Default::default()
    });
    let sd = d.block_domain(&luns, 0, "events");
    let sp = d.spm_of_pool(&[&sd]);
    let (img, vol) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (4u64 << 30).to_string()}),
    );
    let addr = d.tcp.clone().unwrap();
    let config = d.tls_config();
    let ask = |id: u32, size: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "Volume.requestExtend", "params": {
            "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol,
            "newSize": size.to_string()}})
        .to_string()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = cairn::tls::server_name(&addr).unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("TLS");
        let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{addr}/jsonrpc"), tls)
            .await
            .expect("websocket");
        ws.send(Message::Text(ask(1, 2 << 30).into()))
            .await
            .unwrap();
        ws.send(Message::Text(ask(2, 100 << 30).into()))
            .await
            .unwrap();
        let (mut extended, mut refused) = (None, None);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while extended.is_none() || refused.is_none() {
            let msg = tokio::time::timeout_at(deadline, ws.next())
                .await
                .expect("timed out")
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            match v["method"].as_str() {
                Some(m) if m == format!("|storage|volume_extended|{vol}") => {
                    extended = Some(v["params"]["event"].clone())
                }
                Some(m) if m == format!("|storage|extend_refused|{vol}") => {
                    refused = Some(v["params"]["event"].clone())
                }
                _ => {}
            }
        }
        let (extended, refused) = (extended.unwrap(), refused.unwrap());
        assert!(extended["to"].as_u64().unwrap() >= 2 << 30, "{extended}");
        assert_eq!(extended["from"], 1u64 << 30, "{extended}");
        assert_eq!(refused["code"], 232, "{refused}");
    });
}
