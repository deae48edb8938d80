//! Load driver for bench/run.sh: drives a running cairnd through its
//! JSON-RPC API and prints one JSON result line per run. Any wrong result
//! (a failed task, a missing volume, a wrong count) aborts with an error.
//!
//!   cairn-bench create-delete --socket S --count N [--concurrency C]
//!   cairn-bench populate      --socket S --count N [--concurrency C]
//!   cairn-bench list          --socket S --expect N [--repeat R]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::client::{Client, Target};
use serde_json::{json, Value};

const BLANK: &str = "00000000-0000-0000-0000-000000000000";

struct Opts {
    socket: PathBuf,
    count: usize,
    concurrency: usize,
    repeat: usize,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let mut o = Opts {
        socket: PathBuf::new(),
        count: 1000,
        concurrency: 1,
        repeat: 5,
    };
    while let Some(a) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| fail(&format!("{a} needs a value")));
        match a.as_str() {
            "--socket" => o.socket = v.into(),
            "--count" | "--expect" => o.count = v.parse().unwrap_or_else(|_| fail("bad count")),
            "--concurrency" => {
                o.concurrency = v.parse().unwrap_or_else(|_| fail("bad concurrency"))
            }
            "--repeat" => o.repeat = v.parse().unwrap_or_else(|_| fail("bad repeat")),
            _ => fail(&format!("unknown option {a}")),
        }
    }
    match cmd.as_str() {
        "create-delete" => run_parallel(&o, true),
        "populate" => run_parallel(&o, false),
        "list" => list(&o),
        _ => fail("usage: cairn-bench create-delete|populate|list --socket S ..."),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("cairn-bench: {msg}");
    std::process::exit(1)
}

fn client(o: &Opts) -> Client {
    Client::new(Target::Unix(o.socket.clone()))
}

fn call(c: &Client, method: &str, params: Value) -> Value {
    c.call(method, params)
        .unwrap_or_else(|e| fail(&format!("{method}: {e}")))
}

fn wait_ok(c: &Client, task: &Value) {
    loop {
        let st = call(c, "Task.getStatus", json!({"taskID": task}));
        if st["taskState"] == "finished" {
            if st["taskResult"] != "success" {
                fail(&format!("task failed: {st}"));
            }
            call(c, "Task.clear", json!({"taskID": task}));
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn pool_and_domain(c: &Client) -> (String, String) {
    let pools = call(c, "Host.getConnectedStoragePools", json!({}));
    let sp = pools[0]
        .as_str()
        .unwrap_or_else(|| fail("no connected pool"))
        .to_string();
    let info = call(c, "StoragePool.getInfo", json!({"storagepoolID": sp}));
    (
        sp,
        info["info"]["master_uuid"].as_str().unwrap().to_string(),
    )
}

/// Creates `count` thin 1 GiB qcow2 volumes (each in its own image) and,
/// for create-delete, deletes each right after; reports operations/s.
fn run_parallel(o: &Opts, delete: bool) {
    let (sp, sd) = pool_and_domain(&client(o));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..o.concurrency.max(1) {
            let (sp, sd, next) = (sp.clone(), sd.clone(), next.clone());
            s.spawn(move || {
                let c = client(o);
                while next.fetch_add(1, Ordering::Relaxed) < o.count {
                    let (img, vol) = (cairn::types::Uuid::new_v4().to_string(), cairn::types::Uuid::new_v4().to_string());
                    let t = call(
                        &c,
                        "Volume.create",
                        json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img,
                               "size": "1073741824", "volFormat": "COW", "preallocate": "SPARSE", "diskType": "DATA",
                               "desc": "bench", "srcImgUUID": BLANK, "srcVolUUID": BLANK}),
                    );
                    wait_ok(&c, &t);
                    if delete {
                        let t = call(
                            &c,
                            "Volume.delete",
                            json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": false, "force": false}),
                        );
                        wait_ok(&c, &t);
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let what = if delete {
        "create_delete_pairs"
    } else {
        "creates"
    };
    println!(
        "{}",
        json!({"op": what, "count": o.count, "concurrency": o.concurrency, "seconds": secs, "per_second": o.count as f64 / secs})
    );
}

/// Times a full listing (StorageDomain.dump: every volume with metadata and
/// sizes); checks the count.
fn list(o: &Opts) {
    let c = client(o);
    let (_, sd) = pool_and_domain(&c);
    let mut times = Vec::new();
    for _ in 0..o.repeat.max(1) {
        let start = Instant::now();
        let dump = call(&c, "StorageDomain.dump", json!({"sd_id": sd}));
        times.push(start.elapsed().as_secs_f64());
        let vols = dump["volumes"]
            .as_object()
            .unwrap_or_else(|| fail("dump has no volumes"));
        if vols.len() != o.count {
            fail(&format!(
                "listed {} volumes, expected {}",
                vols.len(),
                o.count
            ));
        }
        if let Some((id, bad)) = vols
            .iter()
            .find(|(_, v)| v["status"] != "OK" || v["capacity"] != json!(1u64 << 30))
        {
            fail(&format!("volume {id} listed wrongly: {bad}"));
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{}",
        json!({"op": "list", "count": o.count, "median_seconds": times[times.len() / 2], "runs": times})
    );
}
