//! NBD export through qemu-nbd, read and written by qemu-img and qemu-io as
//! NBD clients.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

fn socket_of(url: &str) -> &str {
    url.strip_prefix("nbd:unix:").expect("a unix socket URL")
}

#[test]
fn exports_a_chain_or_a_volume_read_only_and_writable() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let dir = |img: &str| d.domain_dir(&sd).join("images").join(img);
    let (img, base, top) = d.raw_base_and_snapshot(&sp, &sd, 8388608);
    qemu_io(&dir(&img).join(&base), "raw", "write -P 0x11 0 1M");
    qemu_io(&dir(&img).join(&top), "qcow2", "write -P 0x22 4M 1M");
    let top_path = dir(&img).join(&top);
    let config = |vol: &str, extra: Value| {
        let mut c = json!({"sd_id": sd, "img_id": img, "vol_id": vol});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let start = |id: &str, cfg: Value| -> String {
        d.call("NBD.start_server", json!({"server_id": id, "config": cfg}))
            .as_str()
            .unwrap()
            .to_string()
    };

    // The whole chain, read-only: the same disk as the top's chain.
    let id = uuid();
    let url = start(&id, config(&top, json!({"readonly": true})));
    same_contents(std::path::Path::new(&url), "raw", &top_path, "qcow2");
    qemu_img_json(&["info", "--output=json", &url]);
    let (code, _) = d.call_err(
        "NBD.start_server",
        json!({"server_id": id, "config": config(&top, json!({"readonly": true}))}),
    );
    assert_eq!(code, 1000, "a running server id is refused");
    d.call("NBD.stop_server", json!({"server_id": id}));
    assert!(!std::path::Path::new(socket_of(&url)).exists());
    d.call("NBD.stop_server", json!({"server_id": id}));

    // Only the top: what the base holds reads as zeros.
    let id = uuid();
    let url = start(
        &id,
        config(&top, json!({"readonly": true, "backing_chain": false})),
    );
    let out = Command::new("qemu-io")
        .args([
            "-r",
            "-f",
            "raw",
            "-c",
            "read -P 0 0 1M",
            "-c",
            "read -P 0x22 4M 1M",
        ])
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    d.call("NBD.stop_server", json!({"server_id": id}));

    // Writable: a client's writes land in the volume.
    let id = uuid();
    let url = start(
        &id,
        config(&top, json!({"discard": true, "detect_zeroes": true})),
    );
    qemu_io(std::path::Path::new(&url), "raw", "write -P 0x33 6M 64k");
    d.call("NBD.stop_server", json!({"server_id": id}));
    qemu_io(&top_path, "qcow2", "read -P 0x33 6M 64k");

    // Refusals: writing an internal volume or a template, a bitmap
    // exported writable, a RAW bitmap, unknown volumes, bad configs.
    let refuse = |cfg: Value, code: i64| {
        let (got, msg) = d.call_err(
            "NBD.start_server",
            json!({"server_id": uuid(), "config": cfg}),
        );
        assert_eq!(got, code, "{msg}");
    };
    refuse(config(&base, json!({})), 203);
    refuse(config(&top, json!({"bitmap": "b1"})), 1000);
    refuse(
        config(
            &top,
            json!({"bitmap": "b1", "readonly": true, "backing_chain": false}),
        ),
        1000,
    );
    refuse(config(&uuid(), json!({"readonly": true})), 201);
    refuse(config(&top, json!({"readonly": "yes"})), -32602);
    refuse(json!({"sd_id": sd, "img_id": img}), -32602);
    let (timg, tvol) = d.new_image(&sp, &sd, json!({"size": "1048576"}));
    d.make_template(&sd, &timg, &tvol);
    let (got, _) = d.call_err(
        "NBD.start_server",
        json!({"server_id": uuid(), "config": {"sd_id": sd, "img_id": timg, "vol_id": tvol}}),
    );
    assert_eq!(got, 1000);

    // An export dies with cairnd, even killed.
    let url = start(&uuid(), config(&top, json!({"readonly": true})));
    let socket = socket_of(&url).to_string();
    d.stop(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        assert!(Instant::now() < deadline, "qemu-nbd outlived cairnd");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exports_a_dirty_bitmap_for_incremental_backup() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, vol) = d.new_image(&sp, &sd, json!({"size": "8388608"}));
    let path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
    qemu_io(&path, "qcow2", "write -P 0x01 0 1M");
    let bitmap = uuid();
    d.job_ok(
        "SDM.add_bitmap",
        json!({"vol_info": {"sd_id": sd, "img_id": img, "vol_id": vol}, "bitmap": bitmap}),
    );
    // Written after the bitmap was added: dirty.
    qemu_io(&path, "qcow2", "write -P 0x02 2M 64k");
    let url = d.call(
        "NBD.start_server",
        json!({"server_id": uuid(), "config": {"sd_id": sd, "img_id": img, "vol_id": vol, "readonly": true, "bitmap": bitmap}}),
    );
    let socket = socket_of(url.as_str().unwrap()).to_string();
    // qemu-img reports a dirty-bitmap context through the "data" flag,
    // inverted: dirty ranges read as data: false.
    let opts = format!(
        "driver=nbd,server.type=unix,server.path={socket},x-dirty-bitmap=qemu:dirty-bitmap:{bitmap}"
    );
    let map = qemu_img_json(&["map", "--output=json", "--image-opts", &opts]);
    let dirty: Vec<(u64, u64)> = map
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == false)
        .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect();
    assert_eq!(dirty, [(2 << 20, 64 << 10)], "{map}");
}

#[test]
fn a_server_stopped_right_after_it_started_never_hangs() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, vol) = d.new_image(&sp, &sd, json!({"size": "1048576"}));
    let cfg = json!({"sd_id": sd, "img_id": img, "vol_id": vol, "readonly": true});
    let started = Instant::now();
    for _ in 0..10 {
        let id = uuid();
        d.call("NBD.start_server", json!({"server_id": id, "config": cfg}));
        d.call("NBD.stop_server", json!({"server_id": id}));
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "start/stop took {:?}",
        started.elapsed()
    );
    let leftovers: Vec<_> = d
        .children()
        .into_iter()
        .filter(|(_, cmd)| cmd.starts_with("qemu-nbd"))
        .collect();
    assert!(leftovers.is_empty(), "qemu-nbd left running: {leftovers:?}");
}
