//! Remote access as an attacker would try it: TCP is mutual TLS or nothing,
//! browsers cannot drive cairnd, and connections cannot exhaust it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::client::{Client, ClientError, Target};
use serde_json::json;

use crate::common::*;

fn tcp_daemon(args: &[&str]) -> Daemon {
    Daemon::start_with(Opts {
        tcp: true,
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    })
}

fn refused(client: &Client) -> bool {
    matches!(
        client.call("Host.getConnectedStoragePools", json!({})),
        Err(ClientError::Transport { .. })
    )
}

/// A TLS client that trusts `ca` and presents `identity` (cert, key), if
/// any: cairn's own client set-up, or one with no certificate at all.
fn tls_target(addr: &str, ca: &Path, identity: Option<(&Path, &Path)>) -> Client {
    let config = match identity {
        Some((cert, key)) => cairn::tls::client_config(&cairn::tls::TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            ca: ca.to_path_buf(),
        })
        .unwrap(),
        None => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap())
                .unwrap();
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        }
    };
    Client::new(Target::Tls {
        addr: addr.to_string(),
        config,
    })
}

#[test]
fn tcp_serves_only_clients_with_a_cluster_certificate() {
    let d = tcp_daemon(&[]);
    let (sp, sd) = d.embedded();
    let addr = d.tcp.clone().unwrap();
    let pki = d.data().join("pki");
    assert!(!refused(&d.tls_client()));

    // The attack from the review: an anonymous client wiping the pool.
    let plain = Client::new(Target::Tcp(addr.clone()));
    assert!(plain
        .call(
            "StoragePool.disconnect",
            json!({"storagepoolID": sp, "hostID": 1, "scsiKey": ""})
        )
        .is_err());
    assert!(plain
        .call(
            "StorageDomain.format",
            json!({"storagedomainID": sd, "autoDetach": true})
        )
        .is_err());
    // TLS without a client certificate, and with one from another CA.
    assert!(refused(&tls_target(&addr, &pki.join("ca.pem"), None)));
    let other = tempfile::tempdir().unwrap();
    cluster_pki(other.path());
    let stranger = (
        other.path().join("client.pem"),
        other.path().join("client-key.pem"),
    );
    assert!(refused(&tls_target(
        &addr,
        &pki.join("ca.pem"),
        Some((&stranger.0, &stranger.1))
    )));
    // A host certificate is no client certificate.
    assert!(refused(&tls_target(
        &addr,
        &pki.join("ca.pem"),
        Some((&pki.join("host.pem"), &pki.join("host-key.pem")))
    )));
    // Nothing changed: the pool is still connected, its master there.
    let pools = d.call("Host.getConnectedStoragePools", json!({}));
    assert_eq!(pools, json!([sp]));
    d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
    assert!(
        d.log().contains("TLS handshake refused"),
        "refusals are logged"
    );

    // The image data path is behind the same TLS.
    let (img, vol) = d.new_image(&sp, &sd, json!({"volFormat": "RAW", "size": "1048576"}));
    let path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
    let ticket = uuid();
    d.call(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": ticket, "size": 1048576, "url": format!("file://{}", path.display()),
                          "timeout": 300, "ops": ["read"]}}),
    );
    let out = d.data().join("copy.raw");
    let f = std::fs::File::create(&out).unwrap();
    cairn::transfer::download(&d.tls_client(), &ticket, &f, |_, _| {}).unwrap();
    assert!(cairn::transfer::download(&plain, &ticket, &f, |_, _| {}).is_err());
}

#[test]
fn cairnd_refuses_an_unauthenticated_listener() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairnd"))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--no-embedded-default")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--listen", &free_tcp_addr()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cairn pki"),
        "{out:?}"
    );
    let out = run(&["--listen", "0.0.0.0:0", "--insecure-plain-tcp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "{out:?}"
    );
    // The front never runs as root, nor as a user this host lacks.
    for user in ["root", "no-such-user"] {
        let out = run(&[
            "--listen",
            "127.0.0.1:0",
            "--insecure-plain-tcp",
            "--front-user",
            user,
        ]);
        assert_eq!(out.status.code(), Some(2), "{user}: {out:?}");
    }

    // On loopback, the opt-out works, and says so loudly.
    let d = tcp_plain();
    let plain = Client::new(Target::Tcp(d.tcp.clone().unwrap()));
    assert!(!refused(&plain));
    assert!(d.log().contains("WITHOUT TLS OR AUTHENTICATION"));
}

fn tcp_plain() -> Daemon {
    // The harness makes a pki for TCP daemons; the flag wins over it.
    tcp_daemon(&["--insecure-plain-tcp"])
}

/// A raw HTTP exchange on cairnd's Unix socket; the status code.
fn raw(socket: &Path, request: &str) -> u16 {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    // Only the head: an upgraded connection stays open.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && matches!(s.read(&mut b), Ok(1)) {
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn browsers_cannot_drive_cairnd() {
    let d = Daemon::start_bare();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"Host.getConnectedStoragePools"}"#;
    let post = |headers: &str| {
        format!(
            "POST /jsonrpc HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(
        raw(&d.socket, &post("Content-Type: application/json\r\n")),
        200
    );
    // A form or text/plain post (what a page may send without preflight).
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        assert_eq!(
            raw(&d.socket, &post(&format!("Content-Type: {ct}\r\n"))),
            415,
            "{ct}"
        );
    }
    assert_eq!(raw(&d.socket, &post("")), 415);
    // A foreign Origin, on a POST and on a WebSocket upgrade.
    assert_eq!(
        raw(
            &d.socket,
            &post("Content-Type: application/json\r\nOrigin: http://evil.example\r\n")
        ),
        403
    );
    let upgrade = "GET /jsonrpc HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://evil.example\r\n\r\n";
    assert_eq!(raw(&d.socket, upgrade), 403);
    // Even "same origin": a page can rebind its name to this host.
    let rebound = upgrade
        .replace("http://evil.example", "http://evil.example:4044")
        .replace("Host: localhost", "Host: evil.example:4044");
    assert_eq!(raw(&d.socket, &rebound), 403);
    let no_origin = upgrade.replace("Origin: http://evil.example\r\n", "");
    assert_eq!(raw(&d.socket, &no_origin), 101);

    // An origin the operator allowed (a dashboard) gets through.
    let d = Daemon::start_with(Opts {
        embedded: false,
        args: vec!["--allowed-origin".into(), "https://dash.example".into()],
        ..Default::default()
    });
    let dash = upgrade.replace("http://evil.example", "https://dash.example");
    assert_eq!(raw(&d.socket, &dash), 101);
    assert_eq!(raw(&d.socket, upgrade), 403);
}

#[test]
fn idle_and_slow_connections_cannot_exhaust_cairnd() {
    let d = tcp_daemon(&["--max-connections", "20", "--idle-timeout", "2"]);
    let addr = d.tcp.clone().unwrap();
    // Far more idle connections than the bound.
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() > 20);
    // The local socket answers at once all the same.
    let started = Instant::now();
    d.call("Host.getConnectedStoragePools", json!({}));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Idle connections (no TLS handshake, no request) are closed.
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 300, "every idle connection was closed");
    // A request that trickles its headers is cut off too.
    let tls = d.tls_client();
    let mut slow = tls.connect().unwrap();
    slow.write_all(b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // And TLS clients are served again once the flood is gone.
    assert!(!refused(&tls));
}

/// The network front of a cairnd, from /proc: (pid, its status file).
fn front_of(d: &Daemon) -> Option<(u32, String)> {
    d.children().into_iter().find_map(|(pid, cmd)| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        cmd.contains("__network-front").then_some((pid, status))
    })
}

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn network_input_is_parsed_by_an_unprivileged_front_that_comes_back() {
    let d = tcp_daemon(&[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (pid, status) = loop {
        if let Some(f) = front_of(&d) {
            break f;
        }
        assert!(Instant::now() < deadline, "no network front\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    if rustix::process::geteuid().is_root() {
        for uid in status_field(&status, "Uid:").split_whitespace() {
            assert_ne!(uid, "0", "the front runs as root:\n{status}");
        }
        assert_eq!(
            status_field(&status, "CapEff:"),
            "0000000000000000",
            "{status}"
        );
        assert_eq!(
            status_field(&status, "CapPrm:"),
            "0000000000000000",
            "{status}"
        );
        assert_eq!(status_field(&status, "Groups:"), "", "{status}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "{status}");
    assert!(!refused(&d.tls_client()));

    // A front that dies (say, an exploit crashed it) is replaced.
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if front_of(&d).is_some_and(|(p, _)| p != pid) && !refused(&d.tls_client()) {
            break;
        }
        assert!(Instant::now() < deadline, "no new front\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d
        .log()
        .contains("the network front exited; starting another"));
}
