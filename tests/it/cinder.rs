//! The Cinder face, driven by OpenStack's own clients from PyPI
//! (python-cinderclient, openstacksdk, python-openstackclient, installed
//! by scripts/deps.sh into target/openstack-clients), unchanged.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{free_tcp_addr, Daemon, LoopFs, Opts, TestLuns};

/// The virtualenv holding the OpenStack clients, if deps.sh made it.
fn clients() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/openstack-clients");
    if venv.join("bin/cinder").exists() && venv.join("bin/openstack").exists() {
        Some(venv)
    } else {
        eprintln!("SKIP: the OpenStack clients are not installed (scripts/deps.sh installs them)");
        None
    }
}

struct Cinder {
    d: Daemon,
    addr: String,
    venv: PathBuf,
    args: Vec<String>,
}

impl Cinder {
    /// cairnd with its embedded pool and the Cinder face in noauth mode.
    fn start() -> Option<Cinder> {
        Self::start_with(&["--cinder-auth", "noauth"], Vec::new())
    }

    fn start_with(extra: &[&str], env: Vec<(String, String)>) -> Option<Cinder> {
        Self::start_opts(extra, env, true)
    }

    fn start_opts(extra: &[&str], env: Vec<(String, String)>, embedded: bool) -> Option<Cinder> {
        let venv = clients()?;
        let addr = free_tcp_addr();
        let mut args = vec!["--cinder-listen".to_string(), addr.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let d = Daemon::start_with(Opts {
            args: args.clone(),
            env,
            embedded,
            ..Default::default()
        });
        let c = Cinder {
            d,
            addr,
            venv,
            args,
        };
        c.wait_listening();
        Some(c)
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "no Cinder listener\n{}",
                self.d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The same data directory, started again (failpoints armed by `env`).
    fn restart(self, crashed: bool, env: Vec<(String, String)>) -> Cinder {
        let Cinder {
            d,
            addr,
            venv,
            args,
        } = self;
        let dir = d.stop(crashed);
        let d = Daemon::start_in(
            dir,
            Opts {
                args: args.clone(),
                env,
                ..Default::default()
            },
        );
        let c = Cinder {
            d,
            addr,
            venv,
            args,
        };
        c.wait_listening();
        c
    }

    /// Restarts with `failpoint` armed to crash, does `act`, waits for the
    /// crash, then starts again (recovery runs) and waits for the catalog.
    fn crash_during(self, failpoint: &str, act: impl FnOnce(&Cinder)) -> Cinder {
        let armed = vec![("CAIRN_FAILPOINTS".to_string(), format!("{failpoint}=crash"))];
        let mut c = self.restart(false, armed);
        act(&c);
        assert_eq!(
            c.d.wait_exit(Duration::from_secs(60)),
            Some(86),
            "no crash at {failpoint}\n{}",
            c.d.log()
        );
        let c = c.restart(true, Vec::new());
        c.get("/v3/demo/volumes", &[("X-Auth-Token", "alice:demo")]);
        c
    }

    /// A GET, retried while cairnd is not yet the pool's SPM (503) after
    /// a start.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _, body) = self.http("GET", path, headers, None);
            if status != 503 || Instant::now() > deadline {
                return (status, body);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v3", self.addr)
    }

    /// Waits until `cinder <show> <id>` fails: the thing is gone.
    fn wait_gone(&self, show: &str, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.cinder(&[show, id]).0 {
            assert!(
                Instant::now() < deadline,
                "{id} is still there\n{}",
                self.d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until volume `id` is available; `error` fails the test.
    /// Polled over plain HTTP: a Python client per look is slow under
    /// the VM tier's emulated CPU.
    fn wait_available(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (_, _, shown) = self.http("GET", &format!("/v3/demo/volumes/{id}"), &[], None);
            match shown["volume"]["status"].as_str().unwrap_or_default() {
                "available" => return,
                "error" => panic!("{id} went to error: {shown}\n{}", self.d.log()),
                _ => assert!(
                    Instant::now() < deadline,
                    "{id} is not available: {shown}\n{}",
                    self.d.log()
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `cinder` CLI as a noauth user of project demo.
    fn cinder(&self, args: &[&str]) -> (bool, String) {
        self.cinder_as("demo", args)
    }

    /// The `cinder` CLI as a noauth user of `project`.
    fn cinder_as(&self, project: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(self.venv.join("bin/cinder"))
            .args([
                "--os-auth-type",
                "noauth",
                "--os-endpoint",
                &self.endpoint(),
            ])
            .args(["--os-project-id", project, "--os-user-id", "alice"])
            .args(["--os-volume-api-version", "3.71"])
            .args(args)
            .output()
            .expect("run cinder");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn cinder_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.cinder(args);
        assert!(ok, "cinder {args:?}: {text}\n{}", self.d.log());
        text
    }

    /// The `openstack` CLI (no Keystone: auth type none), as JSON.
    fn openstack(&self, args: &[&str]) -> Value {
        let out = Command::new(self.venv.join("bin/openstack"))
            .args(["--os-auth-type", "none", "--os-endpoint", &self.endpoint()])
            .args(["--os-volume-api-version", "3"])
            .args(args)
            .args(["-f", "json"])
            .output()
            .expect("run openstack");
        assert!(
            out.status.success(),
            "openstack {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// An `openstack` command that prints nothing.
    fn openstack_quiet(&self, args: &[&str]) {
        let out = Command::new(self.venv.join("bin/openstack"))
            .args(["--os-auth-type", "none", "--os-endpoint", &self.endpoint()])
            .args(args)
            .output()
            .expect("run openstack");
        assert!(
            out.status.success(),
            "openstack {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A Python script with openstacksdk; it prints one JSON document.
    fn sdk(&self, script: &str) -> Value {
        let out = Command::new(self.venv.join("bin/python"))
            .arg("-c")
            .arg(script)
            .env("ENDPOINT", self.endpoint())
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "sdk script failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.d.log()
        );
        serde_json::from_slice(&out.stdout).expect("the script prints JSON")
    }

    /// One raw HTTP request: status, headers (lowercase names), body.
    fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Vec<(String, String)>, Value) {
        http(&self.addr, method, path, headers, body)
    }
}

fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Vec<(String, String)>, Value) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (
        status,
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A field of `cinder show`'s table.
fn field(table: &str, name: &str) -> String {
    table
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() >= 3 && cells[1] == name).then(|| cells[2].to_string())
        })
        .next()
        .unwrap_or_else(|| panic!("no field {name} in:\n{table}"))
}

#[test]
fn cinderclient_drives_volumes_end_to_end() {
    let Some(c) = Cinder::start() else { return };
    let out = c.cinder_ok(&["create", "--name", "first", "--metadata", "app=db", "1"]);
    let id = field(&out, "id");
    assert!(
        ["creating", "available"].contains(&field(&out, "status").as_str()),
        "{out}"
    );
    let out = c.cinder_ok(&["show", &id]);
    assert_eq!(field(&out, "status"), "available", "{out}");
    assert_eq!(field(&out, "size"), "1");
    assert_eq!(field(&out, "volume_type"), "__DEFAULT__");
    assert!(
        field(&out, "os-vol-host-attr:host").contains("@file#"),
        "{out}"
    );
    let list = c.cinder_ok(&["list"]);
    assert!(list.contains(&id) && list.contains("first"), "{list}");

    // The volume is an image of the embedded pool's domain, the size asked.
    let (sp, sd) = c.d.embedded();
    let vols = c.d.image_volumes(&sp, &sd, &id);
    let leaf = vols[0].as_str().unwrap();
    let info = c.d.volume_info(&sp, &sd, &id, leaf);
    assert_eq!(info["capacity"], 1u64 << 30);
    assert_eq!(info["format"], "COW");

    c.cinder_ok(&["rename", &id, "renamed"]);
    c.cinder_ok(&["metadata", &id, "set", "tier=gold"]);
    c.cinder_ok(&["metadata", &id, "unset", "app"]);
    c.cinder_ok(&["extend", &id, "3"]);
    let out = c.cinder_ok(&["show", &id]);
    assert_eq!(field(&out, "name"), "renamed");
    assert_eq!(field(&out, "size"), "3", "{out}");
    assert_eq!(field(&out, "status"), "available");
    assert!(
        field(&out, "metadata").contains("tier") && !field(&out, "metadata").contains("app"),
        "{out}"
    );
    assert_eq!(c.d.volume_info(&sp, &sd, &id, leaf)["capacity"], 3u64 << 30);

    // A smaller size is refused with Cinder's message, and nothing changes.
    let (ok, text) = c.cinder(&["extend", &id, "2"]);
    assert!(
        !ok && text.contains("must be greater than current size"),
        "{text}"
    );

    // Types: one pinned to block domains, which this pool does not have.
    c.cinder_ok(&["type-create", "block-only"]);
    c.cinder_ok(&["type-key", "block-only", "set", "volume_backend_name=block"]);
    let types = c.cinder_ok(&["type-list"]);
    assert!(
        types.contains("block-only") && types.contains("__DEFAULT__"),
        "{types}"
    );
    let out = c.cinder_ok(&[
        "create",
        "--volume-type",
        "block-only",
        "--name",
        "nowhere",
        "1",
    ]);
    let nowhere = field(&out, "id");
    assert_eq!(field(&c.cinder_ok(&["show", &nowhere]), "status"), "error");
    let messages = c.cinder_ok(&["message-list"]);
    assert!(messages.contains(&nowhere), "{messages}");
    // A type in use keeps its specs; unused, it goes.
    let (ok, text) = c.cinder(&["type-key", "block-only", "unset", "volume_backend_name"]);
    assert!(!ok && text.contains("in use"), "{text}");
    c.cinder_ok(&["delete", &nowhere]);
    c.cinder_ok(&["type-delete", "block-only"]);

    c.cinder_ok(&["delete", &id]);
    c.wait_gone("show", &id);
    let (code, _) = c.d.call_err(
        "Image.getVolumes",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": id}),
    );
    assert_eq!(code, 268, "the image is gone");
}

#[test]
fn openstacksdk_and_openstackclient_drive_volumes() {
    let Some(c) = Cinder::start() else { return };
    let r = c.sdk(
        r#"
import json, os, openstack
conn = openstack.connect(auth_type="none", auth={"endpoint": os.environ["ENDPOINT"]},
                         block_storage_api_version="3", has_compute=False, has_image=False,
                         has_network=False, has_object_store=False)
bs = conn.block_storage
v = bs.create_volume(size=1, name="sdk-vol", description="from the sdk", metadata={"k": "v"})
v = bs.wait_for_status(v, status="available", failures=["error"], interval=0.2, wait=60)
bs.extend_volume(v, 2)
v = bs.wait_for_status(bs.get_volume(v.id), status="available", interval=0.2, wait=60)
snap = bs.create_snapshot(volume_id=v.id, name="sdk-snap")
snap = bs.wait_for_status(snap, status="available", failures=["error"], interval=0.2, wait=60)
snaps = [x.name for x in bs.snapshots(details=True)]
bs.delete_snapshot(snap)
bs.wait_for_delete(snap, interval=0.2, wait=60)
names = [x.name for x in bs.volumes()]
t = bs.create_type(name="gold", extra_specs={"provisioning:type": "thin"})
types = sorted(x.name for x in bs.types())
typed = bs.create_volume(size=1, name="typed", volume_type="gold")
typed = bs.wait_for_status(typed, status="available", failures=["error"], interval=0.2, wait=60)
pools = [p.name for p in bs.backend_pools()]
limits = bs.get_limits()
bs.delete_volume(typed)
bs.wait_for_delete(typed, interval=0.2, wait=60)
bs.delete_volume(v)
bs.wait_for_delete(v, interval=0.2, wait=60)
print(json.dumps({"size": v.size, "names": names, "snaps": snaps, "types": types, "typed_type": typed.volume_type,
                  "pools": pools, "used": limits.absolute.total_volumes_used,
                  "left": [x.id for x in bs.volumes()]}))
"#,
    );
    assert_eq!(r["size"], 2, "{r}");
    assert_eq!(r["names"], json!(["sdk-vol"]));
    assert_eq!(r["snaps"], json!(["sdk-snap"]));
    assert_eq!(r["types"], json!(["__DEFAULT__", "gold"]));
    assert_eq!(r["typed_type"], "gold");
    assert!(r["pools"][0].as_str().unwrap().contains("@file#"), "{r}");
    assert_eq!(r["used"], 2);
    assert_eq!(r["left"], json!([]));

    let v = c.openstack(&["volume", "create", "--size", "1", "osc-vol"]);
    let id = v["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.openstack(&["volume", "show", &id])["status"] != "available" {
        assert!(Instant::now() < deadline, "not available");
        std::thread::sleep(Duration::from_millis(200));
    }
    let list = c.openstack(&["volume", "list"]);
    assert_eq!(list[0]["Name"], "osc-vol", "{list}");
    c.openstack_quiet(&[
        "volume",
        "set",
        "--name",
        "osc-renamed",
        "--property",
        "a=b",
        &id,
    ]);
    let v = c.openstack(&["volume", "show", &id]);
    assert_eq!(v["name"], "osc-renamed");
    assert_eq!(v["properties"]["a"], "b", "{v}");
    c.openstack_quiet(&["volume", "delete", &id]);
}

#[test]
fn versions_microversions_errors_and_pages_are_cinders() {
    let Some(c) = Cinder::start() else { return };
    let (status, _, doc) = c.http("GET", "/", &[], None);
    assert_eq!(status, 300);
    assert_eq!(doc["versions"][0]["version"], "3.71");
    assert_eq!(doc["versions"][0]["min_version"], "3.0");
    let (status, _, doc) = c.http("GET", "/v3/", &[], None);
    assert_eq!(status, 200);
    assert!(doc["versions"][0]["links"][1]["href"]
        .as_str()
        .unwrap()
        .ends_with("/v3/"));

    let (status, h, _) = c.http(
        "GET",
        "/v3/demo/volumes",
        &[("OpenStack-API-Version", "volume 3.45")],
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(header(&h, "openstack-api-version"), Some("volume 3.45"));
    let (status, h, body) = c.http(
        "GET",
        "/v3/volumes",
        &[("OpenStack-API-Version", "volume 3.72")],
        None,
    );
    assert_eq!(status, 406, "{body}");
    assert_eq!(body["notAcceptable"]["code"], 406, "{body}");
    assert!(header(&h, "vary").is_some());
    let (status, _, body) = c.http(
        "GET",
        "/v3/volumes",
        &[("OpenStack-API-Version", "volume 3.x")],
        None,
    );
    assert_eq!(status, 400);
    assert!(body["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid format"));

    // Bad bodies and unknown things: Cinder's codes, nothing created.
    let (status, _, body) = c.http(
        "POST",
        "/v3/demo/volumes",
        &[],
        Some(json!({"volume": {"size": "big"}})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = c.http(
        "POST",
        "/v3/demo/volumes",
        &[("OpenStack-API-Version", "volume 3.53")],
        Some(json!({"volume": {"size": 1, "colour": "red"}})),
    );
    assert_eq!(status, 400);
    let (status, _, body) = c.http("GET", "/v3/demo/volumes/not-a-volume", &[], None);
    assert_eq!(status, 404);
    assert!(body["itemNotFound"]["message"]
        .as_str()
        .unwrap()
        .contains("could not be found"));
    let (status, _, _) = c.http(
        "POST",
        "/v3/demo/volumes",
        &[],
        Some(json!({"volume": {"size": 1, "volume_type": "nope"}})),
    );
    assert_eq!(status, 404);
    let (_, _, list) = c.http("GET", "/v3/demo/volumes", &[], None);
    assert_eq!(list["volumes"], json!([]));

    // Pages: limit, the next link's marker, sorting, count.
    for n in 0..3 {
        let (status, _, body) = c.http(
            "POST",
            "/v3/demo/volumes",
            &[],
            Some(json!({"volume": {"size": 1, "name": format!("v{n}")}})),
        );
        assert_eq!(status, 202, "{body}");
    }
    let v = [("OpenStack-API-Version", "volume 3.45")];
    let (_, _, page) = c.http(
        "GET",
        "/v3/demo/volumes/detail?limit=2&sort=name:asc&with_count=true",
        &v,
        None,
    );
    let names: Vec<&str> = page["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["v0", "v1"], "{page}");
    assert_eq!(page["count"], 3);
    let next = page["volumes_links"][0]["href"].as_str().unwrap();
    let path = &next[next.find("/v3/").unwrap()..];
    let (_, _, rest) = c.http("GET", path, &v, None);
    assert_eq!(rest["volumes"][0]["name"], "v2", "{rest}");
    let (status, _, _) = c.http("GET", "/v3/demo/volumes?sort=name&sort_key=size", &[], None);
    assert_eq!(status, 400);
    // Another project sees none of them.
    let (_, _, other) = c.http("GET", "/v3/other/volumes", &[], None);
    assert_eq!(other["volumes"], json!([]));
    // A wrong status for an action: 400 with Cinder's words.
    let id = page["volumes"][0]["id"].as_str().unwrap();
    c.http(
        "POST",
        &format!("/v3/demo/volumes/{id}/action"),
        &[],
        Some(json!({"os-reset_status": {"status": "error"}})),
    );
    let (status, _, body) = c.http(
        "POST",
        &format!("/v3/demo/volumes/{id}/action"),
        &[],
        Some(json!({"os-extend": {"new_size": 5}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("must be 'available' to extend"));
    // Not yet served: said plainly.
    let (status, _, body) = c.http("GET", "/v3/demo/groups", &[], None);
    assert_eq!(status, 501, "{body}");
}

#[test]
fn tokens_authenticate_every_request_and_noauth_stays_on_loopback() {
    let Some(venv) = clients() else { return };
    drop(venv);
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\ntoken = \"alice-token-0123456789\"\nproject = \"p1\"\nuser = \"alice\"\n\n\
         [[token]]\ntoken = \"admin-token-0123456789\"\nproject = \"admin\"\nuser = \"root\"\nadmin = true\n",
    )
    .unwrap();
    let Some(c) = Cinder::start_with(&["--cinder-tokens", tokens.to_str().unwrap()], Vec::new())
    else {
        return;
    };
    let (status, _, body) = c.http("GET", "/v3/volumes", &[], None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["unauthorized"]["code"], 401);
    let (status, _, _) = c.http(
        "POST",
        "/v3/volumes",
        &[("X-Auth-Token", "guess")],
        Some(json!({"volume": {"size": 1}})),
    );
    assert_eq!(status, 401);
    let alice = [("X-Auth-Token", "alice-token-0123456789")];
    let (status, _, body) = c.http(
        "POST",
        "/v3/volumes",
        &alice,
        Some(json!({"volume": {"size": 1, "name": "a"}})),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["volume"]["os-vol-tenant-attr:tenant_id"], "p1");
    assert!(
        body["volume"].get("os-vol-host-attr:host").is_none(),
        "admin-only field shown: {body}"
    );
    let (status, _, _) = c.http("GET", "/v3/p2/volumes", &alice, None);
    assert_eq!(status, 403);
    let (status, _, _) = c.http(
        "POST",
        "/v3/types",
        &alice,
        Some(json!({"volume_type": {"name": "x"}})),
    );
    assert_eq!(status, 403);
    // The admin sees every project's volumes with all_tenants.
    let admin = [("X-Auth-Token", "admin-token-0123456789")];
    let (_, _, all) = c.http("GET", "/v3/volumes/detail?all_tenants=1", &admin, None);
    assert_eq!(all["volumes"].as_array().unwrap().len(), 1, "{all}");
    // openstacksdk with a static token.
    let r = c.sdk(
        r#"
import json, os, openstack
conn = openstack.connect(auth_type="admin_token", auth={"endpoint": os.environ["ENDPOINT"] + "/p1", "token": "alice-token-0123456789"},
                         block_storage_api_version="3", has_compute=False, has_image=False, has_network=False)
print(json.dumps([v.name for v in conn.block_storage.volumes()]))
"#,
    );
    assert_eq!(r, json!(["a"]));

    // noauth on an address others can reach: refused at start.
    let out = Command::new(env!("CARGO_BIN_EXE_cairnd"))
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--no-embedded-default",
        ])
        .args([
            "--cinder-listen",
            "0.0.0.0:18776",
            "--cinder-auth",
            "noauth",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_crash_in_the_middle_of_a_change_leaves_nothing_in_flight() {
    let Some(mut c) = Cinder::start() else { return };
    let noauth = [("X-Auth-Token", "alice:demo")];
    let arm = |fp: &str| vec![("CAIRN_FAILPOINTS".to_string(), format!("{fp}=crash"))];
    // Create: crashes before the image, inside it, after it.
    for (fp, want) in [
        ("catalog.volume.recorded", "error"),
        ("volume.create.after_data", "error"),
        ("catalog.volume.finishing", "available"),
    ] {
        c = c.restart(false, arm(fp));
        let name = format!("at-{fp}");
        c.http(
            "POST",
            "/v3/demo/volumes",
            &noauth,
            Some(json!({"volume": {"size": 1, "name": name}})),
        );
        assert_eq!(
            c.d.wait_exit(Duration::from_secs(20)),
            Some(86),
            "no crash at {fp}\n{}",
            c.d.log()
        );
        c = c.restart(true, Vec::new());
        let (status, list) = c.get("/v3/demo/volumes/detail", &noauth);
        assert_eq!(status, 200, "{list}\n{}", c.d.log());
        let v = list["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name.as_str())
            .cloned();
        let v = v.unwrap_or_else(|| panic!("{name} is gone: {list}"));
        assert_eq!(v["status"], want, "after a crash at {fp}: {v}");
    }
    // Extend and delete of an available volume, each crashed midway.
    let (_, list) = c.get("/v3/demo/volumes/detail", &noauth);
    let ok = list["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["status"] == "available");
    let ok = ok
        .unwrap_or_else(|| panic!("no available volume: {list}"))
        .clone();
    let id = ok["id"].as_str().unwrap().to_string();
    c = c.restart(false, arm("volume.extend.after_illegal"));
    c.http(
        "POST",
        &format!("/v3/demo/volumes/{id}/action"),
        &noauth,
        Some(json!({"os-extend": {"new_size": 2}})),
    );
    assert_eq!(c.d.wait_exit(Duration::from_secs(20)), Some(86));
    c = c.restart(true, Vec::new());
    let (_, v) = c.get(&format!("/v3/demo/volumes/{id}"), &noauth);
    assert_eq!(v["volume"]["status"], "available", "{v}");
    assert_eq!(v["volume"]["size"], 1, "the extend was rolled back: {v}");
    // A snapshot crashed while taken is rolled back; one crashed while
    // deleted finishes its merge after the restart.
    c = c.restart(false, arm("volume.create.after_data"));
    c.http(
        "POST",
        "/v3/demo/snapshots",
        &noauth,
        Some(json!({"snapshot": {"volume_id": id, "name": "lost"}})),
    );
    assert_eq!(c.d.wait_exit(Duration::from_secs(20)), Some(86));
    c = c.restart(true, Vec::new());
    let (_, snaps) = c.get("/v3/demo/snapshots", &noauth);
    assert_eq!(snaps["snapshots"][0]["status"], "error", "{snaps}");
    let lost = snaps["snapshots"][0]["id"].as_str().unwrap().to_string();
    let (status, _, _) = c.http(
        "DELETE",
        &format!("/v3/demo/snapshots/{lost}"),
        &noauth,
        None,
    );
    assert_eq!(status, 202);
    let (status, _, snap) = c.http(
        "POST",
        "/v3/demo/snapshots",
        &noauth,
        Some(json!({"snapshot": {"volume_id": id, "name": "kept"}})),
    );
    assert_eq!(status, 202, "{snap}");
    assert_eq!(snap["snapshot"]["status"], "available", "{snap}");
    let kept = snap["snapshot"]["id"].as_str().unwrap().to_string();
    c = c.restart(false, arm("merge.after_commit"));
    c.http(
        "DELETE",
        &format!("/v3/demo/snapshots/{kept}"),
        &noauth,
        None,
    );
    assert_eq!(c.d.wait_exit(Duration::from_secs(20)), Some(86));
    c = c.restart(true, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, s) = c.get(&format!("/v3/demo/snapshots/{kept}"), &noauth);
        if status == 404 {
            break;
        }
        assert_eq!(s["snapshot"]["status"], "deleting", "{s}");
        assert!(
            Instant::now() < deadline,
            "the snapshot delete was not finished: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (sp, sd) = c.d.embedded();
    assert_eq!(
        chain(&c.d, &sp, &sd, &id).len(),
        1,
        "the merge was finished"
    );

    // A transfer accepted when cairnd crashed: the volume is the taker's,
    // its snapshot too, and the transfer is gone.
    let (_, _, snap) = c.http(
        "POST",
        "/v3/demo/snapshots",
        &noauth,
        Some(json!({"snapshot": {"volume_id": id}})),
    );
    let snap_id = snap["snapshot"]["id"].as_str().unwrap().to_string();
    let (_, _, t) = c.http(
        "POST",
        "/v3/demo/os-volume-transfer",
        &noauth,
        Some(json!({"transfer": {"volume_id": id}})),
    );
    let (tid, key) = (
        t["transfer"]["id"].as_str().unwrap().to_string(),
        t["transfer"]["auth_key"].as_str().unwrap().to_string(),
    );
    c = c.restart(false, arm("catalog.transfer.accepted"));
    let taker = [("X-Auth-Token", "bob:taker")];
    c.http(
        "POST",
        &format!("/v3/taker/os-volume-transfer/{tid}/accept"),
        &taker,
        Some(json!({"accept": {"auth_key": key}})),
    );
    assert_eq!(c.d.wait_exit(Duration::from_secs(20)), Some(86));
    c = c.restart(true, Vec::new());
    let (_, v) = c.get(&format!("/v3/taker/volumes/{id}"), &taker);
    assert_eq!(
        (
            v["volume"]["os-vol-tenant-attr:tenant_id"].as_str(),
            v["volume"]["status"].as_str()
        ),
        (Some("taker"), Some("available")),
        "{v}"
    );
    let (_, s) = c.get(&format!("/v3/taker/snapshots/{snap_id}"), &taker);
    assert_eq!(
        s["snapshot"]["os-extended-snapshot-attributes:project_id"], "taker",
        "{s}"
    );
    let (status, _) = c.get(&format!("/v3/demo/os-volume-transfer/{tid}"), &noauth);
    assert_eq!(status, 404);
    let (status, _, _) = c.http(
        "DELETE",
        &format!("/v3/taker/snapshots/{snap_id}"),
        &taker,
        None,
    );
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.get(&format!("/v3/taker/snapshots/{snap_id}"), &taker).0 != 404 {
        assert!(Instant::now() < deadline, "the snapshot was not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let noauth = taker;

    c = c.restart(false, arm("image.delete.after_rename"));
    c.http("DELETE", &format!("/v3/taker/volumes/{id}"), &noauth, None);
    assert_eq!(c.d.wait_exit(Duration::from_secs(20)), Some(86));
    c = c.restart(true, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = c.get(&format!("/v3/taker/volumes/{id}"), &noauth);
        if status == 404 {
            break;
        }
        assert_eq!(v["volume"]["status"], "deleting", "{v}");
        assert!(
            Instant::now() < deadline,
            "the delete was not finished: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing is left in a transitional status.
    let (_, list) = c.get("/v3/taker/volumes/detail", &noauth);
    for v in list["volumes"].as_array().unwrap() {
        assert!(
            ["available", "error"].contains(&v["status"].as_str().unwrap()),
            "{v}"
        );
    }
}

/// The image's chain, base first.
fn chain(d: &Daemon, sp: &str, sd: &str, img: &str) -> Vec<String> {
    let vols = d.image_volumes(sp, sd, img);
    let mut parent_of = std::collections::HashMap::new();
    for v in vols.as_array().unwrap() {
        let v = v.as_str().unwrap().to_string();
        let info = d.volume_info(sp, sd, img, &v);
        parent_of.insert(v, info["parent"].as_str().unwrap().to_string());
    }
    let mut chain = Vec::new();
    let mut next = "00000000-0000-0000-0000-000000000000".to_string();
    while let Some((child, _)) = parent_of.iter().find(|(_, p)| **p == next) {
        chain.push(child.clone());
        next = child.clone();
    }
    assert_eq!(chain.len(), parent_of.len(), "not one chain: {parent_of:?}");
    chain
}

/// Writes (`write -P n`) or checks (`read -P n`) the first MiB seen through
/// volume `vol` of the image.
fn io(d: &Daemon, (sp, sd): (&str, &str), img: &str, vol: &str, cmd: &str) {
    d.with_prepared((sp, sd), img, vol, |path| {
        let shared = if cmd.starts_with("read") {
            &["-r", "-U"][..]
        } else {
            &[]
        };
        let out = Command::new("qemu-io")
            .args(shared)
            .args(["-f", "qcow2", "-c", cmd])
            .arg(path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !text.contains("failed"),
            "qemu-io {cmd} through {vol}: {text}"
        );
    });
}

#[test]
fn snapshots_keep_each_point_in_time_through_merges() {
    let Some(c) = Cinder::start() else { return };
    let (sp, sd) = c.d.embedded();
    let at = (sp.as_str(), sd.as_str());
    let id = field(&c.cinder_ok(&["create", "--name", "data", "1"]), "id");
    let leaf = |c: &Cinder| chain(&c.d, &sp, &sd, &id).last().unwrap().clone();
    io(&c.d, at, &id, &leaf(&c), "write -P 1 0 1M");
    let out = c.cinder_ok(&["snapshot-create", "--name", "s1", &id]);
    let s1 = field(&out, "id");
    assert_eq!(
        field(&c.cinder_ok(&["snapshot-show", &s1]), "status"),
        "available"
    );
    io(&c.d, at, &id, &leaf(&c), "write -P 2 0 1M");
    let s2 = field(
        &c.cinder_ok(&[
            "snapshot-create",
            "--name",
            "s2",
            "--metadata",
            "k=v",
            "--",
            &id,
        ]),
        "id",
    );
    io(&c.d, at, &id, &leaf(&c), "write -P 3 0 1M");
    let layers = chain(&c.d, &sp, &sd, &id);
    assert_eq!(layers.len(), 3, "{layers:?}");
    io(&c.d, at, &id, &layers[0], "read -P 1 0 1M");
    io(&c.d, at, &id, &layers[1], "read -P 2 0 1M");
    io(&c.d, at, &id, &layers[2], "read -P 3 0 1M");

    let list = c.cinder_ok(&["snapshot-list"]);
    assert!(list.contains(&s1) && list.contains(&s2), "{list}");
    c.cinder_ok(&["snapshot-rename", &s2, "second"]);
    c.cinder_ok(&["snapshot-metadata", &s2, "set", "x=y"]);
    let shown = c.cinder_ok(&["snapshot-show", &s2]);
    assert_eq!(field(&shown, "name"), "second");
    assert!(field(&shown, "metadata").contains('x'), "{shown}");
    // A volume with snapshots is not deleted, but with --cascade.
    let (ok, text) = c.cinder(&["delete", &id]);
    assert!(!ok || text.contains("snapshots"), "{text}");
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "available");
    let doomed = field(&c.cinder_ok(&["create", "--name", "doomed", "1"]), "id");
    let doomed_snap = field(&c.cinder_ok(&["snapshot-create", &doomed]), "id");
    c.cinder_ok(&["delete", "--cascade", &doomed]);
    c.wait_gone("show", &doomed);
    c.wait_gone("snapshot-show", &doomed_snap);

    // Clones: of a snapshot (its point in time, larger), of the volume.
    let out = c.cinder_ok(&["create", "--snapshot-id", &s1, "--name", "from-s1", "2"]);
    let from_s1 = field(&out, "id");
    let from_vol = field(
        &c.cinder_ok(&["create", "--source-volid", &id, "--name", "copy"]),
        "id",
    );
    c.wait_available(&from_s1);
    c.wait_available(&from_vol);
    let shown = c.cinder_ok(&["show", &from_s1]);
    assert_eq!(
        (field(&shown, "size"), field(&shown, "snapshot_id")),
        ("2".to_string(), s1.clone())
    );
    assert_eq!(
        field(&c.cinder_ok(&["show", &from_vol]), "source_volid"),
        id
    );
    let one = chain(&c.d, &sp, &sd, &from_s1);
    assert_eq!(one.len(), 1, "a clone is one layer: {one:?}");
    io(&c.d, at, &from_s1, &one[0], "read -P 1 0 1M");
    io(
        &c.d,
        at,
        &from_vol,
        &chain(&c.d, &sp, &sd, &from_vol)[0],
        "read -P 3 0 1M",
    );
    c.cinder_ok(&["delete", &from_s1, &from_vol]);

    // The older snapshot goes: s2's point in time and the volume stay.
    c.cinder_ok(&["snapshot-delete", &s1]);
    c.wait_gone("snapshot-show", &s1);
    let layers = chain(&c.d, &sp, &sd, &id);
    assert_eq!(layers.len(), 2, "{layers:?}");
    io(&c.d, at, &id, &layers[0], "read -P 2 0 1M");
    io(&c.d, at, &id, &layers[1], "read -P 3 0 1M");
    // Back to the latest snapshot (3.40): what was written since is gone.
    let (ok, text) = c.cinder(&["revert-to-snapshot", &s1]);
    assert!(
        !ok || text.contains("latest"),
        "s1 is not the latest: {text}"
    );
    c.cinder_ok(&["revert-to-snapshot", &s2]);
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "available");
    let layers = chain(&c.d, &sp, &sd, &id);
    assert_eq!(layers.len(), 2, "{layers:?}");
    io(&c.d, at, &id, &layers[1], "read -P 2 0 1M");
    io(&c.d, at, &id, &layers[1], "write -P 3 0 1M");
    // The latest goes: the volume is one layer again, its data whole.
    c.cinder_ok(&["snapshot-delete", &s2]);
    c.wait_gone("snapshot-show", &s2);
    let layers = chain(&c.d, &sp, &sd, &id);
    assert_eq!(layers.len(), 1, "{layers:?}");
    io(&c.d, at, &id, &layers[0], "read -P 3 0 1M");
    c.cinder_ok(&["extend", &id, "2"]);
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "size"), "2");
    c.cinder_ok(&["delete", &id]);
}

#[test]
fn qos_specs_are_kept_and_associated_with_types() {
    let Some(c) = Cinder::start() else { return };
    let out = c.cinder_ok(&[
        "qos-create",
        "fast",
        "consumer=front-end",
        "total_iops_sec=500",
    ]);
    let qos = field(&out, "id");
    assert!(field(&out, "specs").contains("500"), "{out}");
    let (ok, text) = c.cinder(&["qos-create", "fast", "read_iops_sec=1"]);
    assert!(!ok && text.contains("already exists"), "{text}");
    let (ok, text) = c.cinder(&["qos-create", "odd", "consumer=sideways"]);
    assert!(!ok && text.contains("consumer"), "{text}");
    c.cinder_ok(&["qos-key", &qos, "set", "read_bytes_sec=1048576"]);
    c.cinder_ok(&["qos-key", &qos, "unset", "total_iops_sec"]);
    let shown = c.cinder_ok(&["qos-show", &qos]);
    assert!(
        field(&shown, "specs").contains("read_bytes_sec")
            && !field(&shown, "specs").contains("total_iops"),
        "{shown}"
    );
    c.cinder_ok(&["type-create", "gold"]);
    let gold = field(&c.cinder_ok(&["type-show", "gold"]), "id");
    c.cinder_ok(&["qos-associate", &qos, &gold]);
    let assoc = c.cinder_ok(&["qos-get-association", &qos]);
    assert!(assoc.contains("gold"), "{assoc}");
    assert!(c.cinder_ok(&["qos-list"]).contains("fast"));
    // Associated specs go only when forced; then the type is free of them.
    let (ok, text) = c.cinder(&["qos-delete", &qos]);
    assert!(!ok && text.contains("associated"), "{text}");
    c.cinder_ok(&["qos-disassociate", &qos, &gold]);
    assert!(!c.cinder_ok(&["qos-get-association", &qos]).contains("gold"));
    c.cinder_ok(&["qos-associate", &qos, &gold]);
    c.cinder_ok(&["qos-delete", "--force", "True", &qos]);
    assert!(!c.cinder_ok(&["qos-list"]).contains("fast"));
    let (_, _, t) = c.http("GET", &format!("/v3/demo/types/{gold}"), &[], None);
    assert_eq!(t["volume_type"]["qos_specs_id"], Value::Null, "{t}");
    // A project's own default type (3.62).
    c.cinder_ok(&["default-type-set", "gold", "demo"]);
    assert!(c.cinder_ok(&["default-type-list"]).contains(&gold));
    let v = field(&c.cinder_ok(&["create", "1"]), "id");
    assert_eq!(field(&c.cinder_ok(&["show", &v]), "volume_type"), "gold");
    let other = c.cinder_as("elsewhere", &["create", "1"]).1;
    assert_eq!(field(&other, "volume_type"), "__DEFAULT__", "{other}");
    let (ok, text) = c.cinder(&["type-delete", "gold"]);
    assert!(!ok, "{text}");
    c.cinder_ok(&["default-type-unset", "demo"]);
    assert!(!c.cinder_ok(&["default-type-list"]).contains(&gold));
    // openstackclient sees the same.
    c.openstack_quiet(&[
        "volume",
        "qos",
        "create",
        "--consumer",
        "both",
        "--property",
        "write_iops_sec=9",
        "osc-qos",
    ]);
    let list = c.openstack(&["volume", "qos", "list"]);
    assert_eq!(list[0]["Name"], "osc-qos", "{list}");
}

#[test]
fn a_transfer_moves_a_volume_to_another_project_once() {
    let Some(c) = Cinder::start() else { return };
    let id = field(&c.cinder_ok(&["create", "--name", "gift", "1"]), "id");
    let out = c.cinder_ok(&["transfer-create", "--name", "t", &id]);
    let (transfer, key) = (field(&out, "id"), field(&out, "auth_key"));
    assert_eq!(key.len(), 16, "{out}");
    assert_eq!(
        field(&c.cinder_ok(&["show", &id]), "status"),
        "awaiting-transfer"
    );
    // It cannot be deleted while offered.
    let (ok, text) = c.cinder(&["delete", &id]);
    assert!(!ok, "{text}");
    assert_eq!(
        field(&c.cinder_ok(&["show", &id]), "status"),
        "awaiting-transfer"
    );
    assert!(c.cinder_ok(&["transfer-list"]).contains(&transfer));
    // A wrong key: 400, nothing moves.
    let (ok, text) = c.cinder_as("other", &["transfer-accept", &transfer, "0000000000000000"]);
    assert!(!ok && text.contains("invalid auth key"), "{text}");
    assert_eq!(
        field(&c.cinder_ok(&["show", &id]), "status"),
        "awaiting-transfer"
    );
    // The receiver's quota counts it: over it, 413 and nothing moves.
    c.cinder_ok(&["quota-update", "--volumes", "0", "other"]);
    let (ok, text) = c.cinder_as("other", &["transfer-accept", &transfer, &key]);
    assert!(
        !ok && text.contains("VolumeLimitExceeded") && text.contains("413"),
        "{text}"
    );
    assert_eq!(
        field(&c.cinder_ok(&["show", &id]), "status"),
        "awaiting-transfer"
    );
    c.cinder_ok(&["quota-delete", "other"]);
    // The right one: the volume is the other project's, and only once.
    let (ok, text) = c.cinder_as("other", &["transfer-accept", &transfer, &key]);
    assert!(ok, "{text}");
    let (ok, text) = c.cinder_as("other", &["show", &id]);
    assert!(ok && field(&text, "status") == "available", "{text}");
    assert!(
        !c.cinder_ok(&["list"]).contains(&id),
        "the giver still lists it"
    );
    assert!(c.cinder_as("other", &["list"]).1.contains(&id));
    let (ok, text) = c.cinder_as("other", &["transfer-accept", &transfer, &key]);
    assert!(!ok && text.contains("could not be found"), "{text}");
    // An offer withdrawn puts the volume back.
    let (_, out) = c.cinder_as("other", &["transfer-create", &id]);
    let (ok, text) = c.cinder_as("other", &["transfer-delete", &field(&out, "id")]);
    assert!(ok, "{text}");
    assert_eq!(
        field(&c.cinder_as("other", &["show", &id]).1, "status"),
        "available"
    );
}

#[test]
fn block_domains_hold_cinder_volumes() {
    let Some(luns) = TestLuns::new(1) else { return };
    let Some(c) = Cinder::start_opts(&["--cinder-auth", "noauth"], luns.env_vars(), false) else {
        return;
    };
    let sd = c.d.block_domain(&luns, 0, "san");
    let sp = c.d.spm_of_pool(&[&sd]);
    let id = field(&c.cinder_ok(&["create", "--name", "on-lvm", "2"]), "id");
    let shown = c.cinder_ok(&["show", &id]);
    assert_eq!(field(&shown, "status"), "available", "{shown}");
    assert!(
        field(&shown, "os-vol-host-attr:host").ends_with(&format!("@block#{sd}")),
        "{shown}"
    );
    // A thin LV, grown on demand: it starts small.
    let leaf = chain(&c.d, &sp, &sd, &id)[0].clone();
    let info = c.d.volume_info(&sp, &sd, &id, &leaf);
    assert!(info["apparentsize"].as_u64().unwrap() < 2 << 30, "{info}");
    io(&c.d, (&sp, &sd), &id, &leaf, "write -P 7 0 1M");
    let snap = field(&c.cinder_ok(&["snapshot-create", &id]), "id");
    assert_eq!(
        field(&c.cinder_ok(&["snapshot-show", &snap]), "status"),
        "available"
    );
    let clone = field(
        &c.cinder_ok(&["create", "--snapshot-id", &snap, "--name", "clone"]),
        "id",
    );
    c.wait_available(&clone);
    io(
        &c.d,
        (&sp, &sd),
        &clone,
        &chain(&c.d, &sp, &sd, &clone)[0],
        "read -P 7 0 1M",
    );
    c.cinder_ok(&["extend", &id, "3"]);
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "size"), "3");
    // Backed up from the LVs (to the data dir), then restored onto a new
    // thin LV; an incremental backup follows the leaf's bitmap.
    let full = field(&c.cinder_ok(&["backup-create", "--name", "lv", &id]), "id");
    wait_backup(&c, &full, "available");
    let leaf = chain(&c.d, &sp, &sd, &id).last().unwrap().clone();
    io(&c.d, (&sp, &sd), &id, &leaf, "write -P 9 1M 64k");
    let inc = field(&c.cinder_ok(&["backup-create", "--incremental", &id]), "id");
    wait_backup(&c, &inc, "available");
    assert_eq!(backup_read(&c, &inc), 64 << 10);
    let restored = field(&c.cinder_ok(&["backup-restore", &inc]), "volume_id");
    c.wait_available(&restored);
    let r = chain(&c.d, &sp, &sd, &restored)[0].clone();
    io(&c.d, (&sp, &sd), &restored, &r, "read -P 7 0 1M");
    io(&c.d, (&sp, &sd), &restored, &r, "read -P 9 1M 64k");
    c.cinder_ok(&["delete", &restored]);
    c.cinder_ok(&["backup-delete", &inc]);
    c.wait_gone("backup-show", &inc);
    c.cinder_ok(&["backup-delete", &full]);
    // Pinned to file domains, which this pool lacks: error, with the reason.
    c.cinder_ok(&["type-create", "files"]);
    c.cinder_ok(&["type-key", "files", "set", "volume_backend_name=file"]);
    let nowhere = field(
        &c.cinder_ok(&["create", "--volume-type", "files", "1"]),
        "id",
    );
    assert_eq!(field(&c.cinder_ok(&["show", &nowhere]), "status"), "error");
    c.cinder_ok(&["delete", &clone, &nowhere]);
    c.cinder_ok(&["snapshot-delete", &snap]);
    c.wait_gone("snapshot-show", &snap);
    c.cinder_ok(&["delete", &id]);
    c.d.leave_pool(&sp);
}

#[test]
fn attachments_hand_a_local_path_to_the_consumer_host() {
    let Some(c) = Cinder::start() else { return };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    c.cinder_ok(&[
        "qos-create",
        "slow",
        "consumer=front-end",
        "read_iops_sec_per_gb=10",
        "read_iops_sec_max=15",
    ]);
    c.cinder_ok(&["type-create", "capped"]);
    let capped = field(&c.cinder_ok(&["type-show", "capped"]), "id");
    let qos = c
        .cinder_ok(&["qos-list"])
        .lines()
        .find(|l| l.contains("slow"))
        .unwrap()
        .split('|')
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    c.cinder_ok(&["qos-associate", &qos, &capped]);
    let id = field(
        &c.cinder_ok(&["create", "--volume-type", "capped", "--name", "disk", "2"]),
        "id",
    );
    // Another host's connector is refused, and nothing stays reserved.
    let (ok, text) = c.cinder(&[
        "attachment-create",
        "--connect",
        "True",
        "--host",
        "elsewhere",
        &id,
        "vm-1",
    ]);
    assert!(
        !ok && text.contains("connects volumes to the host"),
        "{text}"
    );
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "available");
    // Reserve, connect, complete.
    let att = field(&c.cinder_ok(&["attachment-create", &id, "vm-1"]), "id");
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "reserved");
    let out = c.cinder_ok(&["attachment-update", "--host", &host, &att]);
    assert!(
        out.contains("local") && out.contains("device_path"),
        "{out}"
    );
    let (_, _, a) = c.http(
        "GET",
        &format!("/v3/demo/attachments/{att}"),
        &[("OpenStack-API-Version", "volume 3.44")],
        None,
    );
    let info = &a["attachment"]["connection_info"];
    let path = info["data"]["device_path"].as_str().unwrap().to_string();
    assert_eq!(
        info["data"]["qos_specs"]["read_iops_sec"], "15",
        "scaled to 2 GiB, capped: {info}"
    );
    let out = Command::new("qemu-img")
        .args(["info", "-U", &path])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("virtual size: 2 GiB"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    c.cinder_ok(&["attachment-complete", &att]);
    let shown = c.cinder_ok(&["show", &id]);
    assert_eq!(field(&shown, "status"), "in-use");
    assert!(
        field(&shown, "attached_servers").contains("vm-1"),
        "{shown}"
    );
    // In use: not deleted, not extended.
    assert!(!c.cinder(&["delete", &id]).0);
    assert!(!c.cinder(&["extend", &id, "3"]).0);
    c.cinder_ok(&["attachment-delete", &att]);
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "available");
    assert!(
        !std::path::Path::new(&path).exists(),
        "the volume is torn down on this host"
    );
    c.cinder_ok(&["delete", &id]);
}

/// Waits until `cinder backup-show id` says `want`; `error` fails.
fn wait_backup(c: &Cinder, id: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let shown = c.cinder_ok(&["backup-show", id]);
        let status = field(&shown, "status");
        if status == want {
            return shown;
        }
        assert!(
            status != "error" && Instant::now() < deadline,
            "backup {id} is {status}, not {want}: {shown}\n{}",
            c.d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The bytes cairnd's log says backup `id` read.
fn backup_read(c: &Cinder, id: &str) -> u64 {
    let log = c.d.log();
    let line = log
        .lines()
        .find(|l| l.contains("backup done") && l.contains(id))
        .unwrap_or_else(|| panic!("no 'backup done' for {id}:\n{log}"));
    let at = line.find("read=").expect("read=") + 5;
    line[at..]
        .split(|ch: char| !ch.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn backups_read_only_what_changed_and_restore_verified() {
    let Some(mut c) = Cinder::start() else { return };
    let (sp, sd) = c.d.embedded();
    let at = (sp.as_str(), sd.as_str());
    let id = field(&c.cinder_ok(&["create", "--name", "data", "1"]), "id");
    let leaf = |c: &Cinder, img: &str| chain(&c.d, &sp, &sd, img).last().unwrap().clone();
    io(&c.d, at, &id, &leaf(&c, &id), "write -P 1 0 1M");
    io(&c.d, at, &id, &leaf(&c, &id), "write -P 2 512M 1M");

    // Full: only the 2 MiB of data are read and stored.
    let full = field(
        &c.cinder_ok(&["backup-create", "--name", "full", &id]),
        "id",
    );
    let shown = wait_backup(&c, &full, "available");
    assert_eq!(field(&shown, "is_incremental"), "False", "{shown}");
    assert_eq!(backup_read(&c, &full), 2 << 20);
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "available");
    // Cinder's files: objects, hashes, and the metadata written last.
    let container =
        c.d.data()
            .join("backup")
            .join(&full[0..2])
            .join(&full[2..4])
            .join(&full);
    let names: Vec<String> = std::fs::read_dir(&container)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("_metadata"))
            && names.iter().any(|n| n.ends_with("_sha256file"))
            && names.iter().any(|n| n.ends_with("-00001")),
        "{names:?}"
    );

    // Incremental: the dirty bitmap gives the 64 KiB written since.
    io(&c.d, at, &id, &leaf(&c, &id), "write -P 3 0 64k");
    let inc = field(
        &c.cinder_ok(&["backup-create", "--incremental", "--name", "inc", &id]),
        "id",
    );
    let shown = wait_backup(&c, &inc, "available");
    assert_eq!(field(&shown, "is_incremental"), "True", "{shown}");
    assert_eq!(
        backup_read(&c, &inc),
        64 << 10,
        "only the dirty range is read"
    );
    // The cairn CLI sees the same backups and makes more.
    let b = crate::cli::json_out(
        &c.d,
        &["backup", "create", &id, "--incremental", "--name", "cli"],
    );
    assert_eq!(
        (b["status"].as_str(), b["read_bytes"].as_u64()),
        (Some("available"), Some(0)),
        "{b}"
    );
    let cli_backup = b["id"].as_str().unwrap().to_string();
    let listed = crate::cli::json_out(&c.d, &["backup", "list", "--volume", &id]);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    let out = crate::cli::cairn(&c.d, &["backup", "show", &inc]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("incremental") && text.contains("available"),
        "{text}"
    );
    crate::cli::json_out(&c.d, &["backup", "delete", &cli_backup]);
    c.wait_gone("backup-show", &cli_backup);
    // A volume without a previous backup has no incremental one.
    let other = field(&c.cinder_ok(&["create", "--name", "other", "1"]), "id");
    let (ok, text) = c.cinder(&["backup-create", "--incremental", &other]);
    assert!(!ok && text.contains("No backups available"), "{text}");
    let listed = c.openstack(&["volume", "backup", "list", "--all-projects"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // Restore into a new volume: the chain, full then incremental.
    let out = c.cinder_ok(&["backup-restore", "--name", "restored", &inc]);
    let restored = field(&out, "volume_id");
    c.wait_available(&restored);
    let r = chain(&c.d, &sp, &sd, &restored);
    io(&c.d, at, &restored, &r[0], "read -P 3 0 64k");
    io(&c.d, at, &restored, &r[0], "read -P 1 64k 960k");
    io(&c.d, at, &restored, &r[0], "read -P 2 512M 1M");
    io(&c.d, at, &restored, &r[0], "read -P 0 1M 1M");

    // A volume made from a backup (3.47), larger than it.
    let out = c.cinder_ok(&["create", "--backup-id", &inc, "--name", "from-backup", "2"]);
    let from = field(&out, "id");
    c.wait_available(&from);
    assert_eq!(field(&c.cinder_ok(&["show", &from]), "size"), "2");
    io(&c.d, at, &from, &leaf(&c, &from), "read -P 3 0 64k");
    c.cinder_ok(&["delete", &from]);

    // Onto an in-use volume: refused, nothing changes.
    c.cinder_ok(&["reset-state", "--state", "in-use", &restored]);
    let (ok, text) = c.cinder(&["backup-restore", "--volume", &restored, &full]);
    assert!(!ok && text.contains("must be available"), "{text}");
    c.cinder_ok(&["reset-state", "--state", "available", &restored]);
    assert_eq!(
        field(&c.cinder_ok(&["backup-show", &full]), "status"),
        "available"
    );

    // Onto an existing volume: what it held since is gone.
    io(&c.d, at, &id, &leaf(&c, &id), "write -P 9 0 2M");
    c.cinder_ok(&["backup-restore", "--volume", &id, &full]);
    c.wait_available(&id);
    io(&c.d, at, &id, &leaf(&c, &id), "read -P 1 0 1M");
    io(&c.d, at, &id, &leaf(&c, &id), "read -P 0 1M 1M");

    // A damaged object fails the restore by its checksum; the volume says so.
    let inc_dir =
        c.d.data()
            .join("backup")
            .join(&inc[0..2])
            .join(&inc[2..4])
            .join(&inc);
    let object = std::fs::read_dir(&inc_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-00001"))
        .unwrap();
    let good = std::fs::read(&object).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&object, &bad).unwrap();
    c.cinder_ok(&["backup-restore", "--volume", &other, &inc]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = c.cinder_ok(&["show", &other]);
        if field(&shown, "status") == "error_restoring" {
            break;
        }
        assert!(Instant::now() < deadline, "{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&object, &good).unwrap();
    c.cinder_ok(&["reset-state", "--state", "available", &other]);

    // Crash while a backup is written: rolled back, its files gone.
    c = c.crash_during("catalog.backup.written", |c| {
        c.cinder(&["backup-create", "--incremental", "--name", "lost", &id]);
    });
    let listed = c.cinder_ok(&["backup-list", "--name", "lost"]);
    let lost = listed
        .lines()
        .find(|l| l.contains("lost"))
        .and_then(|l| l.split('|').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("{listed}"));
    let shown = c.cinder_ok(&["backup-show", &lost]);
    assert_eq!(field(&shown, "status"), "error", "{shown}");
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "available");
    c.cinder_ok(&["backup-delete", &lost]);
    c.wait_gone("backup-show", &lost);

    // No bitmap since the parent (the crashed backup never added one):
    // the incremental backup compares every block's hash, as Cinder does,
    // and stores only the 64 KiB that differ from its parent.
    let again = field(
        &c.cinder_ok(&["backup-create", "--incremental", "--name", "again", &id]),
        "id",
    );
    wait_backup(&c, &again, "available");
    assert_eq!(backup_read(&c, &again), 2 << 20, "all the data is read");
    let b = crate::cli::json_out(&c.d, &["backup", "show", &again]);
    assert_eq!(b["stored_bytes"], 64 << 10, "{b}");
    let out = c.cinder_ok(&["backup-restore", "--name", "again", &again]);
    let from_again = field(&out, "volume_id");
    c.wait_available(&from_again);
    io(
        &c.d,
        at,
        &from_again,
        &leaf(&c, &from_again),
        "read -P 1 0 1M",
    );
    io(
        &c.d,
        at,
        &from_again,
        &leaf(&c, &from_again),
        "read -P 2 512M 1M",
    );
    c.cinder_ok(&["delete", &from_again]);
    c.cinder_ok(&["backup-delete", &again]);
    c.wait_gone("backup-show", &again);

    // Crash in the middle of a restore: it runs again after the restart.
    io(&c.d, at, &other, &leaf(&c, &other), "write -P 7 0 1M");
    c = c.crash_during("catalog.restore.cleared", |c| {
        c.cinder(&["backup-restore", "--volume", &other, &inc]);
    });
    c.wait_available(&other);
    io(&c.d, at, &other, &leaf(&c, &other), "read -P 3 0 64k");
    io(&c.d, at, &other, &leaf(&c, &other), "read -P 1 64k 960k");
    wait_backup(&c, &inc, "available");

    // A backup with an incremental child stays; then both go, files too.
    let (ok, text) = c.cinder(&["backup-delete", &full]);
    assert!(!ok && text.contains("Incremental backups exist"), "{text}");
    c.cinder_ok(&["backup-delete", &inc]);
    c.wait_gone("backup-show", &inc);
    c.cinder_ok(&["backup-delete", &full]);
    c.wait_gone("backup-show", &full);
    assert!(!container.exists() && !inc_dir.exists());
}

/// A backup record as `backup-export` prints it, decoded.
fn decode_record(url: &str) -> Value {
    use base64::Engine as _;
    let json = base64::engine::general_purpose::STANDARD
        .decode(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    serde_json::from_slice(&json).unwrap()
}

fn encode_record(record: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(record.to_string())
}

#[test]
fn an_exported_backup_record_makes_its_files_a_backup_again() {
    let Some(c) = Cinder::start() else { return };
    let (sp, sd) = c.d.embedded();
    let at = (sp.as_str(), sd.as_str());
    let id = field(&c.cinder_ok(&["create", "--name", "kept", "1"]), "id");
    let leaf = |c: &Cinder, img: &str| chain(&c.d, &sp, &sd, img).last().unwrap().clone();
    io(&c.d, at, &id, &leaf(&c, &id), "write -P 5 0 1M");
    let full = field(&c.cinder_ok(&["backup-create", &id]), "id");
    let objects: u64 = field(&wait_backup(&c, &full, "available"), "object_count")
        .parse()
        .unwrap();
    io(&c.d, at, &id, &leaf(&c, &id), "write -P 6 1M 64k");
    let inc = field(&c.cinder_ok(&["backup-create", "--incremental", &id]), "id");
    wait_backup(&c, &inc, "available");

    let export = |b: &str| {
        let out = c.cinder_ok(&["backup-export", b]);
        assert_eq!(
            field(&out, "backup_service"),
            "cinder.backup.drivers.posix.PosixBackupDriver",
            "{out}"
        );
        field(&out, "backup_url")
    };
    let (full_url, inc_url) = (export(&full), export(&inc));
    let record = decode_record(&full_url);
    assert_eq!(record["id"], full.as_str(), "{record}");
    assert_eq!(record["size"], 1, "{record}");
    assert_eq!(decode_record(&inc_url)["parent_id"], full.as_str());
    let service = "cinder.backup.drivers.posix.PosixBackupDriver";
    let import = |url: &str| c.cinder(&["backup-import", service, url]);
    let (ok, text) = import(&full_url);
    assert!(!ok && text.contains("already exists"), "{text}");

    // The catalog forgets both backups; their files are kept aside and
    // put back, as on a target another pool (or a lost catalog) wrote.
    let target = c.d.data().join("backup");
    let aside = c.d.data().join("backup-aside");
    let cp = |from: &std::path::Path, to: &std::path::Path| {
        assert!(Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success());
    };
    cp(&target, &aside);
    c.cinder_ok(&["backup-delete", &inc]);
    c.wait_gone("backup-show", &inc);
    c.cinder_ok(&["backup-delete", &full]);
    c.wait_gone("backup-show", &full);
    std::fs::remove_dir_all(&target).unwrap();
    cp(&aside, &target);

    // Untrusted records are refused, and nothing is recorded.
    let (ok, text) = import(&inc_url);
    assert!(!ok && text.contains("import the parent first"), "{text}");
    let (ok, text) = c.cinder(&["backup-import", "cinder.backup.drivers.swift", &full_url]);
    assert!(!ok && text.contains("not supported"), "{text}");
    let (ok, text) = import("not base64!");
    assert!(!ok && text.contains("decode"), "{text}");
    let mut escape = record.clone();
    escape["container"] = json!("../../../etc");
    let (ok, text) = import(&encode_record(&escape));
    assert!(!ok && text.contains("container"), "{text}");
    let mut escape = record.clone();
    escape["service_metadata"] = json!("../x");
    let (ok, text) = import(&encode_record(&escape));
    assert!(!ok && text.contains("prefix"), "{text}");
    let mut larger = record.clone();
    larger["size"] = json!(2);
    let (ok, text) = import(&encode_record(&larger));
    assert!(!ok && text.contains("another size"), "{text}");
    let mut missing = record.clone();
    missing["service_metadata"] = json!("volume_gone");
    let (ok, text) = import(&encode_record(&missing));
    assert!(!ok && text.contains("cannot be read"), "{text}");
    assert!(!c.cinder_ok(&["backup-list"]).contains(&full));

    // The full one through the cairn CLI, the increment through cinder.
    let b = crate::cli::json_out(&c.d, &["backup", "import", &full_url, "--project", "demo"]);
    assert_eq!(
        (
            b["id"].as_str(),
            b["status"].as_str(),
            b["object_count"].as_u64()
        ),
        (Some(full.as_str()), Some("available"), Some(objects)),
        "{b}"
    );
    let (ok, text) = import(&inc_url);
    assert!(ok, "{text}");
    let shown = c.cinder_ok(&["backup-show", &inc]);
    assert_eq!(field(&shown, "status"), "available", "{shown}");
    assert_eq!(field(&shown, "is_incremental"), "True", "{shown}");
    let again = crate::cli::json_out(&c.d, &["backup", "export", &full]);
    assert_eq!(
        decode_record(again["backupURL"].as_str().unwrap())["id"],
        full.as_str()
    );

    // What they hold comes back, checked by its hashes.
    let out = c.cinder_ok(&["backup-restore", "--name", "back", &inc]);
    let back = field(&out, "volume_id");
    c.wait_available(&back);
    io(&c.d, at, &back, &leaf(&c, &back), "read -P 5 0 1M");
    io(&c.d, at, &back, &leaf(&c, &back), "read -P 6 1M 64k");
    io(&c.d, at, &back, &leaf(&c, &back), "read -P 0 2M 1M");
}

#[test]
fn the_legacy_attach_actions_walk_a_volume_through_nova_s_old_flow() {
    let Some(c) = Cinder::start() else { return };
    let id = field(&c.cinder_ok(&["create", "--name", "old", "1"]), "id");
    // Nova's old calls, through cinderclient's library: reserve,
    // initialize_connection, attach; begin/roll detaching; terminate, detach.
    let out = c.sdk(&format!(
        r#"
import json, os, socket
from cinderclient import client
from cinderclient.contrib import noauth
from keystoneauth1 import session
auth = noauth.CinderNoAuthPlugin("nova", "demo", endpoint=os.environ["ENDPOINT"])
cc = client.Client("3.0", session=session.Session(auth=auth))
v = cc.volumes.get("{id}")
cc.volumes.reserve(v)
reserved = cc.volumes.get("{id}").status
cc.volumes.unreserve(v)
unreserved = cc.volumes.get("{id}").status
cc.volumes.reserve(v)
info = cc.volumes.initialize_connection(v, {{"host": socket.gethostname(), "initiator": "iqn.x"}})
cc.volumes.attach(v, "vm-old", "/dev/vdb", mode="rw")
attached = cc.volumes.get("{id}").status
cc.volumes.begin_detaching(v)
detaching = cc.volumes.get("{id}").status
cc.volumes.roll_detaching(v)
rolled = cc.volumes.get("{id}").status
cc.volumes.begin_detaching(v)
cc.volumes.terminate_connection(v, {{"host": socket.gethostname()}})
cc.volumes.detach(v)
print(json.dumps({{"info": info, "reserved": reserved, "unreserved": unreserved, "attached": attached, "detaching": detaching, "rolled": rolled,
                   "after": cc.volumes.get("{id}").status}}))
"#
    ));
    assert_eq!(
        (&out["reserved"], &out["unreserved"]),
        (&json!("reserved"), &json!("available")),
        "{out}"
    );
    assert_eq!(out["info"]["driver_volume_type"], "local", "{out}");
    let path = out["info"]["data"]["device_path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        (
            &out["attached"],
            &out["detaching"],
            &out["rolled"],
            &out["after"]
        ),
        (
            &json!("in-use"),
            &json!("detaching"),
            &json!("in-use"),
            &json!("available")
        ),
        "{out}"
    );
    assert!(!std::path::Path::new(&path).exists(), "torn down: {path}");
    // Out of order: attach without a connection, detaching an available volume.
    let (status, _, body) = c.http(
        "POST",
        &format!("/v3/demo/volumes/{id}/action"),
        &[],
        Some(json!({"os-attach": {"instance_uuid": "vm", "mountpoint": "/dev/vdb"}})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = c.http(
        "POST",
        &format!("/v3/demo/volumes/{id}/action"),
        &[],
        Some(json!({"os-begin_detaching": {}})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "available");
}

#[test]
fn quotas_refuse_what_would_pass_them_and_change_nothing() {
    let Some(c) = Cinder::start() else { return };
    let shown = c.cinder_ok(&["quota-show", "demo"]);
    assert_eq!(
        field(&shown, "volumes"),
        "-1",
        "unlimited by default: {shown}"
    );
    c.cinder_ok(&[
        "quota-update",
        "--volumes",
        "2",
        "--gigabytes",
        "3",
        "--backups",
        "1",
        "demo",
    ]);
    let one = field(&c.cinder_ok(&["create", "--name", "one", "1"]), "id");
    let (ok, text) = c.cinder(&["create", "--name", "big", "3"]);
    assert!(
        !ok && text.contains("VolumeSizeExceedsAvailableQuota") && text.contains("413"),
        "{text}"
    );
    c.cinder_ok(&["create", "--name", "two", "1"]);
    let (ok, text) = c.cinder(&["create", "--name", "three", "1"]);
    assert!(!ok && text.contains("VolumeLimitExceeded"), "{text}");
    // Extend and snapshot count against gigabytes too.
    let (ok, text) = c.cinder(&["extend", &one, "3"]);
    assert!(!ok && text.contains("gigabytes quota"), "{text}");
    assert_eq!(field(&c.cinder_ok(&["show", &one]), "size"), "1");
    c.cinder_ok(&["snapshot-create", "--name", "s", &one]);
    let (ok, text) = c.cinder(&["snapshot-create", "--name", "s2", &one]);
    assert!(!ok && text.contains("gigabytes quota"), "{text}");
    // Backups.
    let b = field(&c.cinder_ok(&["backup-create", &one]), "id");
    wait_backup(&c, &b, "available");
    let (ok, text) = c.cinder(&["backup-create", &one]);
    assert!(!ok && text.contains("BackupLimitExceeded"), "{text}");
    // What is used, and the limits clients show.
    let usage = c.cinder_ok(&["quota-usage", "demo"]);
    let row = usage
        .lines()
        .find(|l| l.contains("| volumes "))
        .unwrap_or_else(|| panic!("{usage}"));
    assert!(row.contains("| 2 ") && row.contains("| 2 "), "{row}");
    let limits = c.cinder_ok(&["absolute-limits"]);
    let row = limits
        .lines()
        .find(|l| l.contains("maxTotalVolumes "))
        .unwrap_or_else(|| panic!("{limits}"));
    assert!(row.contains("| 2"), "{row}");
    // The largest volume.
    c.cinder_ok(&[
        "quota-update",
        "--per-volume-gigabytes",
        "1",
        "--volumes",
        "5",
        "--gigabytes",
        "100",
        "demo",
    ]);
    let (ok, text) = c.cinder(&["create", "2"]);
    assert!(!ok && text.contains("VolumeSizeExceedsLimit"), "{text}");
    // A limit below -1 is refused.
    let (ok, text) = c.cinder(&["quota-update", "--volumes", "-5", "demo"]);
    assert!(!ok && text.contains("-1 or greater"), "{text}");
    // Back to the defaults: unlimited.
    c.cinder_ok(&["quota-delete", "demo"]);
    c.cinder_ok(&["create", "--name", "four", "2"]);
}

#[test]
fn retype_changes_a_type_in_place_or_moves_the_volume_and_migrate_moves_it() {
    let Some(mut c) = Cinder::start() else { return };
    let (sp, sd) = c.d.embedded();
    // A second file domain in the pool.
    let other = crate::common::uuid();
    let dir = c.d.local_storage("other");
    c.d.call(
        "StorageDomain.create",
        json!({"storagedomainID": other, "domainType": "LOCALFS", "typeArgs": dir.to_str().unwrap(), "name": "other", "domainClass": "Data"}),
    );
    let ids = json!({"storagedomainID": other, "storagepoolID": sp});
    c.d.call("StorageDomain.attach", ids.clone());
    c.d.call("StorageDomain.activate", ids);
    c.cinder_ok(&["type-create", "here"]);
    c.cinder_ok(&["type-key", "here", "set", &format!("pool_name={sd}")]);
    c.cinder_ok(&["type-create", "there"]);
    c.cinder_ok(&["type-key", "there", "set", &format!("pool_name={other}")]);
    c.cinder_ok(&["type-create", "files"]);
    c.cinder_ok(&["type-key", "files", "set", "volume_backend_name=file"]);
    c.cinder_ok(&["type-create", "thick"]);
    c.cinder_ok(&["type-key", "thick", "set", "provisioning:type=thick"]);
    let id = field(
        &c.cinder_ok(&["create", "--volume-type", "here", "--name", "mover", "1"]),
        "id",
    );
    let leaf = chain(&c.d, &sp, &sd, &id)[0].clone();
    io(&c.d, (&sp, &sd), &id, &leaf, "write -P 5 0 1M");
    let snap = field(&c.cinder_ok(&["snapshot-create", "--name", "s", &id]), "id");
    let host_of = |c: &Cinder| field(&c.cinder_ok(&["show", &id]), "os-vol-host-attr:host");

    // Its domain satisfies "files": the type changes, nothing moves.
    c.cinder_ok(&["retype", &id, "files"]);
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "volume_type"), "files");
    assert!(host_of(&c).ends_with(&sd));
    // "there" needs a move: refused without on-demand migration.
    let (ok, text) = c.cinder(&["retype", &id, "there"]);
    assert!(!ok && text.contains("requires migration"), "{text}");
    let (ok, text) = c.cinder(&["retype", &id, "thick"]);
    assert!(!ok && text.contains("thin and thick"), "{text}");
    // On demand: the image moves with its snapshot's layer.
    c.cinder_ok(&["retype", "--migration-policy", "on-demand", &id, "there"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = c.cinder_ok(&["show", &id]);
        if field(&shown, "migration_status") == "success" {
            assert_eq!(field(&shown, "status"), "available");
            assert_eq!(field(&shown, "volume_type"), "there");
            break;
        }
        assert!(
            field(&shown, "migration_status") != "error" && Instant::now() < deadline,
            "{shown}\n{}",
            c.d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(host_of(&c).ends_with(&other));
    let layers = chain(&c.d, &sp, &other, &id);
    assert_eq!(layers.len(), 2, "{layers:?}");
    io(&c.d, (&sp, &other), &id, &layers[0], "read -P 5 0 1M");
    assert!(!c.d.domain_dir(&sd).join("images").join(&id).exists());

    // Migrate back (admin), crashing in the middle: recovery ends it.
    c.cinder_ok(&["retype", &id, "files"]);
    let pool = format!("{}@file#{sd}", host_name());
    c = c.crash_during("image.move.after_commit", |c| {
        c.cinder(&["migrate", &id, &pool]);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = c.cinder_ok(&["show", &id]);
        if field(&shown, "status") == "available" {
            assert_eq!(field(&shown, "migration_status"), "success", "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(host_of(&c).ends_with(&sd));
    io(
        &c.d,
        (&sp, &sd),
        &id,
        &chain(&c.d, &sp, &sd, &id)[0],
        "read -P 5 0 1M",
    );
    c.cinder_ok(&["snapshot-delete", &snap]);
    c.wait_gone("snapshot-show", &snap);
    c.cinder_ok(&["delete", &id]);
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// tgtd on this machine (user space) on `portal`; killed on drop.
struct Tgtd(std::process::Child);

impl Tgtd {
    fn start(portal: &str) -> Option<Tgtd> {
        let child = Command::new("tgtd")
            .args(["-f", "--iscsi", &format!("portal={portal}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let t = Tgtd(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Command::new("tgtadm")
            .args(["--lld", "iscsi", "--op", "show", "--mode", "target"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            if Instant::now() > deadline {
                eprintln!("SKIP: tgtd does not answer");
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(t)
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The LUN's capacity as libiscsi's initiator reads it, logged in as
/// `initiator` with CHAP (a user-space initiator: this kernel has none).
fn iscsi_capacity(info: &Value, initiator: &str) -> Result<String, String> {
    let d = &info["data"];
    let url = format!(
        "iscsi://{}%{}@{}/{}/{}",
        d["auth_username"].as_str().unwrap(),
        d["auth_password"].as_str().unwrap(),
        d["target_portal"].as_str().unwrap(),
        d["target_iqn"].as_str().unwrap(),
        d["target_lun"],
    );
    let out = Command::new("iscsi-readcapacity16")
        .args(["-i", initiator, &url])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn another_host_reaches_a_thick_block_volume_over_iscsi_with_chap() {
    iscsi_attachment(|_, _| Vec::new());
}

/// The test above; `consumer` gets the attachment's connection info and
/// the connector's initiator name while attached, and returns qemu-io
/// commands the volume must pass once detached (the VM tier's kernel
/// initiator writes through the LUN and checks it lands).
pub fn iscsi_attachment(consumer: impl FnOnce(&Value, &str) -> Vec<String>) {
    let Some(luns) = TestLuns::new(1) else { return };
    let portal = free_tcp_addr();
    let Some(_tgtd) = Tgtd::start(&portal) else {
        return;
    };
    let Some(c) = Cinder::start_opts(
        &["--cinder-auth", "noauth", "--cinder-iscsi-portal", &portal],
        luns.env_vars(),
        false,
    ) else {
        return;
    };
    let sd = c.d.block_domain(&luns, 0, "san");
    let sp = c.d.spm_of_pool(&[&sd]);
    c.cinder_ok(&["type-create", "thick"]);
    c.cinder_ok(&["type-key", "thick", "set", "provisioning:type=thick"]);
    let id = field(
        &c.cinder_ok(&["create", "--volume-type", "thick", "--name", "lun", "1"]),
        "id",
    );
    c.wait_available(&id);
    let leaf = chain(&c.d, &sp, &sd, &id)[0].clone();
    c.d.with_prepared((&sp, &sd), &id, &leaf, |path| {
        let out = Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write -P 7 0 1M"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success());
    });
    let initiator = "iqn.2026-12.org.example:compute-1";
    let attach = |vol: &str| {
        c.http(
            "POST",
            "/v3/demo/attachments",
            &[("OpenStack-API-Version", "volume 3.54")],
            Some(
                json!({"attachment": {"volume_uuid": vol, "instance_uuid": "vm-1",
                "connector": {"host": "compute-1", "initiator": initiator, "ip": "127.0.0.1"}}}),
            ),
        )
    };
    let (status, _, a) = attach(&id);
    assert_eq!(status, 200, "{a}\n{}", c.d.log());
    let info = a["attachment"]["connection_info"].clone();
    assert_eq!(info["driver_volume_type"], "iscsi", "{info}");
    assert_eq!(info["data"]["auth_method"], "CHAP");
    // The connector's initiator logs in and finds the volume's 1 GiB,
    // served from its LV; another initiator or password is refused.
    let capacity = iscsi_capacity(&info, initiator).unwrap();
    assert!(capacity.contains("1073741824"), "{capacity}");
    let show = Command::new("tgtadm")
        .args(["--lld", "iscsi", "--op", "show", "--mode", "target"])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(show.contains(&leaf) && show.contains(initiator), "{show}");
    let refused = iscsi_capacity(&info, "iqn.2026-12.org.example:intruder");
    assert!(refused.is_err(), "another initiator got in: {refused:?}");
    let mut wrong = info.clone();
    wrong["data"]["auth_password"] = json!("not-the-password");
    assert!(
        iscsi_capacity(&wrong, initiator).is_err(),
        "a wrong CHAP password got in"
    );
    let checks = consumer(&info, initiator);
    // A thin volume is a qcow2 chain: no LUN for it.
    let thin = field(&c.cinder_ok(&["create", "--name", "thin", "1"]), "id");
    let (status, _, body) = attach(&thin);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("thick"), "{body}");
    assert_eq!(field(&c.cinder_ok(&["show", &thin]), "status"), "available");
    // Detached: the target is gone.
    let att = a["attachment"]["id"].as_str().unwrap().to_string();
    c.cinder_ok(&["attachment-delete", &att]);
    let show = Command::new("tgtadm")
        .args(["--lld", "iscsi", "--op", "show", "--mode", "target"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&show.stdout).contains(&id),
        "{}",
        String::from_utf8_lossy(&show.stdout)
    );
    assert!(iscsi_capacity(&info, initiator).is_err());
    c.d.with_prepared((&sp, &sd), &id, &leaf, |path| {
        for cmd in ["read -P 7 0 1M".to_string()].iter().chain(&checks) {
            let out = Command::new("qemu-io")
                .args(["-f", "raw", "-c", cmd])
                .arg(path)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && !text.contains("Pattern verification failed"),
                "{cmd}: {text}"
            );
        }
    });
    c.cinder_ok(&["delete", &id, &thin]);
    c.d.leave_pool(&sp);
}

/// A real Keystone (PyPI's, SQLite, fernet tokens) under Python's WSGI
/// server on a free port; `admin`/`secret` bootstrapped. Killed on drop.
struct RealKeystone {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl RealKeystone {
    fn start() -> Option<RealKeystone> {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/keystone");
        if !venv.join("bin/keystone-manage").exists() {
            eprintln!("SKIP: Keystone is not installed (scripts/deps.sh installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let addr = free_tcp_addr();
        let url = format!("http://{addr}/v3");
        let conf = dir.path().join("keystone.conf");
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nlog_file = {d}/keystone.log\n[database]\nconnection = sqlite:///{d}/keystone.db\n\
                 [token]\nprovider = fernet\n[fernet_tokens]\nkey_repository = {d}/fernet\n\
                 [fernet_receipts]\nkey_repository = {d}/fernet\n[credential]\nkey_repository = {d}/credential\n"
            ),
        )
        .unwrap();
        let manage = |args: &[&str]| {
            let out = Command::new(venv.join("bin/keystone-manage"))
                .arg("--config-file")
                .arg(&conf)
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "keystone-manage {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        manage(&["db_sync"]);
        manage(&[
            "fernet_setup",
            "--keystone-user",
            "root",
            "--keystone-group",
            "root",
        ]);
        manage(&[
            "credential_setup",
            "--keystone-user",
            "root",
            "--keystone-group",
            "root",
        ]);
        manage(&[
            "bootstrap",
            "--bootstrap-password",
            "secret",
            "--bootstrap-admin-url",
            &url,
            "--bootstrap-public-url",
            &url,
            "--bootstrap-region-id",
            "RegionOne",
        ]);
        let (host, port) = addr.rsplit_once(':').unwrap();
        let child = Command::new(venv.join("bin/python"))
            .args([
                "-c",
                &format!(
                    "from wsgiref.simple_server import make_server, WSGIRequestHandler\n\
                     from keystone.wsgi.api import application\n\
                     WSGIRequestHandler.log_message = lambda *a: None\n\
                     make_server({host:?}, {port}, application).serve_forever()"
                ),
            ])
            .env("OS_KEYSTONE_CONFIG_FILES", &conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let k = RealKeystone {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(&addr).is_err() || http(&addr, "GET", "/v3", &[], None).0 != 200 {
            assert!(Instant::now() < deadline, "Keystone did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(k)
    }
}

impl Drop for RealKeystone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keystone_validates_tokens_and_its_catalog_leads_clients_to_cairn() {
    let Some(venv) = clients() else { return };
    let Some(ks) = RealKeystone::start() else {
        return;
    };
    let Some(c) = Cinder::start_with(
        &[
            "--cinder-auth",
            "keystone",
            "--cinder-keystone-url",
            &ks.url,
        ],
        Vec::new(),
    ) else {
        return;
    };
    let os = |user: &str, password: &str, project: &str, args: &[&str]| -> (bool, String) {
        let out = Command::new(venv.join("bin/openstack"))
            .args(args)
            .env("OS_AUTH_URL", &ks.url)
            .env("OS_IDENTITY_API_VERSION", "3")
            .env("OS_USERNAME", user)
            .env("OS_PASSWORD", password)
            .env("OS_PROJECT_NAME", project)
            .env("OS_USER_DOMAIN_ID", "default")
            .env("OS_PROJECT_DOMAIN_ID", "default")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let admin = |args: &[&str]| {
        let (ok, text) = os("admin", "secret", "admin", args);
        assert!(ok, "openstack {args:?}: {text}");
        text.trim().to_string()
    };
    // Keystone's catalog names Cairn as the volumev3 service.
    admin(&["service", "create", "--name", "cinderv3", "volumev3"]);
    admin(&[
        "endpoint",
        "create",
        "--region",
        "RegionOne",
        "volumev3",
        "public",
        &format!("http://{}/v3/%(project_id)s", c.addr),
    ]);
    admin(&["project", "create", "--domain", "default", "demo"]);
    admin(&[
        "user",
        "create",
        "--domain",
        "default",
        "--password",
        "alice-pw",
        "alice",
    ]);
    admin(&[
        "role",
        "add",
        "--project",
        "demo",
        "--user",
        "alice",
        "member",
    ]);

    // alice, with her password, as any OpenStack user would.
    let (ok, text) = os(
        "alice",
        "alice-pw",
        "demo",
        &["volume", "create", "--size", "1", "ks-vol"],
    );
    assert!(ok, "{text}\n{}", c.d.log());
    let (ok, text) = os(
        "alice",
        "alice-pw",
        "demo",
        &["volume", "list", "-f", "json"],
    );
    assert!(ok && text.contains("ks-vol"), "{text}");
    let out = Command::new(venv.join("bin/cinder"))
        .args([
            "--os-auth-url",
            &ks.url,
            "--os-username",
            "alice",
            "--os-password",
            "alice-pw",
            "--os-project-name",
            "demo",
            "--os-user-domain-id",
            "default",
            "--os-project-domain-id",
            "default",
            "--os-volume-api-version",
            "3.71",
            "list",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ks-vol"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Raw requests: no token or a forged one, 401; alice in another
    // project, 403; the admin sees every project's volumes.
    let alice = os(
        "alice",
        "alice-pw",
        "demo",
        &["token", "issue", "-f", "value", "-c", "id"],
    )
    .1;
    let alice = alice.trim();
    let demo = admin(&["project", "show", "demo", "-f", "value", "-c", "id"]);
    let (status, _, _) = c.http("GET", &format!("/v3/{demo}/volumes"), &[], None);
    assert_eq!(status, 401);
    let (status, _, _) = c.http(
        "GET",
        &format!("/v3/{demo}/volumes"),
        &[("X-Auth-Token", "gAAAAAforged")],
        None,
    );
    assert_eq!(status, 401);
    let (status, _, body) = c.http(
        "GET",
        &format!("/v3/{demo}/volumes"),
        &[("X-Auth-Token", alice)],
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = c.http(
        "GET",
        "/v3/someone-else/volumes",
        &[("X-Auth-Token", alice)],
        None,
    );
    assert_eq!(status, 403);
    let admin_token = admin(&["token", "issue", "-f", "value", "-c", "id"]);
    let (status, _, body) = c.http(
        "GET",
        "/v3/volumes/detail?all_tenants=1",
        &[("X-Auth-Token", &admin_token)],
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("ks-vol"), "{body}");
}

#[test]
fn backups_go_to_a_file_domain_every_host_of_the_pool_reaches() {
    let Some(mut c) = Cinder::start() else { return };
    let (sp, sd) = c.d.embedded();
    c.args
        .extend(["--cinder-backup-target".to_string(), format!("domain:{sd}")]);
    c = c.restart(false, Vec::new());
    c.get("/v3/demo/volumes", &[("X-Auth-Token", "alice:demo")]);
    let id = field(&c.cinder_ok(&["create", "--name", "src", "1"]), "id");
    let leaf = chain(&c.d, &sp, &sd, &id)[0].clone();
    io(&c.d, (&sp, &sd), &id, &leaf, "write -P 4 0 1M");
    let b = field(&c.cinder_ok(&["backup-create", &id]), "id");
    wait_backup(&c, &b, "available");
    let container =
        c.d.domain_dir(&sd)
            .join("cairn-backups")
            .join(&b[0..2])
            .join(&b[2..4])
            .join(&b);
    assert!(container.is_dir(), "{}", container.display());
    let restored = field(&c.cinder_ok(&["backup-restore", &b]), "volume_id");
    c.wait_available(&restored);
    io(
        &c.d,
        (&sp, &sd),
        &restored,
        &chain(&c.d, &sp, &sd, &restored)[0],
        "read -P 4 0 1M",
    );
}

/// NFS as far as this machine allows: the kernel has no NFS client, so the
/// domain is mounted by the stand-in mount program (tests/tools); the
/// share's address is what another host's os-brick would mount.
#[test]
fn another_host_reaches_an_nfs_domain_volume_through_the_share() {
    let Some(fs) = LoopFs::new(300, "xfs", true) else {
        return;
    };
    let Some(sanlock) = crate::sanlock::SanlockDaemon::start() else {
        return;
    };
    let export = fs.mount.join("nfs.example/export/data");
    std::fs::create_dir_all(&export).unwrap();
    std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/fake_nfs_mount.sh");
    let env: Vec<(String, String)> = [
        ("CAIRN_SHARED_LEASES", "sanlock".to_string()),
        ("SANLOCK_RUN_DIR", sanlock.run_dir().display().to_string()),
        ("CAIRN_SANLOCK_IO_TIMEOUT", "1".to_string()),
        ("CAIRN_MOUNT", script.display().to_string()),
        ("FAKE_NFS_ROOT", fs.mount.display().to_string()),
        (
            "FAKE_NFS_LOG",
            fs.mount.join("mount.log").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let Some(c) = Cinder::start_opts(&["--cinder-auth", "noauth"], env, false) else {
        return;
    };
    std::fs::set_permissions(c.d.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = "nfs.example:/export/data";
    let st = c.d.call(
        "StoragePool.connectStorageServer",
        json!({"storagepoolID": "00000000-0000-0000-0000-000000000000", "domainType": "NFS",
               "connectionParams": [{"id": "nfs", "connection": spec}]}),
    );
    assert_eq!(st[0]["status"], 0, "{st}");
    let sd = crate::common::uuid();
    c.d.call(
        "StorageDomain.create",
        json!({"storagedomainID": sd, "domainType": "NFS", "typeArgs": spec, "name": "nfs", "domainClass": "Data", "blockSize": 0}),
    );
    let sp = c.d.spm_of_pool(&[&sd]);
    let id = field(&c.cinder_ok(&["create", "--name", "on-nfs", "1"]), "id");
    let leaf = chain(&c.d, &sp, &sd, &id)[0].clone();
    let (status, _, a) = c.http(
        "POST",
        "/v3/demo/attachments",
        &[("OpenStack-API-Version", "volume 3.54")],
        Some(
            json!({"attachment": {"volume_uuid": id, "instance_uuid": "vm-1",
            "connector": {"host": "compute-1", "initiator": "iqn.x:compute-1"}}}),
        ),
    );
    assert_eq!(status, 200, "{a}\n{}", c.d.log());
    let info = &a["attachment"]["connection_info"];
    assert_eq!(info["driver_volume_type"], "nfs", "{info}");
    assert_eq!(info["data"]["export"], spec);
    assert_eq!(info["data"]["format"], "qcow2");
    // What the other host opens below its mount of the share.
    let name = info["data"]["name"].as_str().unwrap();
    assert_eq!(name, format!("{sd}/images/{id}/{leaf}"));
    assert!(
        export.join(name).is_file(),
        "{}",
        export.join(name).display()
    );
    let att = a["attachment"]["id"].as_str().unwrap().to_string();
    c.cinder_ok(&["attachment-complete", &att]);
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "in-use");
    c.cinder_ok(&["attachment-delete", &att]);
    assert_eq!(field(&c.cinder_ok(&["show", &id]), "status"), "available");
    c.cinder_ok(&["delete", &id]);
    c.d.leave_pool(&sp);
}
