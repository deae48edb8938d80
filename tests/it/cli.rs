//! The cairn command line against a running cairnd.

use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::common::*;

pub(crate) fn cairn(d: &Daemon, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run cairn")
}

pub(crate) fn json_out(d: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = cairn(d, &all);
    assert!(
        out.status.success(),
        "cairn {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cairn {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn cli_tour() {
    let d = Daemon::start();
    let status = json_out(&d, &["status"]);
    assert_eq!(status["spm"]["spmStatus"], "SPM");

    let created = json_out(&d, &["volume", "create", "--size", "2G", "--wait"]);
    let (img, vol) = (
        created["imageID"].as_str().unwrap().to_string(),
        created["volumeID"].as_str().unwrap().to_string(),
    );
    let snap = json_out(
        &d,
        &[
            "volume",
            "create",
            "--size",
            "2G",
            "--image",
            &img,
            "--parent",
            &vol,
            "--wait",
            "--description",
            "snap 1",
        ],
    );
    let top = snap["volumeID"].as_str().unwrap().to_string();

    let chain = json_out(&d, &["image", "show", &img]);
    let ids: Vec<&str> = chain
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![vol.as_str(), top.as_str()], "base first");
    assert_eq!(chain[1]["description"], "snap 1");

    let listed = json_out(&d, &["volume", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let info = json_out(&d, &["volume", "info", &img, &top]);
    assert_eq!(info["capacity"], 2u64 << 30);
    let path = json_out(&d, &["image", "prepare", &img, &top]);
    assert!(path["path"].as_str().unwrap().ends_with(&top));

    // Human output: a table with headers.
    let out = cairn(&d, &["volume", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("IMAGE") && text.contains(&top) && text.contains("2.0 GiB"),
        "{text}"
    );

    // Errors: exit code 1 and the VDSM code on stderr.
    let out = cairn(&d, &["volume", "delete", &img, &vol, "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error 204"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cairn(&d, &["volume", "create", "--size", "12Q"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("size"));

    json_out(&d, &["volume", "delete", &img, &top, "--wait"]);
    json_out(&d, &["image", "delete", &img, "--wait"]);
    assert_eq!(json_out(&d, &["image", "list"]), serde_json::json!([]));
    assert_eq!(json_out(&d, &["task", "list"]), serde_json::json!({}));
    let raw = json_out(&d, &["call", "Host.getConnectedStoragePools"]);
    assert_eq!(raw.as_array().unwrap().len(), 1);
}

#[test]
fn cli_without_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is cairnd running?"));
}

#[test]
fn cairnd_reads_its_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("cairnd.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\ninsecure_plain_tcp = true\nlog_format = \"json\"\nembedded_default = false\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairnd"))
        .arg("--config")
        .arg(&config)
        .stderr(log)
        .spawn()
        .unwrap();
    let client =
        cairn::client::Client::new(cairn::client::Target::Tcp(format!("127.0.0.1:{port}")));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let pools = loop {
        if let Ok(v) = client.call("Host.getConnectedStoragePools", serde_json::json!({})) {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cairnd did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(pools, serde_json::json!([]), "embedded_default = false");
    assert!(data.join("cairnd.sock").exists());
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let first = logged.lines().next().unwrap();
    assert!(
        serde_json::from_str::<Value>(first).is_ok(),
        "JSON logs: {first}"
    );

    // A typo in the config is an error, not silently ignored.
    std::fs::write(&config, "datadir = \"/x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairnd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("datadir"));
}

#[test]
fn cli_extend_templates_and_clones() {
    let d = Daemon::start();
    let base = json_out(&d, &["volume", "create", "--size", "1G", "--wait"]);
    let (img, vol) = (
        base["imageID"].as_str().unwrap().to_string(),
        base["volumeID"].as_str().unwrap().to_string(),
    );
    json_out(
        &d,
        &["volume", "extend", &img, &vol, "--size", "2G", "--wait"],
    );
    assert_eq!(
        json_out(&d, &["volume", "info", &img, &vol])["capacity"],
        2u64 << 30
    );
    let made = json_out(&d, &["volume", "make-template", &img, &vol]);
    assert_eq!(made["status"], "done");
    let clone = json_out(
        &d,
        &[
            "volume",
            "create",
            "--size",
            "2G",
            "--template",
            &format!("{img}/{vol}"),
            "--wait",
        ],
    );
    let cimg = clone["imageID"].as_str().unwrap();
    let chain = json_out(&d, &["image", "show", cimg]);
    assert_eq!(
        chain.as_array().unwrap().len(),
        1,
        "the clone's image lists its own volume: {chain}"
    );
    assert_eq!(chain[0]["parent"], serde_json::json!(vol));
    // The template is in use.
    let out = cairn(&d, &["volume", "delete", &img, &vol, "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error 223"));
    let out = cairn(
        &d,
        &["volume", "create", "--size", "1G", "--template", "nonsense"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("IMAGE/VOLUME"));
}

#[test]
fn cli_upload_download_and_merge() {
    let d = Daemon::start();
    let created = json_out(
        &d,
        &[
            "volume", "create", "--size", "32M", "--format", "raw", "--wait",
        ],
    );
    let img = created["imageID"].as_str().unwrap().to_string();
    let vol = created["volumeID"].as_str().unwrap().to_string();
    let local = d.data().join("disk.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&local).unwrap();
        f.set_len(32 << 20).unwrap();
        f.write_all_at(&[0x42; 65536], 5 << 20).unwrap();
    }
    let up = json_out(
        &d,
        &["image", "upload", local.to_str().unwrap(), &img, &vol],
    );
    assert_eq!(up["data"], 65536, "{up}");
    let back = d.data().join("back.raw");
    let down = json_out(
        &d,
        &["image", "download", &img, &vol, back.to_str().unwrap()],
    );
    assert_eq!(down["data"], 65536, "{down}");
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&local).unwrap()
    );

    // A snapshot, written, then merged back into its parent.
    let snap = json_out(
        &d,
        &[
            "volume", "create", "--size", "32M", "--image", &img, "--parent", &vol, "--wait",
        ],
    );
    let top = snap["volumeID"].as_str().unwrap().to_string();
    let (_, sd) = d.embedded();
    let top_path = d.domain_dir(&sd).join("images").join(&img).join(&top);
    qemu_io(&top_path, "qcow2", "write -P 0x43 1M 64k");
    let merged = json_out(&d, &["volume", "merge", &img, &top]);
    assert_eq!(merged["into"], vol.as_str());
    let shown = json_out(&d, &["image", "show", &img]);
    assert_eq!(shown.as_array().unwrap().len(), 1, "{shown}");
    let base_path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
    qemu_io(&base_path, "raw", "read -P 0x43 1M 64k");
    qemu_io(&base_path, "raw", "read -P 0x42 5M 64k");

    // Uploading more than the volume holds is refused before any transfer.
    let big = d.data().join("big.raw");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let out = cairn(&d, &["image", "upload", big.to_str().unwrap(), &img, &vol]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds"));
}

#[test]
fn cli_pool_membership_monitoring_and_reconnect() {
    let d = Daemon::start();
    let (sp, master) = d.embedded();
    let dir = d.data().join("second");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.to_str().unwrap();
    json_out(&d, &["storage", "connect", dir]);
    let sd = uuid();
    json_out(
        &d,
        &["domain", "create", dir, "--name", "second", "--id", &sd],
    );
    json_out(&d, &["domain", "attach", &sd]);
    json_out(&d, &["domain", "activate", &sd]);
    let created = json_out(
        &d,
        &[
            "volume", "create", "--size", "1M", "--domain", &sd, "--wait",
        ],
    );
    assert!(created["volumeID"].is_string());
    json_out(&d, &["domain", "monitor", &sd]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let health = json_out(&d, &["domain", "health"]);
        if health[&sd]["actual"] == true {
            assert_eq!(health[&sd]["valid"], true, "{health}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{health}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    json_out(&d, &["domain", "unmonitor", &sd]);
    let out = cairn(&d, &["domain", "detach", &sd]);
    assert!(!out.status.success(), "an active domain is not detached");
    json_out(&d, &["domain", "deactivate", &sd]);
    json_out(&d, &["domain", "detach", &sd]);

    // Leave the pool and come back, as another host would join it.
    json_out(&d, &["pool", "spm-stop"]);
    json_out(&d, &["pool", "disconnect", "--host-id", "1"]);
    json_out(&d, &["pool", "connect", &sp, &master, "--host-id", "1"]);
    json_out(&d, &["pool", "spm-start"]);
    let st = json_out(&d, &["pool", "spm-status"]);
    assert_eq!(st["spmStatus"], "SPM", "{st}");
}

/// The README's TLS set-up, step by step with the CLI: a CA, a host and a
/// client certificate, cairnd listening with them, the CLI connecting.
#[test]
fn cli_sets_up_mutual_tls_for_a_cluster() {
    let work = tempfile::tempdir().unwrap();
    let pki = work.path().join("pki");
    let pki_dir = pki.to_str().unwrap();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .output()
            .expect("run cairn")
    };
    for args in [
        vec!["pki", "init", "--dir", pki_dir],
        vec![
            "pki",
            "issue",
            "host1",
            "--host",
            "--san",
            "127.0.0.1",
            "--dir",
            pki_dir,
        ],
        vec!["pki", "issue", "admin", "--client", "--dir", pki_dir],
    ] {
        let out = cli(&args);
        assert!(
            out.status.success(),
            "cairn {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cli(&["pki", "init", "--dir", pki_dir]);
    assert!(!out.status.success(), "a CA is never overwritten");

    let addr = free_tcp_addr();
    let path = |name: &str| pki.join(name).to_str().unwrap().to_string();
    let d = Daemon::start_with(Opts {
        args: vec![
            "--listen".into(),
            addr.clone(),
            "--tls-cert".into(),
            path("host1.pem"),
            "--tls-key".into(),
            path("host1-key.pem"),
            "--tls-ca".into(),
            path("ca.pem"),
        ],
        ..Default::default()
    });
    let (cert, key, ca) = (path("admin.pem"), path("admin-key.pem"), path("ca.pem"));
    let status = |extra: &[&str]| {
        let mut args = vec!["--json", "--connect", &addr];
        args.extend_from_slice(extra);
        args.push("status");
        cli(&args)
    };
    // Retried: cairnd binds the port a moment after its socket answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let out = status(&["--cert", &cert, "--key", &key, "--ca", &ca]);
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["spm"]["spmStatus"], "SPM", "{st}");
    // Without a client certificate the CLI says what it needs.
    let out = status(&["--data-dir", work.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mutual TLS"),
        "{out:?}"
    );
}

#[test]
fn types_and_qos_specs_from_the_cli() {
    let d = Daemon::start();
    let t = json_out(
        &d,
        &[
            "type",
            "create",
            "gold",
            "--spec",
            "volume_backend_name=file",
            "--description",
            "fast",
        ],
    );
    assert_eq!(t["extra_specs"]["volume_backend_name"], "file", "{t}");
    json_out(&d, &["type", "set", "gold", "provisioning:type=thin"]);
    let t = json_out(&d, &["type", "unset", "gold", "volume_backend_name"]);
    assert_eq!(t["extra_specs"], json!({"provisioning:type": "thin"}));
    let types = json_out(&d, &["type", "list"]);
    let names: Vec<&str> = types
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"gold") && names.contains(&"__DEFAULT__"),
        "{types}"
    );
    let q = json_out(
        &d,
        &[
            "qos",
            "create",
            "fast",
            "--consumer",
            "front-end",
            "total_iops_sec=500",
        ],
    );
    assert_eq!(q["consumer"], "front-end");
    json_out(&d, &["qos", "associate", "fast", "gold"]);
    let out = cairn(&d, &["qos", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fast") && text.contains("gold") && text.contains("total_iops_sec=500"),
        "{text}"
    );
    // Refusals carry the catalog's words and change nothing.
    let out = cairn(&d, &["type", "create", "gold"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already exists")
    );
    let out = cairn(&d, &["qos", "delete", "fast"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("associated"));
    json_out(&d, &["qos", "delete", "fast", "--force"]);
    json_out(&d, &["type", "delete", "gold"]);
    assert_eq!(json_out(&d, &["qos", "list"]), json!([]));
}
