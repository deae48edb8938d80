//! Thin volumes on block domains grow on request (`Volume.requestExtend`)
//! and as a guest writes (the drive monitor, with qemu-storage-daemon as
//! the guest's qemu); the SPM serves a VDSM host's mailbox message written
//! byte by byte from the reference. Two hosts and failover are in
//! `multihost.rs`.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn request(d: &Daemon, ids: &Value, size: u64) -> Value {
    let mut p = ids.clone();
    p["newSize"] = json!(size.to_string());
    d.call("Volume.requestExtend", p)
}

fn request_err(d: &Daemon, ids: &Value, size: u64) -> (i64, String) {
    let mut p = ids.clone();
    p["newSize"] = json!(size.to_string());
    d.call_err("Volume.requestExtend", p)
}

fn ids(sp: &str, sd: &str, img: &str, vol: &str) -> Value {
    json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol})
}

/// The size of a device (or file) as this host maps it.
pub fn device_size(path: &Path) -> u64 {
    std::fs::File::open(path)
        .unwrap()
        .seek(SeekFrom::End(0))
        .unwrap()
}

fn thin(size: u64) -> Value {
    json!({"volFormat": "COW", "preallocate": "SPARSE", "size": size.to_string()})
}

/// A pool (host 1, SPM) of one block domain.
fn block_spm(luns: &TestLuns) -> (Daemon, String, String) {
    let d = Daemon::start_with_luns(luns);
    let sd = d.block_domain(luns, 0, "thin");
    let sp = d.spm_of_pool(&[&sd]);
    (d, sp, sd)
}

#[test]
fn a_thin_volume_starts_at_1_gib_and_grows_on_request_up_to_its_cap() {
    let Some(luns) = TestLuns::new(1) else { return };
    let (d, sp, sd) = block_spm(&luns);
    let (img, vol) = d.new_image(&sp, &sd, thin(4 * GIB));
    let v = ids(&sp, &sd, &img, &vol);
    let info = d.volume_info(&sp, &sd, &img, &vol);
    assert_eq!(info["apparentsize"], GIB, "{info}");
    assert_eq!(info["capacity"], 4 * GIB, "{info}");
    assert!(info["thin"]["written"].is_null(), "not watched: {info}");

    let r = request(&d, &v, 2 * GIB + 1);
    assert_eq!(r["extended"], true, "{r}");
    assert!(r["size"].as_u64().unwrap() >= 2 * GIB + MIB, "{r}");
    // Idempotent: the room is there.
    let again = request(&d, &v, 2 * GIB);
    assert_eq!(again["extended"], false, "{again}");
    assert_eq!(again["size"], r["size"]);
    let info = d.volume_info(&sp, &sd, &img, &vol);
    assert_eq!(info["apparentsize"], r["size"]);

    // 1.1 times the virtual size is the cap (lvm rounds to 128 MiB).
    let cap = (4 * GIB + 4 * GIB / 10).next_multiple_of(MIB);
    let (code, msg) = request_err(&d, &v, cap + MIB);
    assert_eq!(code, 232, "{msg}");
    assert!(msg.contains("1.1 times"), "{msg}");
    // The CLI: `cairn volume grow`, for people and (--json) scripts.
    let r = crate::cli::json_out(
        &d,
        &[
            "volume",
            "grow",
            &img,
            &vol,
            "--size",
            &cap.to_string(),
            "--domain",
            &sd,
        ],
    );
    assert!(r["size"].as_u64().unwrap() >= cap, "{r}");
    let text = crate::cli::cairn(
        &d,
        &[
            "volume", "grow", &img, &vol, "--size", "1G", "--domain", &sd,
        ],
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("holds that much already"), "{text}");

    // What grew holds data: the guest writes past the first gigabyte.
    d.with_prepared((&sp, &sd), &img, &vol, |path| {
        assert!(device_size(path) >= cap);
        qemu_io(path, "qcow2", "write -P 3 3G 8M");
        qemu_io(path, "qcow2", "read -P 3 3G 8M");
    });
    vdsm_check_block(&sd, &luns);
}

#[test]
fn extension_refuses_thick_unknown_and_outsized_requests_and_changes_nothing() {
    let Some(luns) = TestLuns::new(1) else { return };
    let d = Daemon::start_with_luns(&luns);
    let sd = d.block_domain(&luns, 0, "thin");
    let (sp, master) = (uuid(), sd.clone());
    d.call(
        "StoragePool.create",
        json!({"storagepoolID": sp, "name": "p", "masterSdUUID": master, "masterVersion": 1, "domainList": [sd]}),
    );
    // A host id beyond the mailbox's 249 blocks cannot ask the SPM.
    d.call(
        "StoragePool.connect",
        json!({"storagepoolID": sp, "hostID": 300, "scsiKey": "", "masterSdUUID": master, "masterVersion": 1}),
    );
    d.spm_start(&sp);
    let (img, vol) = d.new_image(&sp, &sd, thin(GIB));
    d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    let v = ids(&sp, &sd, &img, &vol);
    let (code, msg) = request_err(&d, &v, 1100 * MIB);
    assert_eq!(code, 554, "{msg}");
    assert!(msg.contains("host id 300"), "{msg}");
    d.call(
        "StoragePool.disconnect",
        json!({"storagepoolID": sp, "hostID": 300, "scsiKey": ""}),
    );
    d.call(
        "StoragePool.connect",
        json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": master, "masterVersion": 1}),
    );
    d.spm_start(&sp);

    let (raw_img, raw) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (128 * MIB).to_string()}),
    );
    let (code, msg) = request_err(&d, &ids(&sp, &sd, &raw_img, &raw), 256 * MIB);
    assert_eq!(code, 233, "{msg}");
    assert!(msg.contains("RAW"), "{msg}");
    let (pre_img, pre) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "COW", "preallocate": "PREALLOCATED", "size": GIB.to_string(), "initialSize": (256 * MIB).to_string()}),
    );
    let (code, msg) = request_err(&d, &ids(&sp, &sd, &pre_img, &pre), 512 * MIB);
    assert_eq!(code, 233, "{msg}");
    assert!(msg.contains("preallocated"), "{msg}");
    let (code, msg) = request_err(&d, &ids(&sp, &sd, &img, &uuid()), 512 * MIB);
    assert_eq!(code, 201, "{msg}");
    let before = d.volume_info(&sp, &sd, &img, &vol)["apparentsize"].clone();
    let (code, _) = request_err(&d, &v, 2 * GIB);
    assert_eq!(code, 232);
    // More than the VG holds (its LUN is 12 GiB): 504, saying what is free.
    let (big_img, big) = d.new_image(&sp, &sd, thin(100 * GIB));
    let (code, msg) = request_err(&d, &ids(&sp, &sd, &big_img, &big), 50 * GIB);
    assert_eq!(code, 504, "{msg}");
    assert!(msg.contains("bytes free"), "{msg}");
    assert_eq!(d.volume_info(&sp, &sd, &big_img, &big)["apparentsize"], GIB);
    // A deleted volume is unknown.
    assert_eq!(d.volume_info(&sp, &sd, &img, &vol)["apparentsize"], before);
    d.task_ok(&d.call(
        "Image.delete",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": false, "force": false}),
    ));
    let (code, msg) = request_err(&d, &v, 1100 * MIB);
    assert!([201, 268].contains(&code), "{code} {msg}");

    // A file domain's volumes grow as they are written: nothing to do.
    let f = Daemon::start();
    let (fsp, fsd) = f.embedded();
    let (fimg, fvol) = f.new_image(&fsp, &fsd, thin(GIB));
    let r = request(&f, &ids(&fsp, &fsd, &fimg, &fvol), 512 * MIB);
    assert_eq!(r["extended"], false, "{r}");
    assert!(r["note"].as_str().unwrap().contains("file domains"), "{r}");
}

/// A request written as a VDSM host writes it (the reference's table, by
/// hand, with `dd oflag=direct` as VDSM does) reaches a Cairn SPM, which
/// extends the volume and replies in the host's outbox block.
#[test]
fn a_vdsm_hosts_mailbox_request_is_served_by_a_cairn_spm() {
    let Some(luns) = TestLuns::new(1) else { return };
    let (d, sp, sd) = block_spm(&luns);
    let (img, vol) = d.new_image(&sp, &sd, thin(4 * GIB));
    let le = |id: &str| {
        let hex = id.replace('-', "");
        let mut b: Vec<u8> = (0..32)
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        b.reverse();
        b
    };
    let mut msg = b"1xtnd".to_vec();
    msg.extend(le(&sd));
    msg.extend(le(&vol));
    msg.extend(format!("{:016x}", 3000u64).as_bytes()); // MiB
    msg.extend([b'0'; 11]);
    assert_eq!(msg.len(), 64);
    let host = 5u64;
    let mut block = vec![0u8; 4096];
    block[64 * 2..64 * 3].copy_from_slice(&msg); // slot 2
    let sum: u32 = block[..4092].iter().map(|&b| u32::from(b)).sum();
    block[4092..].copy_from_slice(&sum.to_le_bytes());
    let inbox = format!("/dev/{sd}/inbox");
    let outbox = format!("/dev/{sd}/outbox");
    let dd_write = |bytes: &[u8], seek: u64| {
        let mut child = Command::new("dd")
            .args([
                &format!("of={inbox}"),
                "bs=4096",
                "count=1",
                &format!("seek={seek}"),
                "oflag=direct",
                "conv=notrunc",
                "status=none",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), bytes).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    };
    dd_write(&block, host);
    let mut event = vec![0u8; 4096];
    event[..4].copy_from_slice(b"\0evt");
    event[4..20].copy_from_slice(&uuid().replace('-', "").as_bytes()[..16]);
    dd_write(&event, 0);

    let started = Instant::now();
    let reply = loop {
        let mut out = vec![0u8; 4096];
        let mut f = std::fs::File::open(&outbox).unwrap();
        f.seek(SeekFrom::Start(host * 4096)).unwrap();
        f.read_exact(&mut out).unwrap();
        if out[128] != 0 {
            break out[128..192].to_vec();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reply: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // The reply is the request, size included (VDSM's success).
    assert_eq!(reply, msg);
    let info = d.volume_info(&sp, &sd, &img, &vol);
    assert!(
        info["apparentsize"].as_u64().unwrap() >= 3000 * MIB,
        "{info}"
    );
    // A message in block 0 (not a host's) is never served.
    let mut bogus = event.clone();
    bogus[64..128].copy_from_slice(&msg);
    dd_write(&bogus, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!d.log().contains("host=0"), "block 0 is not a host's");
}

struct StorageDaemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for StorageDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl StorageDaemon {
    /// qemu-storage-daemon as a guest's qemu: the LV (`file0`, the node
    /// the monitor watches) under a qcow2 node exported over NBD.
    fn start(lv: &Path) -> StorageDaemon {
        let dir = tempfile::tempdir().unwrap();
        let (qmp, nbd) = (dir.path().join("qmp.sock"), dir.path().join("nbd.sock"));
        let child = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!(
                "driver=host_device,node-name=file0,filename={},cache.direct=on",
                lv.display()
            ))
            .args(["--blockdev", "driver=qcow2,node-name=fmt0,file=file0"])
            .arg("--nbd-server")
            .arg(format!("addr.type=unix,addr.path={}", nbd.display()))
            .args(["--export", "type=nbd,id=e0,node-name=fmt0,writable=on"])
            .arg("--chardev")
            .arg(format!(
                "socket,id=qmp0,path={},server=on,wait=off",
                qmp.display()
            ))
            .args(["--monitor", "chardev=qmp0"])
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-storage-daemon");
        let started = Instant::now();
        while !(qmp.exists() && nbd.exists()) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "qsd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        StorageDaemon { child, dir }
    }

    fn qmp(&self) -> String {
        self.dir.path().join("qmp.sock").display().to_string()
    }

    /// Writes through the export as a guest would; false on an error
    /// (ENOSPC: the guest would have paused).
    fn write(&self, cmd: &str) -> bool {
        let nbd = self.dir.path().join("nbd.sock");
        Command::new("qemu-io")
            .arg("--image-opts")
            .arg(format!(
                "driver=nbd,export=fmt0,server.type=unix,server.path={}",
                nbd.display()
            ))
            .args(["-c", cmd])
            .output()
            .map(|o| {
                let out = String::from_utf8_lossy(&o.stdout);
                let ok = o.status.success() && !out.contains("error");
                if !ok {
                    eprintln!("qemu-io {cmd}: {out}{}", String::from_utf8_lossy(&o.stderr));
                }
                ok
            })
            .unwrap_or(false)
    }
}

/// The drive monitor grows a thin volume as qemu writes it: the write
/// threshold fires, the SPM extends, the monitor sets the next threshold;
/// the writer never meets the end of the LV, and what it wrote reads back.
#[test]
fn the_drive_monitor_grows_a_volume_ahead_of_its_writer() {
    drive_monitor_ahead_of_writer(8, None);
}

/// The test above: `chunks` writes of 256 MiB into a thin volume of 8 GiB
/// starting with `initial` bytes of room (None: the policy's start), less
/// than the writer needs. How many extends it takes depends on the write
/// rate (a fast writer gets one big step), so only "at least one" holds.
pub fn drive_monitor_ahead_of_writer(chunks: u64, initial: Option<u64>) {
    let Some(luns) = TestLuns::new(1) else { return };
    let (d, sp, sd) = block_spm(&luns);
    let mut spec = thin(8 * GIB);
    if let Some(bytes) = initial {
        spec["initialSize"] = json!(bytes.to_string());
    }
    let (img, vol) = d.new_image(&sp, &sd, spec);
    let v = ids(&sp, &sd, &img, &vol);
    let path = d.call("Image.prepare", v.clone())["path"]
        .as_str()
        .unwrap()
        .to_string();
    let guest = StorageDaemon::start(Path::new(&path));

    // Not qemu: refused, nothing watched.
    let (code, msg) = d.call_err(
        "DriveMonitor.add",
        json!({"qmpSocket": d.data().join("cairnd.sock"), "nodeName": "file0",
               "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol}),
    );
    assert_eq!(code, 1000, "{msg}");
    assert!(msg.contains("not a qemu QMP socket"), "{msg}");

    let mut add = v.clone();
    add["qmpSocket"] = json!(guest.qmp());
    add["nodeName"] = json!("no-such-node");
    let (code, msg) = d.call_err("DriveMonitor.add", add.clone());
    assert_eq!(code, 1000, "{msg}");
    assert!(msg.contains("no block node"), "{msg}");
    assert_eq!(d.call("DriveMonitor.list", json!({})), json!([]));
    add["nodeName"] = json!("file0");
    let id = d.call("DriveMonitor.add", add)["monitorID"].clone();
    if initial.is_some() {
        // Less room than the policy keeps free: extended at once.
        let asked = Instant::now();
        while d.call("DriveMonitor.list", json!({}))[0]["status"]["extends"] == 0 {
            assert!(
                asked.elapsed() < Duration::from_secs(10),
                "not extended at once"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let started = Instant::now();
    for i in 0..chunks {
        assert!(
            guest.write(&format!("write -P {} {}M 256M", i + 1, i * 256)),
            "write {i} failed: the writer met the end of the LV: {}",
            d.log()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let list = d.call("DriveMonitor.list", json!({}));
    let status = &list[0]["status"];
    assert_eq!(list[0]["monitorID"], id);
    // Volume.getInfo: virtual size, room and what the guest wrote.
    let info = d.volume_info(&sp, &sd, &img, &vol);
    assert_eq!(info["thin"]["monitorID"], id, "{info}");
    // As of the monitor's last look (each second between events).
    let asked = Instant::now();
    let mut info = info;
    while info["thin"]["written"].as_u64().unwrap() < chunks * 256 * MIB {
        assert!(asked.elapsed() < Duration::from_secs(5), "{info}");
        std::thread::sleep(Duration::from_millis(100));
        info = d.volume_info(&sp, &sd, &img, &vol);
    }
    assert_eq!(
        info["thin"]["maxRoom"],
        (8 * GIB + 8 * GIB / 10).next_multiple_of(MIB)
    );
    assert!(status["extends"].as_u64().unwrap() >= 1, "{list}");
    assert_eq!(status["pauses"], 0, "{list}");
    let room = status["room"].as_u64().unwrap();
    assert!(room > chunks * 256 * MIB, "{list}");
    // Each extend cycle, from qemu's event to the room mapped here.
    let cycles = status["cycles"].as_array().unwrap();
    assert_eq!(cycles.len() as u64, status["extends"].as_u64().unwrap());
    assert!(
        cycles.iter().all(|c| c["total_ms"].as_f64().unwrap() > 0.0),
        "{list}"
    );
    assert!(status["threshold"].as_u64().unwrap() < room, "{list}");
    eprintln!("{} MiB written in {secs:.1} s, {list}", chunks * 256);
    for i in 0..chunks {
        assert!(guest.write(&format!("read -P {} {}M 256M", i + 1, i * 256)));
    }

    // qemu goes away: the monitor says so.
    drop(guest);
    let gone = Instant::now();
    loop {
        let list = d.call("DriveMonitor.list", json!({}));
        if list[0]["status"]["state"] == "failed" {
            assert!(
                list[0]["status"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("closed"),
                "{list}"
            );
            break;
        }
        assert!(gone.elapsed() < Duration::from_secs(5), "{list}");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.call("DriveMonitor.remove", json!({"monitorID": id}));
    assert_eq!(d.call("DriveMonitor.list", json!({})), json!([]));
    d.call("Image.teardown", v);
}

/// A writable NBD export of a thin volume is watched without registration
/// (qemu-storage-daemon serves it, with a QMP socket): the LV grows as the
/// client writes, and the watch ends with the export. A read-only export
/// is not watched.
#[test]
fn a_writable_nbd_export_of_a_thin_volume_grows_as_its_client_writes() {
    let Some(luns) = TestLuns::new(1) else { return };
    let (d, sp, sd) = block_spm(&luns);
    let mut spec = thin(4 * GIB);
    spec["initialSize"] = json!((100 * MIB).to_string());
    let (img, vol) = d.new_image(&sp, &sd, spec);
    let start = |id: &str, readonly: bool| {
        d.call(
            "NBD.start_server",
            json!({"server_id": id, "config": {"sd_id": sd, "img_id": img, "vol_id": vol, "readonly": readonly}}),
        )
        .as_str()
        .unwrap()
        .to_string()
    };
    let id = uuid();
    start(&id, true);
    assert_eq!(d.call("DriveMonitor.list", json!({})), json!([]));
    d.call("NBD.stop_server", json!({"server_id": id}));

    let id = uuid();
    let url = start(&id, false);
    let list = d.call("DriveMonitor.list", json!({}));
    assert_eq!(list[0]["volumeID"], vol.as_str(), "{list}");
    let asked = Instant::now();
    // 128 MiB of room is less than the policy keeps free: grown at once.
    while d.call("DriveMonitor.list", json!({}))[0]["status"]["extends"] == 0 {
        assert!(asked.elapsed() < Duration::from_secs(10), "not extended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let io = |cmd: &str| {
        let out = Command::new("qemu-io")
            .args(["-f", "raw", "-c", cmd])
            .arg(&url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success() && !text.contains("failed"),
            "{cmd}: {text}"
        );
    };
    io("write -P 0x5a 0 768M");
    io("read -P 0x5a 0 768M");
    d.call("NBD.stop_server", json!({"server_id": id}));
    assert_eq!(d.call("DriveMonitor.list", json!({})), json!([]));
    let info = d.volume_info(&sp, &sd, &img, &vol);
    assert!(info["apparentsize"].as_u64().unwrap() > 768 * MIB, "{info}");
    d.with_prepared((&sp, &sd), &img, &vol, |path| {
        qemu_io(path, "qcow2", "read -P 0x5a 0 768M");
    });
}
