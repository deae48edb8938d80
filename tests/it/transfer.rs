//! Image transfer: tickets over JSON-RPC, bytes over HTTP, the CLI's
//! upload and download, and uploads treated as untrusted.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use cairn::client::{Client, Target};
use serde_json::{json, Value};

use crate::common::*;

/// A raw HTTP request to cairnd's socket; returns the status code.
fn http(socket: &Path, method: &str, path: &str, headers: &[&str], body: &[u8]) -> u16 {
    exchange(socket, method, path, headers, body).0
}

/// A raw HTTP request to cairnd's socket; returns the status and the body.
fn exchange(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A refusal may come, and the connection close, before the body is read.
    let _ = s.write_all(body);
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A sparse local file: data at 0 and at 32 MiB, holes elsewhere.
fn sparse_file(path: &Path, size: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&vec![0xabu8; 1 << 20], 0).unwrap();
    f.write_all_at(&vec![0xcdu8; 1 << 20], 32 << 20).unwrap();
}

fn add_ticket(d: &Daemon, id: &str, size: u64, path: &Path, ops: &[&str]) {
    d.call(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": id, "size": size, "url": format!("file://{}", path.display()),
                          "timeout": 300, "ops": ops, "filename": "disk.raw"}}),
    );
}

#[test]
fn sparse_upload_and_download_through_tickets() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let size = 64u64 << 20;
    let (img, vol) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "RAW", "size": size.to_string()}),
    );
    let vol_path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
    // Old data where the upload has a hole: it must read as zeros after.
    qemu_io(&vol_path, "raw", "write -P 0x77 8M 1M");
    let local = d.data().join("local.raw");
    sparse_file(&local, size);

    let client = Client::new(Target::Unix(d.socket.clone()));
    let ticket = uuid();
    add_ticket(&d, &ticket, size, &vol_path, &["read", "write"]);
    let f = File::open(&local).unwrap();
    let mut last = 0;
    let stats = cairn::transfer::upload(&client, &ticket, &f, |done, _| last = done).unwrap();
    assert_eq!(
        (stats.data, stats.zeros, last),
        (2 << 20, size - (2 << 20), size)
    );
    same_contents(&vol_path, "raw", &local, "raw");
    let used = std::fs::metadata(&vol_path).unwrap().blocks() * 512;
    assert!(used <= 4 << 20, "the volume stays sparse: {used} bytes");

    let info = d.call("Host.get_image_ticket", json!({"uuid": ticket}));
    assert_eq!(info["transferred"], 2 << 20, "{info}");
    assert_eq!(info["active"], false);
    assert_eq!(info["ops"], json!(["read", "write"]));
    assert_eq!(info["filename"], "disk.raw");
    assert!(info["timeout"].as_i64().unwrap() > 290, "{info}");

    let back = d.data().join("back.raw");
    let out = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&back)
        .unwrap();
    let stats = cairn::transfer::download(&client, &ticket, &out, |_, _| {}).unwrap();
    assert_eq!(stats.data, 2 << 20);
    same_contents(&back, "raw", &local, "raw");
    assert!(std::fs::metadata(&back).unwrap().blocks() * 512 <= 4 << 20);

    // Bad requests: nothing is written.
    let sock = &d.socket;
    let path = format!("/images/{ticket}");
    let range = |a: u64, b: u64| format!("Content-Range: bytes {a}-{b}/*");
    assert_eq!(
        http(sock, "PUT", &path, &[&range(size - 1, size)], b"xy"),
        416
    );
    assert_eq!(
        http(
            sock,
            "GET",
            &path,
            &[&format!("Range: bytes={size}-{}", size + 9)],
            b""
        ),
        416
    );
    assert_eq!(
        http(
            sock,
            "PATCH",
            &path,
            &[],
            json!({"op": "zero", "offset": size, "size": 1})
                .to_string()
                .as_bytes()
        ),
        416
    );
    assert_eq!(http(sock, "PATCH", &path, &[], b"{\"op\": \"trim\"}"), 400);
    assert_eq!(
        http(sock, "PUT", &format!("/images/{}", uuid()), &[], b"x"),
        403
    );
    assert_eq!(http(sock, "GET", "/images/not-a-ticket", &[], b""), 403);
    assert_eq!(http(sock, "OPTIONS", &path, &[], b""), 200);
    same_contents(&vol_path, "raw", &local, "raw");

    // A write ticket holds its image exclusively until it is removed.
    let (code, _) = d.call_err(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": uuid(), "size": size, "url": format!("file://{}", vol_path.display()), "timeout": 10, "ops": ["read"]}}),
    );
    assert_eq!(code, 851);
    d.call("Host.remove_image_ticket", json!({"uuid": ticket}));
    let (code, _) = d.call_err("Host.get_image_ticket", json!({"uuid": ticket}));
    assert_eq!(code, 482);

    // A read-only ticket cannot write; an expired one cannot do anything.
    let ro = uuid();
    add_ticket(&d, &ro, size, &vol_path, &["read"]);
    assert_eq!(http(sock, "PUT", &format!("/images/{ro}"), &[], b"x"), 403);
    d.call(
        "Host.extend_image_ticket",
        json!({"uuid": ro, "timeout": 0}),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        http(
            sock,
            "GET",
            &format!("/images/{ro}"),
            &["Range: bytes=0-9"],
            b""
        ),
        403
    );
    let info = d.call("Host.get_image_ticket", json!({"uuid": ro}));
    assert!(info["timeout"].as_i64().unwrap() <= 0, "{info}");

    // Tickets only for volumes of connected domains.
    let refuse = |url: String| {
        let (code, msg) = d.call_err(
            "Host.add_image_ticket",
            json!({"ticket": {"uuid": uuid(), "size": 1, "url": url, "timeout": 10, "ops": ["read"]}}),
        );
        assert_eq!(code, 1000, "{msg}");
    };
    refuse("file:///etc/passwd".into());
    refuse(format!(
        "file://{}/dom_md/metadata",
        d.domain_dir(&sd).display()
    ));
    refuse(format!("file://{}/../{}/{}", vol_path.display(), img, vol));
    refuse("nbd:unix:/tmp/x.sock".into());
    let (code, _) = d.call_err(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": uuid(), "size": 1, "url": format!("file://{}", vol_path.display()), "timeout": 10, "ops": ["delete"]}}),
    );
    assert_eq!(code, -32602);
    let (code, _) = d.call_err("Host.get_image_ticket", json!({"uuid": uuid()}));
    assert_eq!(code, 482);
    d.call("Host.remove_image_ticket", json!({"uuid": uuid()}));
    d.call("Host.remove_image_ticket", json!({"uuid": ro}));
}

#[test]
fn qcow2_uploads_are_checked_as_untrusted() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let size = 16u64 << 20;
    let client = Client::new(Target::Unix(d.socket.clone()));
    let upload = |local: &Path| -> (String, String, Result<Value, (i64, String)>) {
        let (img, vol) = d.new_image(&sp, &sd, json!({"size": size.to_string()}));
        let vol_path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
        let f = File::open(local).unwrap();
        let ticket = uuid();
        add_ticket(
            &d,
            &ticket,
            f.metadata().unwrap().len(),
            &vol_path,
            &["write"],
        );
        cairn::transfer::upload(&client, &ticket, &f, |_, _| {}).unwrap();
        let removed = match d
            .client
            .call("Host.remove_image_ticket", json!({"uuid": ticket}))
        {
            Ok(v) => Ok(v),
            Err(cairn::client::ClientError::Rpc { code, message }) => Err((code, message)),
            Err(e) => panic!("{e}"),
        };
        (img, vol, removed)
    };
    let qemu_img = |args: &[&str]| {
        let st = Command::new("qemu-img").args(args).status().unwrap();
        assert!(st.success(), "qemu-img {args:?}");
    };

    // A good qcow2 image: accepted, and the volume reads as the upload.
    let good = d.data().join("good.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        good.to_str().unwrap(),
        &size.to_string(),
    ]);
    qemu_io(&good, "qcow2", "write -P 0x5c 3M 1M");
    let (img, vol, removed) = upload(&good);
    removed.unwrap();
    let vol_path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
    same_contents(&vol_path, "qcow2", &good, "qcow2");
    assert_eq!(d.volume_info(&sp, &sd, &img, &vol)["status"], "OK");

    // One naming a backing file outside its chain: reported, and the
    // volume is INVALID and cannot be prepared.
    let evil = d.data().join("evil.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        evil.to_str().unwrap(),
        &size.to_string(),
    ]);
    let (img, vol, removed) = upload(&evil);
    let (code, msg) = removed.unwrap_err();
    assert_eq!(code, 482);
    assert!(msg.contains("unsafe") && msg.contains("backing"), "{msg}");
    assert_eq!(d.volume_info(&sp, &sd, &img, &vol)["status"], "INVALID");
    let (code, _) = d.call_err(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol}),
    );
    assert_ne!(code, 0);

    // A qcow2 header over garbage: qemu-img check rejects it.
    let broken = d.data().join("broken.qcow2");
    std::fs::copy(&good, &broken).unwrap();
    let f = File::options().write(true).open(&broken).unwrap();
    // The L1 table's first entry now points far past the end of the file.
    let l1_offset = {
        let mut h = [0u8; 48];
        File::open(&broken)
            .unwrap()
            .read_exact_at(&mut h, 0)
            .unwrap();
        u64::from_be_bytes(h[40..48].try_into().unwrap())
    };
    f.write_all_at(&(0x8000_0000_0100_0000u64).to_be_bytes(), l1_offset)
        .unwrap();
    drop(f);
    let (_, _, removed) = upload(&broken);
    let (code, msg) = removed.unwrap_err();
    assert_eq!(code, 482, "{msg}");
}

fn legality(d: &Daemon, sp: &str, sd: &str, img: &str, vol: &str) -> String {
    d.volume_info(sp, sd, img, vol)["legality"]
        .as_str()
        .unwrap()
        .to_string()
}

fn prepare_code(d: &Daemon, sp: &str, sd: &str, img: &str, vol: &str) -> i64 {
    d.call_err(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol}),
    )
    .0
}

#[test]
fn raw_areas_are_never_holes() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let size = 8u64 << 20;
    let (img, vol) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "RAW", "size": size.to_string()}),
    );
    let vol_path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
    qemu_io(&vol_path, "raw", "write -P 0x11 1M 1M");
    let ticket = uuid();
    add_ticket(&d, &ticket, size, &vol_path, &["read"]);
    let (status, body) = exchange(
        &d.socket,
        "GET",
        &format!("/images/{ticket}/extents"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let extents: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert!(extents.len() >= 3, "{body}");
    assert!(extents.iter().any(|e| e["zero"] == true), "{body}");
    assert!(
        extents.iter().all(|e| e["hole"] == false),
        "an unallocated raw area reads as zeros, it is no hole: {body}"
    );
}

#[test]
fn an_interrupted_upload_never_looks_whole() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let size = 4u64 << 20;
    let mut volumes = Vec::new();
    for format in ["RAW", "COW"] {
        let (img, vol) = d.new_image(
            &sp,
            &sd,
            json!({"volFormat": format, "size": size.to_string()}),
        );
        let vol_path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
        let ticket = uuid();
        add_ticket(&d, &ticket, size, &vol_path, &["write"]);
        assert_eq!(
            legality(&d, &sp, &sd, &img, &vol),
            "ILLEGAL",
            "written through a ticket"
        );
        let put = http(
            &d.socket,
            "PUT",
            &format!("/images/{ticket}"),
            &["Content-Range: bytes 0-1048575/*"],
            &vec![0x42u8; 1 << 20],
        );
        assert_eq!(put, 200);
        volumes.push((img, vol));
    }
    let d = Daemon::start_in(d.stop(true), Default::default());
    for (img, vol) in &volumes {
        assert_eq!(legality(&d, &sp, &sd, img, vol), "ILLEGAL");
        // Illegal (227), or a broken chain (262) where the header was hit.
        let code = prepare_code(&d, &sp, &sd, img, vol);
        assert!(code == 227 || code == 262, "prepare: {code}");
    }
}

#[test]
fn the_upload_check_cannot_be_skipped() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let size = 16u64 << 20;
    // A structurally corrupt qcow2: its L1 table points into the header.
    let bad = d.data().join("bad.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&bad)
        .arg(size.to_string())
        .status()
        .unwrap();
    assert!(st.success());
    qemu_io(&bad, "qcow2", "write -P 0x5c 0 64k");
    let l1 = {
        let mut h = [0u8; 48];
        File::open(&bad).unwrap().read_exact_at(&mut h, 0).unwrap();
        u64::from_be_bytes(h[40..48].try_into().unwrap())
    };
    File::options()
        .write(true)
        .open(&bad)
        .unwrap()
        .write_all_at(&(0x8000_0000_0000_0000u64).to_be_bytes(), l1)
        .unwrap();
    let bytes = std::fs::read(&bad).unwrap();
    let client = Client::new(Target::Unix(d.socket.clone()));
    let new_upload = |ticket: &str| {
        let (img, vol) = d.new_image(&sp, &sd, json!({"size": size.to_string()}));
        let vol_path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
        add_ticket(&d, ticket, bytes.len() as u64, &vol_path, &["write"]);
        cairn::transfer::upload(&client, ticket, &File::open(&bad).unwrap(), |_, _| {}).unwrap();
        (img, vol, vol_path)
    };

    // Removing the ticket: 482, and the volume stays ILLEGAL.
    let ticket = uuid();
    let (img, vol, _) = new_upload(&ticket);
    let (code, _) = d.call_err("Host.remove_image_ticket", json!({"uuid": ticket}));
    assert_eq!(code, 482);
    assert_eq!(legality(&d, &sp, &sd, &img, &vol), "ILLEGAL");
    assert_eq!(prepare_code(&d, &sp, &sd, &img, &vol), 227);
    let (code, _) = d.call_err(
        "NBD.start_server",
        json!({"server_id": uuid(), "config": {"sd_id": sd, "img_id": img, "vol_id": vol, "readonly": true}}),
    );
    assert_ne!(code, 0, "an unchecked upload was exported");

    // Re-adding the same ticket id read-only still checks the upload.
    let ticket = uuid();
    let (img, vol, vol_path) = new_upload(&ticket);
    add_ticket(&d, &ticket, bytes.len() as u64, &vol_path, &["read"]);
    assert!(
        d.log().contains("the replaced ticket's upload was refused"),
        "{}",
        d.log()
    );
    assert_eq!(legality(&d, &sp, &sd, &img, &vol), "ILLEGAL");
    d.call("Host.remove_image_ticket", json!({"uuid": ticket}));
    assert_eq!(legality(&d, &sp, &sd, &img, &vol), "ILLEGAL");

    // A write ticket that simply expires leaves the volume ILLEGAL.
    let (img, vol) = d.new_image(&sp, &sd, json!({"size": size.to_string()}));
    let vol_path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
    let ticket = uuid();
    d.call(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": ticket, "size": bytes.len(), "url": format!("file://{}", vol_path.display()),
                          "timeout": 1, "ops": ["write"]}}),
    );
    cairn::transfer::upload(&client, &ticket, &File::open(&bad).unwrap(), |_, _| {}).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        http(&d.socket, "PUT", &format!("/images/{ticket}"), &[], b"x"),
        403
    );
    assert_eq!(legality(&d, &sp, &sd, &img, &vol), "ILLEGAL");
    // Removed late (or swept once abandoned), it is checked all the same.
    let (code, _) = d.call_err("Host.remove_image_ticket", json!({"uuid": ticket}));
    assert_eq!(code, 482);
    assert_eq!(prepare_code(&d, &sp, &sd, &img, &vol), 227);

    // A ticket larger than its volume: refused, so a PUT cannot grow it.
    let (img, vol) = d.new_image(&sp, &sd, json!({"volFormat": "RAW", "size": "1048576"}));
    let vol_path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
    let (code, msg) = d.call_err(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": uuid(), "size": 1u64 << 40, "url": format!("file://{}", vol_path.display()),
                          "timeout": 300, "ops": ["write"]}}),
    );
    assert_eq!(code, 1000, "{msg}");
    assert_eq!(std::fs::metadata(&vol_path).unwrap().len(), 1 << 20);
    assert_eq!(legality(&d, &sp, &sd, &img, &vol), "LEGAL");
}
