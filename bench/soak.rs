//! Kill -9 soak: several clients run random mutating workloads (create
//! image, snapshot, delete leaf, delete image, update volume) while cairnd
//! is killed with SIGKILL at random moments; after each restart the
//! invariants are checked. Not part of CI; run by bench/soak.sh.
//!
//!   cairn-soak --rounds 50 [--clients 4] [--data-dir DIR]
//!
//! Prints a JSON summary; exits 1 if any invariant was violated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::client::{Client, Target};
use serde_json::{json, Value};

const BLANK: &str = "00000000-0000-0000-0000-000000000000";

fn uuid() -> String {
    cairn::types::Uuid::new_v4().to_string()
}

/// What clients saw confirmed: volume -> present after its last confirmed
/// operation. Volumes with an operation in flight at the kill are unknown.
#[derive(Default)]
struct Ledger {
    /// volume -> (image, present)
    known: BTreeMap<String, (String, bool)>,
    unknown: BTreeSet<String>,
    /// Images whose delete was confirmed: every volume ever in them is gone,
    /// whatever order the clients saw their own tasks finish in.
    deleted_images: BTreeSet<String>,
    /// Images whose delete was in flight at a kill: recovery may finish it,
    /// so nothing is known about their volumes.
    uncertain_images: BTreeSet<String>,
}

struct World {
    sp: String,
    sd: String,
    ledger: Mutex<Ledger>,
    ops: AtomicUsize,
    stop: AtomicBool,
}

fn main() {
    let mut rounds = 20usize;
    let mut clients = 4usize;
    let mut data: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--rounds" => rounds = v.parse().expect("rounds"),
            "--clients" => clients = v.parse().expect("clients"),
            "--data-dir" => data = Some(v.into()),
            _ => panic!("unknown option {a}"),
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = data.unwrap_or_else(|| tmp.path().join("soak"));
    let cairnd = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("cairnd");
    let socket = data.join("cairnd.sock");
    let mut child = start(&cairnd, &data, &socket);
    let c = Client::new(Target::Unix(socket.clone()));
    let sp = c.call("Host.getConnectedStoragePools", json!({})).unwrap()[0]
        .as_str()
        .unwrap()
        .to_string();
    let sd = c
        .call("StoragePool.getInfo", json!({"storagepoolID": sp}))
        .unwrap()["info"]["master_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let world = Arc::new(World {
        sp,
        sd,
        ledger: Mutex::default(),
        ops: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let mut violations = Vec::new();
    let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
    let started = Instant::now();
    for round in 0..rounds {
        world.stop.store(false, Ordering::SeqCst);
        let threads: Vec<_> = (0..clients)
            .map(|i| {
                let (w, s) = (world.clone(), socket.clone());
                std::thread::spawn(move || client(w, s, (round * 131 + i + 1) as u64))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(50..500)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        world.stop.store(true, Ordering::SeqCst);
        for t in threads {
            let _ = t.join();
        }
        child = start(&cairnd, &data, &socket);
        for v in check(&world, &socket, &data) {
            eprintln!("round {round}: VIOLATION: {v}");
            violations.push(format!("round {round}: {v}"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let summary = json!({
        "rounds": rounds, "clients": clients, "kills": rounds, "operations": world.ops.load(Ordering::SeqCst),
        "violations": violations.len(), "seconds": started.elapsed().as_secs_f64(),
        "volumes_tracked": world.ledger.lock().unwrap().known.len(),
    });
    println!("{summary}");
    if !violations.is_empty() {
        std::process::exit(1);
    }
}

fn start(cairnd: &Path, data: &Path, socket: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    let child = Command::new(cairnd)
        .arg("--data-dir")
        .arg(data)
        .arg("--log-level")
        .arg(std::env::var("SOAK_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start cairnd");
    let c = Client::new(Target::Unix(socket.to_path_buf()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.call("Host.getConnectedStoragePools", json!({})).is_err() {
        assert!(Instant::now() < deadline, "cairnd did not come back");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// Waits for a task; Some(success) or None if cairnd went away.
fn wait(c: &Client, task: &Value) -> Option<bool> {
    loop {
        let st = c.call("Task.getStatus", json!({"taskID": task})).ok()?;
        if st["taskState"] == "finished" {
            let _ = c.call("Task.clear", json!({"taskID": task}));
            return Some(st["taskResult"] == "success");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn leaf(c: &Client, w: &World, img: &str) -> Option<(String, String)> {
    let vols = c
        .call(
            "Image.getVolumes",
            json!({"imageID": img, "storagepoolID": w.sp, "storagedomainID": w.sd}),
        )
        .ok()?;
    vols.as_array()?.iter().filter_map(Value::as_str).find_map(|v| {
        let i = c.call("Volume.getInfo", json!({"volumeID": v, "storagepoolID": w.sp, "storagedomainID": w.sd, "imageID": img})).ok()?;
        (i["voltype"] == "LEAF").then(|| (v.to_string(), i["parent"].as_str().unwrap_or(BLANK).to_string()))
    })
}

fn client(w: Arc<World>, socket: PathBuf, seed: u64) {
    let c = Client::new(Target::Unix(socket));
    let mut rng = fastrand::Rng::with_seed(seed);
    while !w.stop.load(Ordering::SeqCst) {
        let Ok(images) = c.call("StorageDomain.getImages", json!({"storagedomainID": w.sd})) else {
            return;
        };
        let images: Vec<String> = images
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let pick = |rng: &mut fastrand::Rng| {
            (!images.is_empty()).then(|| images[rng.usize(..images.len())].clone())
        };
        // (image, volumes touched, present afterwards if it succeeds, method, params)
        type Op = (String, Vec<String>, bool, &'static str, Value);
        let (image, touched, present, method, params): Op = match rng.u32(..5) {
            0 | 1 if images.len() < 12 => {
                let (img, vol) = (uuid(), uuid());
                let p = json!({"volumeID": vol, "storagepoolID": w.sp, "storagedomainID": w.sd, "imageID": img, "size": "1048576",
                               "volFormat": "COW", "preallocate": "SPARSE", "diskType": "DATA", "desc": "", "srcImgUUID": BLANK, "srcVolUUID": BLANK});
                (img, vec![vol], true, "Volume.create", p)
            }
            0..=2 => {
                let Some(img) = pick(&mut rng) else { continue };
                let Some((parent, _)) = leaf(&c, &w, &img) else {
                    continue;
                };
                let vol = uuid();
                let p = json!({"volumeID": vol, "storagepoolID": w.sp, "storagedomainID": w.sd, "imageID": img, "size": "1048576",
                               "volFormat": "COW", "preallocate": "SPARSE", "diskType": "DATA", "desc": "", "srcImgUUID": img, "srcVolUUID": parent});
                (img, vec![vol], true, "Volume.create", p)
            }
            3 => {
                let Some(img) = pick(&mut rng) else { continue };
                let Some((vol, _)) = leaf(&c, &w, &img) else {
                    continue;
                };
                let p = json!({"volumeID": vol, "storagepoolID": w.sp, "storagedomainID": w.sd, "imageID": img, "postZero": false, "force": false});
                (img, vec![vol], false, "Volume.delete", p)
            }
            _ => {
                let Some(img) = pick(&mut rng) else { continue };
                let Ok(vols) = c.call(
                    "Image.getVolumes",
                    json!({"imageID": img, "storagepoolID": w.sp, "storagedomainID": w.sd}),
                ) else {
                    continue;
                };
                let vols: Vec<String> = vols
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                let p = json!({"imageID": img, "storagepoolID": w.sp, "storagedomainID": w.sd, "postZero": false, "force": false});
                (img, vols, false, "Image.delete", p)
            }
        };
        {
            let mut l = w.ledger.lock().unwrap();
            for v in &touched {
                l.unknown.insert(v.clone());
            }
        }
        let outcome = match c.call(method, params) {
            Ok(task) => wait(&c, &task),
            Err(cairn::client::ClientError::Rpc { .. }) => Some(false),
            Err(_) => None,
        };
        let mut l = w.ledger.lock().unwrap();
        match outcome {
            // Confirmed: the volumes are now known.
            Some(ok) => {
                for v in touched {
                    l.unknown.remove(&v);
                    // A volume is created once and never comes back once
                    // deleted: a creator's confirmation processed after a
                    // deleter's must not resurrect it in the ledger.
                    if ok && present {
                        l.known.entry(v).or_insert((image.clone(), true));
                    } else if ok {
                        l.known.insert(v, (image.clone(), false));
                    }
                }
                if ok && method == "Image.delete" {
                    l.deleted_images.insert(image);
                }
                w.ops.fetch_add(1, Ordering::SeqCst);
            }
            // cairnd died mid-call: the volumes' state is unknown.
            None => {
                for v in touched {
                    l.known.remove(&v);
                }
                if method == "Image.delete" {
                    l.uncertain_images.insert(image);
                }
                return;
            }
        }
    }
}

fn check(w: &World, socket: &Path, data: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let c = Client::new(Target::Unix(socket.to_path_buf()));
    // Every task reached a final state; clear them.
    match c.call("Host.getAllTasksStatuses", json!({})) {
        Ok(all) => {
            for (id, st) in all.as_object().unwrap() {
                if st["taskState"] != "finished" {
                    bad.push(format!("task {id} not final after restart: {st}"));
                } else {
                    let _ = c.call("Task.clear", json!({"taskID": id}));
                }
            }
        }
        Err(e) => bad.push(format!("cannot list tasks: {e}")),
    }
    let dump = match c.call("StorageDomain.dump", json!({"sd_id": w.sd})) {
        Ok(d) => d,
        Err(e) => return vec![format!("cannot list volumes: {e}")],
    };
    let vols = dump["volumes"].as_object().unwrap();
    let mut by_image: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for (id, v) in vols {
        if v["status"] != "OK" {
            bad.push(format!("volume {id} is {}", v["status"]));
        }
        by_image
            .entry(v["image"].as_str().unwrap())
            .or_default()
            .push(v);
    }
    for (img, chain) in &by_image {
        let leaves = chain.iter().filter(|v| v["voltype"] == "LEAF").count();
        let bases = chain.iter().filter(|v| v["parent"] == BLANK).count();
        if leaves != 1 || bases != 1 {
            bad.push(format!("image {img}: {leaves} leaves, {bases} bases"));
        }
    }
    {
        let l = w.ledger.lock().unwrap();
        for (vol, (img, present)) in &l.known {
            let present = *present && !l.deleted_images.contains(img);
            if l.uncertain_images.contains(img) {
                continue;
            }
            if !l.unknown.contains(vol) && vols.contains_key(vol) != present {
                bad.push(format!(
                    "volume {vol} should be {}",
                    if present { "present" } else { "absent" }
                ));
            }
        }
    }
    // No leftovers on disk.
    let root = data.join("storage").join("local").join(&w.sd);
    let Ok(images) = std::fs::read_dir(root.join("images")) else {
        return bad;
    };
    for entry in images.flatten() {
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with("_remove_me_") {
            bad.push(format!("leftover {name}"));
            continue;
        }
        let files: Vec<String> = std::fs::read_dir(entry.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        if files.is_empty() {
            bad.push(format!("empty image directory {name}"));
        }
        for f in &files {
            let vol = f.split('.').next().unwrap();
            if f.ends_with(".new") || !files.contains(&format!("{vol}.meta")) {
                bad.push(format!("leftover {name}/{f}"));
            }
        }
    }
    bad
}
