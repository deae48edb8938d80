//! The drive monitor: watches a running qemu's thin block volume through
//! QMP and grows it before the guest reaches the end.
//!
//! Cairn runs no guests; the VM manager registers each thin drive: qemu's
//! QMP socket, the block node that writes to the LV (the protocol node:
//! its highest written offset is what the guest uses of the LV), and the
//! volume. Cairn sets qemu's write threshold below the LV's end; on
//! `BLOCK_WRITE_THRESHOLD` (or a guest paused on ENOSPC, `BLOCK_IO_ERROR`)
//! it extends the volume (`Engine::request_extend`: at once on the SPM,
//! through the mailbox elsewhere), sets the next threshold, and resumes a
//! guest that paused for space.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::policy::Rate;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::primitives::qmp::{Qmp, QmpError};
use crate::types::Uuid;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the monitor waits for an event before it checks it should stop.
const EVENT_WAIT: Duration = Duration::from_millis(200);
/// After a failed extend, the next try (the guest still writes).
const RETRY: Duration = Duration::from_millis(500);
/// Between events, how often the monitor reads what the guest has written
/// (for the write rate and `DriveMonitor.list`; one cheap QMP query).
const SAMPLE: Duration = Duration::from_secs(1);
/// At the cap, how often the monitor looks whether the virtual size grew.
const CAP_CHECK: Duration = Duration::from_secs(10);

/// A drive to watch, as the VM manager registers it.
#[derive(Debug, Clone, Serialize)]
pub struct DriveSpec {
    pub qmp_socket: PathBuf,
    pub node_name: String,
    pub sp: Uuid,
    pub sd: Uuid,
    pub img: Uuid,
    pub vol: Uuid,
}

/// What `DriveMonitor.list` shows of a drive.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DriveStatus {
    /// "watching", "extending", "at-capacity", "stopped" or "failed".
    pub state: String,
    /// Bytes the LV maps on this host.
    pub room: u64,
    /// The highest offset the guest wrote on the LV.
    pub allocation: u64,
    pub threshold: u64,
    pub extends: u64,
    /// ENOSPC pauses seen.
    pub pauses: u64,
    pub write_rate_mib_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last extend cycles, oldest first (at most [`KEPT_CYCLES`]).
    pub cycles: Vec<Cycle>,
}

/// One extend cycle: from qemu's event to the guest able to write past
/// the old end (the LV grown and mapped on this host).
#[derive(Debug, Clone, Serialize)]
pub struct Cycle {
    pub total_ms: f64,
    /// From the event to the request (reading qemu's stats, sizing).
    pub wait_ms: f64,
    /// The request itself.
    #[serde(flatten)]
    pub request: super::Timings,
}

const KEPT_CYCLES: usize = 1000;

struct Drive {
    spec: DriveSpec,
    /// The most room the volume may get; read again when it is reached
    /// (`Volume.extendSize` raises it).
    cap: Mutex<u64>,
    status: Mutex<DriveStatus>,
    stop: AtomicBool,
    /// When qemu said the guest needs room (the cycle's start).
    asked_at: Mutex<Option<Instant>>,
}

/// The drives this host watches.
#[derive(Default)]
pub struct Drives {
    drives: Mutex<BTreeMap<Uuid, Arc<Drive>>>,
}

impl Engine {
    /// `DriveMonitor.add`: starts watching a thin drive; returns its id.
    pub fn monitor_drive(self: &Arc<Self>, spec: DriveSpec) -> Result<Uuid> {
        let pool = self.connected_pool(spec.sp)?;
        let dom = self.pool_domain(&pool, spec.sd)?;
        let md = dom.read_volume(spec.img, spec.vol)?;
        if dom.data_room(spec.img, spec.vol)?.is_none() {
            return Err(Error::NotThin {
                vol: spec.vol,
                reason:
                    "volumes of file domains grow as they are written; there is nothing to watch",
            });
        }
        super::refuse_thick(spec.vol, &md)?;
        if spec.node_name.is_empty() || spec.node_name.len() > 128 {
            return Err(Error::invalid("nodeName", "must be 1 to 128 characters"));
        }
        // Connect now, so a socket that is not qemu's fails the call.
        let mut qmp = Qmp::connect(&spec.qmp_socket, CONNECT_TIMEOUT)
            .map_err(|e| Error::invalid("qmpSocket", e.to_string()))?;
        let id = Uuid::new_v4();
        let (room, cap) = room_and_cap(self, &spec)?;
        let drive = Arc::new(Drive {
            cap: Mutex::new(cap),
            spec,
            status: Mutex::new(DriveStatus {
                state: "watching".into(),
                room,
                ..DriveStatus::default()
            }),
            stop: AtomicBool::new(false),
            asked_at: Mutex::new(None),
        });
        // The first threshold is set before the call returns: a wrong node
        // fails it, and the guest is watched from then on.
        let engine = Arc::downgrade(self);
        let need_extend = arm(&engine, &drive, &mut qmp, &Rate::default())
            .map_err(|e| Error::invalid("nodeName", e))?;
        self.thin
            .drives
            .drives
            .lock()
            .expect("drives")
            .insert(id, drive.clone());
        std::thread::Builder::new()
            .name("drive-monitor".into())
            .spawn(move || watch(engine, id, drive, qmp, need_extend))
            .map_err(|e| Error::io("cannot start the drive monitor", e))?;
        Ok(id)
    }

    /// `DriveMonitor.remove`.
    pub fn unmonitor_drive(&self, id: Uuid) -> Result<()> {
        let drive = self.thin.drives.drives.lock().expect("drives").remove(&id);
        match drive {
            Some(d) => {
                d.stop.store(true, Ordering::SeqCst);
                Ok(())
            }
            None => Err(Error::invalid(
                "monitorID",
                format!("no drive {id} is watched"),
            )),
        }
    }

    /// `DriveMonitor.list`.
    pub fn monitored_drives(&self) -> Vec<(Uuid, DriveSpec, DriveStatus)> {
        self.thin
            .drives
            .drives
            .lock()
            .expect("drives")
            .iter()
            .map(|(id, d)| {
                (
                    *id,
                    d.spec.clone(),
                    d.status.lock().expect("drive status").clone(),
                )
            })
            .collect()
    }
}

fn watch(engine: Weak<Engine>, id: Uuid, drive: Arc<Drive>, mut qmp: Qmp, mut need_extend: bool) {
    let spec = &drive.spec;
    let mut rate = Rate::default();
    let outcome = (|| -> std::result::Result<(), String> {
        let _ = qmp.set_read_timeout(EVENT_WAIT);
        let mut sampled = Instant::now();
        let mut cap_checked = Instant::now();
        while !drive.stop.load(Ordering::SeqCst) {
            if need_extend {
                let paused_for_space = drive.status.lock().expect("status").state == "paused";
                match extend(&engine, &drive, &mut qmp, &mut rate) {
                    Ok(()) => {
                        need_extend = arm(&engine, &drive, &mut qmp, &rate)?;
                        if paused_for_space || guest_paused_for_space(&mut qmp) {
                            qmp.execute("cont", json!({}))
                                .map_err(|e| format!("cannot resume the guest: {e}"))?;
                            tracing::info!(drive = %id, vol = %spec.vol, "guest resumed after its volume was extended");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(drive = %id, vol = %spec.vol, error = %e, "extend failed; trying again");
                        drive.status.lock().expect("status").error = Some(e.to_string());
                        std::thread::sleep(RETRY);
                    }
                }
                continue;
            }
            match qmp.next_event() {
                Ok(Some(ev)) => need_extend = handle_event(&drive, &ev, &mut rate),
                Ok(None) if sampled.elapsed() >= SAMPLE => {
                    sampled = Instant::now();
                    let written = allocation(&mut qmp, &spec.node_name)?;
                    rate.observe(sampled, written);
                    let mut st = drive.status.lock().expect("status");
                    st.allocation = written;
                    st.write_rate_mib_s = rate.bytes_per_sec() / (1u64 << 20) as f64;
                    // A missed event must not cost a pause.
                    need_extend = st.threshold > 0 && written >= st.threshold;
                    if st.threshold == 0 && cap_checked.elapsed() >= CAP_CHECK {
                        drop(st);
                        cap_checked = Instant::now();
                        need_extend = cap_grew(&engine, &drive, &mut qmp, &rate)?;
                    }
                }
                Ok(None) => {}
                Err(QmpError::Closed) => return Err("qemu closed its QMP socket".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })();
    let mut st = drive.status.lock().expect("status");
    match outcome {
        Ok(()) => st.state = "stopped".into(),
        Err(e) => {
            tracing::warn!(drive = %id, vol = %spec.vol, error = %e, "drive monitor ended");
            st.state = "failed".into();
            st.error = Some(e);
        }
    }
}

/// Whether an event asks for room; records what it tells.
fn handle_event(drive: &Drive, ev: &Value, rate: &mut Rate) -> bool {
    let wants = wants_room(drive, ev, rate);
    if wants {
        drive
            .asked_at
            .lock()
            .expect("asked at")
            .get_or_insert_with(Instant::now);
    }
    wants
}

fn wants_room(drive: &Drive, ev: &Value, rate: &mut Rate) -> bool {
    let data = &ev["data"];
    let ours = data["node-name"].as_str() == Some(drive.spec.node_name.as_str());
    match ev["event"].as_str() {
        Some("BLOCK_WRITE_THRESHOLD") if ours => {
            let reached = data["write-threshold"].as_u64().unwrap_or(0)
                + data["amount-exceeded"].as_u64().unwrap_or(0);
            rate.observe(Instant::now(), reached);
            drive.status.lock().expect("status").allocation = reached;
            true
        }
        // qemu names the device (and, since 2.8, the node) that failed.
        Some("BLOCK_IO_ERROR") if data["nospace"].as_bool() == Some(true) => {
            let mut st = drive.status.lock().expect("status");
            st.pauses += 1;
            if data["action"].as_str() == Some("stop") {
                st.state = "paused".into();
            }
            true
        }
        _ => false,
    }
}

fn guest_paused_for_space(qmp: &mut Qmp) -> bool {
    qmp.execute("query-status", json!({}))
        .map(|s| s["running"] == json!(false) && s["status"] == json!("io-error"))
        .unwrap_or(false)
}

/// The highest offset written on the node (qemu's `wr_highest_offset`).
fn allocation(qmp: &mut Qmp, node: &str) -> std::result::Result<u64, String> {
    let stats = qmp
        .execute("query-blockstats", json!({"query-nodes": true}))
        .map_err(|e| e.to_string())?;
    stats
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node-name"].as_str() == Some(node)))
        .and_then(|n| n["stats"]["wr_highest_offset"].as_u64())
        .ok_or_else(|| format!("qemu has no block node {node:?}"))
}

/// Sets the write threshold for the room mapped here; true if the guest
/// is past it already, or has less room left than the policy keeps free
/// (a small LV: registered late, or made with a small `initialSize`).
fn arm(
    engine: &Weak<Engine>,
    drive: &Drive,
    qmp: &mut Qmp,
    rate: &Rate,
) -> std::result::Result<bool, String> {
    let e = engine.upgrade().ok_or("cairnd is stopping")?;
    let s = &drive.spec;
    let room = drive.status.lock().expect("status").room;
    let cap = *drive.cap.lock().expect("cap");
    let policy = e.thin.settings.policy;
    let threshold = policy.threshold(room, rate, cap);
    let written = allocation(qmp, &s.node_name)?;
    qmp.execute(
        "block-set-write-threshold",
        json!({"node-name": s.node_name, "write-threshold": threshold}),
    )
    .map_err(|e| e.to_string())?;
    let mut st = drive.status.lock().expect("status");
    st.room = room;
    st.threshold = threshold;
    st.allocation = st.allocation.max(written);
    st.write_rate_mib_s = rate.bytes_per_sec() / (1u64 << 20) as f64;
    if threshold == 0 {
        st.state = "at-capacity".into();
        return Ok(false);
    }
    if st.state != "paused" {
        st.state = "watching".into();
    }
    Ok(written >= threshold || room.saturating_sub(written) < policy.threshold_free(rate))
}

/// At the cap: if the virtual size grew since (`Volume.extendSize`), the
/// drive is armed again; true if it needs room now.
fn cap_grew(
    engine: &Weak<Engine>,
    drive: &Drive,
    qmp: &mut Qmp,
    rate: &Rate,
) -> std::result::Result<bool, String> {
    let Some(e) = engine.upgrade() else {
        return Ok(false);
    };
    let s = &drive.spec;
    let capacity = e
        .connected_pool(s.sp)
        .and_then(|pool| e.pool_domain(&pool, s.sd))
        .and_then(|dom| dom.read_volume(s.img, s.vol))
        .map(|md| md.capacity);
    if !capacity.is_ok_and(|c| super::max_room(c) > *drive.cap.lock().expect("cap")) {
        return Ok(false);
    }
    let Ok((room, cap)) = room_and_cap(&e, s) else {
        return Ok(false);
    };
    *drive.cap.lock().expect("cap") = cap;
    drive.status.lock().expect("status").room = room;
    arm(engine, drive, qmp, rate)
}

/// The room mapped here (remapped to what the LV has) and the cap: lvm
/// commands, so only at registration and when the cap is reached.
fn room_and_cap(e: &Engine, s: &DriveSpec) -> Result<(u64, u64)> {
    let pool = e.connected_pool(s.sp)?;
    let dom = e.pool_domain(&pool, s.sd)?;
    let md = dom.read_volume(s.img, s.vol)?;
    let room = dom.refresh_room(s.img, s.vol)?;
    Ok((room, super::max_room(md.capacity)))
}

fn extend(
    engine: &Weak<Engine>,
    drive: &Drive,
    qmp: &mut Qmp,
    rate: &mut Rate,
) -> std::result::Result<(), String> {
    let e = engine.upgrade().ok_or("cairnd is stopping")?;
    let s = &drive.spec;
    let written = allocation(qmp, &s.node_name)?;
    rate.observe(Instant::now(), written);
    let room = drive.status.lock().expect("status").room;
    let cap = *drive.cap.lock().expect("cap");
    let next = e.thin.settings.policy.next_room(room, written, rate, cap);
    {
        let mut st = drive.status.lock().expect("status");
        st.allocation = written;
        if st.state != "paused" {
            st.state = "extending".into();
        }
    }
    if next <= room {
        return Ok(());
    }
    let started = Instant::now();
    let asked = drive.asked_at.lock().expect("asked at").unwrap_or(started);
    let done = e
        .request_extend(s.sp, s.sd, s.img, s.vol, next)
        .map_err(|e| e.to_string())?;
    *drive.asked_at.lock().expect("asked at") = None;
    let mut st = drive.status.lock().expect("status");
    if st.cycles.len() == KEPT_CYCLES {
        st.cycles.remove(0);
    }
    st.cycles.push(Cycle {
        total_ms: asked.elapsed().as_secs_f64() * 1e3,
        wait_ms: started.duration_since(asked).as_secs_f64() * 1e3,
        request: done.times.clone(),
    });
    st.extends += 1;
    st.room = done.size;
    st.error = None;
    if st.state == "paused" {
        st.state = "extending".into();
    }
    tracing::info!(vol = %s.vol, from = room, to = done.size, written, rate_mib_s = rate.bytes_per_sec() / (1u64 << 20) as f64, ms = started.elapsed().as_secs_f64() * 1e3, "drive extended");
    Ok(())
}
