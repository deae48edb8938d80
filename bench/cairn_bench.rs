//! Load driver for bench/run.sh: drives a running cairnd through its
//! JSON-RPC API and prints one JSON result line per run. Any wrong result
//! (a failed task, a missing volume, a wrong count) aborts with an error.
//!
//!   cairn-bench create-delete --socket S --count N [--concurrency C]
//!   cairn-bench populate      --socket S --count N [--concurrency C]
//!   cairn-bench list          --socket S --expect N [--repeat R] [--capacity BYTES]
//!   cairn-bench tasks         --count N      (in-process: persistence on vs off)
//!   cairn-bench recovery      --count N      (in-process: recover N persisted tasks)
//!   cairn-bench locks         --count N      (in-process: resource manager)
//!   cairn-bench copy          --socket S --src IMG/VOL --dst IMG/VOL
//!                             (SDM.copy_data within the master domain)
//!   cairn-bench snapshots     --socket S --count N   (snapshot latency)
//!   cairn-bench prepare-chain --socket S --count N [--repeat R]
//!                                 (Image.prepare of chains of 1..N volumes)

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
    /// Every listed volume's capacity (`list`).
    capacity: u64,
    src: String,
    dst: String,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let mut o = Opts {
        socket: PathBuf::new(),
        count: 1000,
        concurrency: 1,
        repeat: 5,
        capacity: 1 << 30,
        src: String::new(),
        dst: String::new(),
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
            "--capacity" => o.capacity = v.parse().unwrap_or_else(|_| fail("bad capacity")),
            "--src" => o.src = v,
            "--dst" => o.dst = v,
            _ => fail(&format!("unknown option {a}")),
        }
    }
    match cmd.as_str() {
        "create-delete" => run_parallel(&o, true),
        "populate" => run_parallel(&o, false),
        "list" => list(&o),
        "tasks" => engine_bench::tasks(o.count),
        "recovery" => engine_bench::recovery(o.count),
        "locks" => engine_bench::locks(o.count),
        "copy" => copy(&o),
        "snapshots" => snapshots(&o),
        "prepare-chain" => prepare_chain(&o),
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

/// Creates a thin 1 GiB qcow2 volume, a snapshot of `parent` (in the same
/// image) when given, and waits for it.
fn create_thin(c: &Client, (sp, sd): (&str, &str), img: &str, vol: &str, parent: Option<&str>) {
    let (src_img, src_vol) = match parent {
        Some(p) => (img, p),
        None => (BLANK, BLANK),
    };
    let t = call(
        c,
        "Volume.create",
        json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img,
               "size": "1073741824", "volFormat": "COW", "preallocate": "SPARSE", "diskType": "DATA",
               "desc": "bench", "srcImgUUID": src_img, "srcVolUUID": src_vol}),
    );
    wait_ok(c, &t);
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
                    create_thin(&c, (&sp, &sd), &img, &vol, None);
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
            .find(|(_, v)| v["status"] != "OK" || v["capacity"] != json!(o.capacity))
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

/// Times one SDM.copy_data job from start to done.
fn copy(o: &Opts) {
    let c = client(o);
    let (_, sd) = pool_and_domain(&c);
    let endpoint = |spec: &str| {
        let (img, vol) = spec
            .split_once('/')
            .unwrap_or_else(|| fail("--src/--dst take IMAGE/VOLUME"));
        json!({"sd_id": sd, "img_id": img, "vol_id": vol})
    };
    let job = cairn::types::Uuid::new_v4().to_string();
    let start = Instant::now();
    call(
        &c,
        "SDM.copy_data",
        json!({"job_id": job, "source": endpoint(&o.src), "destination": endpoint(&o.dst)}),
    );
    loop {
        let j = call(&c, "Host.getJobs", json!({"job_ids": [job]}))[&job].clone();
        match j["status"].as_str() {
            Some("pending" | "running") => std::thread::sleep(Duration::from_micros(500)),
            Some("done") => break,
            _ => fail(&format!("copy failed: {j}")),
        }
    }
    println!(
        "{}",
        json!({"op": "copy", "seconds": start.elapsed().as_secs_f64()})
    );
}

/// Latency of snapshot creation through the API (call to task finished),
/// one snapshot on each of `count` fresh images; checks every snapshot.
fn snapshots(o: &Opts) {
    let c = client(o);
    let (sp, sd) = pool_and_domain(&c);
    let create = |img: &str, vol: &str, parent: &str| {
        let src_img = if parent == BLANK { BLANK } else { img };
        call(
            &c,
            "Volume.create",
            json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img,
                   "size": "10737418240", "volFormat": "COW", "preallocate": "SPARSE", "diskType": "DATA",
                   "desc": "bench", "srcImgUUID": src_img, "srcVolUUID": parent}),
        )
    };
    let mut latencies = Vec::new();
    for _ in 0..o.count {
        let (img, base, snap) = (
            cairn::types::Uuid::new_v4().to_string(),
            cairn::types::Uuid::new_v4().to_string(),
            cairn::types::Uuid::new_v4().to_string(),
        );
        wait_ok(&c, &create(&img, &base, BLANK));
        let start = Instant::now();
        let t = create(&img, &snap, &base);
        wait_ok(&c, &t);
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        let info = call(
            &c,
            "Volume.getInfo",
            json!({"volumeID": snap, "storagepoolID": sp, "storagedomainID": sd, "imageID": img}),
        );
        if info["parent"] != json!(base) || info["status"] != "OK" {
            fail(&format!("snapshot {snap} is wrong: {info}"));
        }
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "{}",
        json!({"op": "snapshots", "count": o.count, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
    );
}

/// Builds one chain of `count` thin 1 GiB qcow2 volumes (a base and its
/// snapshots), then times `Image.prepare` (activating every LV of the
/// chain not active yet) and `Image.teardown` of chains of 1, 10, 25 and
/// `count` volumes; each prepared chain must read through to its base.
/// The chain is deleted at the end.
fn prepare_chain(o: &Opts) {
    let c = client(o);
    let (sp, sd) = pool_and_domain(&c);
    let img = cairn::types::Uuid::new_v4().to_string();
    let mut chain: Vec<String> = Vec::new();
    for _ in 0..o.count {
        let vol = cairn::types::Uuid::new_v4().to_string();
        create_thin(&c, (&sp, &sd), &img, &vol, chain.last().map(String::as_str));
        chain.push(vol);
    }
    let mut depths: Vec<usize> = [1, 10, 25, o.count]
        .into_iter()
        .filter(|&d| d <= o.count)
        .collect();
    depths.dedup();
    let mut rows = Vec::new();
    for depth in depths {
        let ids = json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": chain[depth - 1]});
        let (mut prepare, mut teardown) = (Vec::new(), Vec::new());
        for _ in 0..o.repeat.max(1) {
            let start = Instant::now();
            let path = call(&c, "Image.prepare", ids.clone())["path"]
                .as_str()
                .unwrap_or_else(|| fail("prepare returned no path"))
                .to_string();
            prepare.push(start.elapsed().as_secs_f64());
            let out = std::process::Command::new("qemu-img")
                .args(["info", "-U", "--backing-chain", "--output", "json", &path])
                .output()
                .unwrap_or_else(|e| fail(&format!("qemu-img: {e}")));
            let infos: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| fail(&format!("qemu-img info of {path} failed")));
            if infos.as_array().map(Vec::len) != Some(depth) {
                fail(&format!("the chain at {path} is not {depth} volumes deep"));
            }
            let start = Instant::now();
            call(&c, "Image.teardown", ids.clone());
            teardown.push(start.elapsed().as_secs_f64());
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        rows.push(json!({"depth": depth, "prepare_s": median(&mut prepare), "teardown_s": median(&mut teardown)}));
    }
    // The chain goes, leaving the domain as it was.
    let t = call(
        &c,
        "Image.delete",
        json!({"imageID": img, "storagepoolID": sp, "storagedomainID": sd, "postZero": false, "force": false}),
    );
    wait_ok(&c, &t);
    println!(
        "{}",
        json!({"op": "prepare-chain", "count": o.count, "chains": rows})
    );
}

/// Benchmarks of the engine's own machinery, run in this process.
mod engine_bench {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use cairn::backend::Part;
    use cairn::engine::resources::{Mode, Resource, ResourceManager};
    use cairn::engine::tasks::recovery::{Commit, RecoveryPlan, Step, TaskRecord};
    use cairn::engine::tasks::TaskManager;
    use cairn::engine::{Engine, EngineConfig, TaskState};
    use cairn::types::Uuid;
    use serde_json::json;

    use super::fail;

    /// Tasks per second for the same workload (queue, declare a plan,
    /// finish), persisted in a tasks directory on the data file system, or
    /// kept in memory only.
    pub fn tasks(count: usize) {
        let dir =
            tempfile::tempdir_in(".").unwrap_or_else(|_| tempfile::tempdir().expect("tempdir"));
        let sd = Uuid::new_v4();
        let run = |store: Option<&std::path::Path>| -> f64 {
            let m = TaskManager::new(1, count + 1);
            let start = Instant::now();
            let mut ids = Vec::with_capacity(count);
            for i in 0..count {
                let id = m
                    .spawn("bench", store, move |ctx| {
                        let (img, vol) = (Uuid::nil(), Uuid::from_u128(i as u128));
                        ctx.plan(RecoveryPlan {
                            undo: vec![Step::RemovePart {
                                sd,
                                img,
                                vol,
                                part: Part::Data,
                            }],
                            redo: Vec::new(),
                            commit: Some(Commit::VolumeExists { sd, img, vol }),
                        })
                    })
                    .unwrap_or_else(|e| fail(&format!("spawn: {e}")));
                ids.push(id);
            }
            for id in ids {
                let st = m
                    .wait(id, Duration::from_secs(60))
                    .unwrap_or_else(|e| fail(&e.to_string()));
                if st.state != TaskState::Finished || st.error.is_some() {
                    fail(&format!("task {id} failed: {:?}", st.error));
                }
            }
            count as f64 / start.elapsed().as_secs_f64()
        };
        let off = run(None);
        let on = run(Some(dir.path()));
        let records = std::fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        if records != count {
            fail(&format!("{records} records persisted, expected {count}"));
        }
        println!(
            "{}",
            json!({"op": "tasks", "count": count, "memory_per_second": off, "persisted_per_second": on})
        );
    }

    /// Time for an SPM start to load and recover `count` persisted tasks:
    /// half finished, half interrupted with a three-step rollback each.
    pub fn recovery(count: usize) {
        let data =
            tempfile::tempdir_in(".").unwrap_or_else(|_| tempfile::tempdir().expect("tempdir"));
        let engine =
            Engine::open(EngineConfig::new(data.path())).unwrap_or_else(|e| fail(&e.to_string()));
        let embedded = engine
            .ensure_embedded_default()
            .unwrap_or_else(|e| fail(&e.to_string()));
        let sd = embedded.domain;
        let tasks_dir = engine
            .domain(sd)
            .and_then(|d| d.master_dir())
            .unwrap_or_else(|e| fail(&e.to_string()))
            .join("tasks");
        engine
            .spm_stop(embedded.pool)
            .unwrap_or_else(|e| fail(&e.to_string()));
        for i in 0..count {
            let interrupted = i % 2 == 0;
            let (img, vol) = (Uuid::from_u128(i as u128), Uuid::new_v4());
            let rec = TaskRecord {
                state: if interrupted { "running" } else { "finished" }.into(),
                result: if interrupted { "" } else { "success" }.into(),
                plan: RecoveryPlan {
                    undo: [Part::Data, Part::Lease, Part::Metadata]
                        .into_iter()
                        .map(|part| Step::RemovePart { sd, img, vol, part })
                        .collect(),
                    redo: Vec::new(),
                    commit: Some(Commit::VolumeExists { sd, img, vol }),
                },
                ..TaskRecord::new(Uuid::new_v4(), "createVolume")
            };
            rec.save(&tasks_dir)
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
        let start = Instant::now();
        engine
            .spm_start_now(embedded.pool, None)
            .unwrap_or_else(|e| fail(&e.to_string()));
        let secs = start.elapsed().as_secs_f64();
        let all = engine.tasks.all();
        let finished = all
            .iter()
            .filter(|t| t.state == TaskState::Finished)
            .count();
        if all.len() != count || finished != count {
            fail(&format!(
                "{} tasks loaded, {finished} finished, expected {count}",
                all.len()
            ));
        }
        println!(
            "{}",
            json!({"op": "recovery", "count": count, "seconds": secs})
        );
    }

    /// Uncontended acquire/release latency, and throughput with 64 threads
    /// contending for four resources (three shared requests in four).
    pub fn locks(count: usize) {
        let m = ResourceManager::new();
        let r = Resource::image(Uuid::nil(), Uuid::from_u128(1));
        let start = Instant::now();
        for _ in 0..count {
            drop(
                m.acquire(&[(r.clone(), Mode::Exclusive)], Duration::from_secs(1))
                    .expect("lock"),
            );
        }
        let uncontended_ns = start.elapsed().as_nanos() as f64 / count as f64;

        let done = Arc::new(AtomicUsize::new(0));
        let per_thread = (count / 64).max(100);
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..64u64 {
                let (m, done) = (m.clone(), done.clone());
                s.spawn(move || {
                    let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                    for _ in 0..per_thread {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let res = Resource::image(Uuid::nil(), Uuid::from_u128((x % 4) as u128));
                        let mode = if x % 4 == 0 {
                            Mode::Exclusive
                        } else {
                            Mode::Shared
                        };
                        drop(
                            m.acquire(&[(res, mode)], Duration::from_secs(60))
                                .expect("no deadlock"),
                        );
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let total = done.load(Ordering::Relaxed);
        if total != per_thread * 64 || m.busy() != 0 {
            fail("lock benchmark lost requests");
        }
        let contended = total as f64 / start.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({"op": "locks", "uncontended_ns": uncontended_ns, "contended_64_per_second": contended})
        );
    }
}
