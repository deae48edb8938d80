//! 64 clients issuing conflicting operations on the same images at once:
//! snapshots, deletes of the leaf, getInfo, creates. Everything finishes
//! (no deadlock), no volume is lost or duplicated, and every chain is
//! intact.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::client::{Client, ClientError, Target};
use serde_json::{json, Value};

use crate::common::*;

const CLIENTS: usize = 64;
const ROUNDS: usize = 16;
const IMAGES: usize = 4;

struct Shared {
    sp: String,
    sd: String,
    images: Vec<String>,
    /// Volumes whose create task succeeded / whose delete task succeeded.
    created: Mutex<BTreeSet<String>>,
    deleted: Mutex<BTreeSet<String>>,
}

/// Runs a verb that returns a task; waits; true if the task succeeded.
fn run_task(c: &Client, method: &str, params: Value) -> Result<bool, ClientError> {
    let task = c.call(method, params)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = c.call("Task.getStatus", json!({"taskID": task}))?;
        if st["taskState"] == "finished" {
            c.call("Task.clear", json!({"taskID": task}))?;
            return Ok(st["taskResult"] == "success");
        }
        assert!(
            Instant::now() < deadline,
            "task {task} did not finish: {st}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The leaf of an image as a client sees it now (may change at once).
fn leaf(c: &Client, s: &Shared, img: &str) -> Option<String> {
    let vols = c
        .call(
            "Image.getVolumes",
            json!({"imageID": img, "storagepoolID": s.sp, "storagedomainID": s.sd}),
        )
        .ok()?;
    vols.as_array()?.iter().filter_map(Value::as_str).find_map(|v| {
        let info = c
            .call("Volume.getInfo", json!({"volumeID": v, "storagepoolID": s.sp, "storagedomainID": s.sd, "imageID": img}))
            .ok()?;
        (info["voltype"] == "LEAF").then(|| v.to_string())
    })
}

/// Refusals a racing client may legitimately get: the leaf moved, the
/// volume went away, it gained a child.
fn expected_refusal(e: &ClientError) -> bool {
    matches!(e, ClientError::Rpc { code, .. } if [1000, 201, 204, 212, 268].contains(code))
}

fn client_loop(socket: std::path::PathBuf, s: Arc<Shared>, seed: u64) {
    let c = Client::new(Target::Unix(socket));
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..ROUNDS {
        let img = s.images[next() as usize % IMAGES].clone();
        match next() % 4 {
            0 => {
                // Snapshot the current leaf.
                let Some(parent) = leaf(&c, &s, &img) else {
                    continue;
                };
                let vol = uuid();
                let p = volume_params(
                    &s.sp,
                    &s.sd,
                    &img,
                    &vol,
                    json!({"srcImgUUID": img, "srcVolUUID": parent, "size": "1048576"}),
                );
                match run_task(&c, "Volume.create", p) {
                    Ok(true) => {
                        s.created.lock().unwrap().insert(vol);
                    }
                    Ok(false) => {}
                    Err(e) => assert!(expected_refusal(&e), "snapshot: {e}"),
                }
            }
            1 => {
                // Delete the current leaf (never the last volume: keep the base).
                let Some(vol) = leaf(&c, &s, &img) else {
                    continue;
                };
                let p = json!({"volumeID": vol, "storagepoolID": s.sp, "storagedomainID": s.sd, "imageID": img, "postZero": false, "force": false});
                let info = c.call("Volume.getInfo", json!({"volumeID": vol, "storagepoolID": s.sp, "storagedomainID": s.sd, "imageID": img}));
                if info.map(|i| i["parent"] == BLANK).unwrap_or(true) {
                    continue;
                }
                match run_task(&c, "Volume.delete", p) {
                    Ok(true) => {
                        s.deleted.lock().unwrap().insert(vol);
                    }
                    Ok(false) => {}
                    Err(e) => assert!(expected_refusal(&e), "delete: {e}"),
                }
            }
            2 => {
                // A second base volume in a busy image is always refused.
                let p = volume_params(&s.sp, &s.sd, &img, &uuid(), json!({"size": "1048576"}));
                match c.call("Volume.create", p) {
                    Err(e) => assert!(expected_refusal(&e), "second base: {e}"),
                    Ok(t) => panic!("a second base volume was accepted: task {t}"),
                }
            }
            _ => {
                // Readers see whole volumes only.
                if let Some(v) = leaf(&c, &s, &img) {
                    if let Ok(info) = c.call("Volume.getInfo", json!({"volumeID": v, "storagepoolID": s.sp, "storagedomainID": s.sd, "imageID": img})) {
                        assert_eq!(info["status"], "OK", "{info}");
                    }
                }
            }
        }
    }
}

#[test]
fn sixty_four_clients_on_the_same_images() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let mut images = Vec::new();
    let mut bases = BTreeSet::new();
    for _ in 0..IMAGES {
        let (img, base) = d.new_image(&sp, &sd, json!({"size": "1048576"}));
        images.push(img);
        bases.insert(base);
    }
    let s = Arc::new(Shared {
        sp: sp.clone(),
        sd: sd.clone(),
        images,
        created: Mutex::default(),
        deleted: Mutex::default(),
    });
    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (sock, s) = (d.socket.clone(), s.clone());
            std::thread::spawn(move || {
                client_loop(sock, s, 0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 7919))
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
    assert!(
        start.elapsed() < Duration::from_secs(300),
        "took {:?}",
        start.elapsed()
    );

    // No lost or duplicated volume: what exists is exactly bases + created - deleted.
    let created = s.created.lock().unwrap().clone();
    let deleted = s.deleted.lock().unwrap().clone();
    assert!(deleted.is_subset(&created), "only snapshots are deleted");
    let expected: BTreeSet<String> = bases
        .union(&created)
        .filter(|v| !deleted.contains(*v))
        .cloned()
        .collect();
    let dump = d.call("StorageDomain.dump", json!({"sd_id": sd}));
    let vols = dump["volumes"].as_object().unwrap();
    let present: BTreeSet<String> = vols.keys().cloned().collect();
    assert_eq!(
        present,
        expected,
        "{} created, {} deleted",
        created.len(),
        deleted.len()
    );
    assert!(!created.is_empty(), "the run made snapshots");
    eprintln!(
        "{CLIENTS} clients: {} snapshots, {} deletes, {} volumes left, {:?}",
        created.len(),
        deleted.len(),
        present.len(),
        start.elapsed()
    );

    // Every image is one linear chain: one base, one leaf, one child each.
    let mut by_image: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for v in vols.values() {
        assert_eq!(v["status"], "OK", "{v}");
        by_image
            .entry(v["image"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    for (img, chain) in &by_image {
        let leaves = chain.iter().filter(|v| v["voltype"] == "LEAF").count();
        assert_eq!(leaves, 1, "image {img}: {chain:?}");
        let bases = chain.iter().filter(|v| v["parent"] == BLANK).count();
        assert_eq!(bases, 1, "image {img}");
        let mut parents: Vec<&str> = chain
            .iter()
            .map(|v| v["parent"].as_str().unwrap())
            .collect();
        parents.sort();
        let n = parents.len();
        parents.dedup();
        assert_eq!(n, parents.len(), "image {img}: a volume with two children");
    }
    vdsm_check(&d.domain_dir(&sd));
    assert_eq!(
        d.call("Host.getAllTasksStatuses", json!({})),
        json!({}),
        "every task was cleared"
    );
}
