//! A real GlusterFS volume (glusterd on this machine, one brick): a
//! GLUSTERFS domain on it, and a brick stopped under the mount, which makes
//! reads hang in the kernel while cairnd keeps answering.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// A one-brick Gluster volume, stopped and deleted when dropped.
pub struct GlusterVolume {
    pub name: String,
    _brick: tempfile::TempDir,
}

fn gluster(args: &[&str]) -> std::process::Output {
    Command::new("gluster")
        .arg("--mode=script")
        .args(args)
        .output()
        .expect("gluster")
}

impl GlusterVolume {
    pub fn create() -> Option<GlusterVolume> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP: glusterd needs root");
            return None;
        }
        if Command::new("glusterd").arg("--version").output().is_err() {
            eprintln!("SKIP: GlusterFS is not installed (scripts/deps.sh installs it)");
            return None;
        }
        // One glusterd serves the machine; start it if nobody has.
        if !gluster(&["volume", "list"]).status.success() {
            let log = std::env::temp_dir().join("cairn-glusterd.log");
            let _ = Command::new("glusterd")
                .arg(format!("--log-file={}", log.display()))
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !gluster(&["volume", "list"]).status.success() {
                assert!(Instant::now() < deadline, "glusterd did not start");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let brick = tempfile::tempdir().unwrap();
        let name = format!("cairn-{}", &uuid()[..8]);
        let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
        let out = gluster(&[
            "volume",
            "create",
            &name,
            &format!("{}:{}", host.trim(), brick.path().join("b").display()),
            "force",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = gluster(&["volume", "start", &name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(GlusterVolume {
            name,
            _brick: brick,
        })
    }

    /// The brick server process of this volume.
    fn brick_pid(&self) -> String {
        let out = Command::new("pgrep")
            .args(["-f", &format!("glusterfsd.*{}", self.name)])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn signal_brick(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.brick_pid()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for GlusterVolume {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-CONT", "-f", &format!("glusterfsd.*{}", self.name)])
            .status();
        let _ = gluster(&["volume", "stop", &self.name, "force"]);
        let _ = gluster(&["volume", "delete", &self.name]);
    }
}

#[test]
fn glusterfs_domain_and_a_brick_stopped_under_it() {
    let Some(vol) = GlusterVolume::create() else {
        return;
    };
    let d = Daemon::start_with(Opts {
        env: vec![
            ("CAIRN_MONITOR_INTERVAL".into(), "0.1".into()),
            ("CAIRN_MONITOR_TIMEOUT".into(), "1".into()),
        ],
        ..Default::default()
    });
    let (sp, local) = d.embedded();
    let spec = format!("127.0.0.1:/{}", vol.name);
    let conn = json!({"id": "gluster", "connection": spec});
    let st = d.call(
        "StoragePool.connectStorageServer",
        json!({"storagepoolID": BLANK, "domainType": "GLUSTERFS", "connectionParams": [conn]}),
    );
    assert_eq!(st[0]["status"], 0, "{st}\n{}", d.log());
    let sd = uuid();
    d.call(
        "StorageDomain.create",
        json!({"storagedomainID": sd, "domainType": "GLUSTERFS", "typeArgs": spec, "name": "gluster", "domainClass": "Data"}),
    );
    d.call(
        "StorageDomain.attach",
        json!({"storagedomainID": sd, "storagepoolID": sp}),
    );
    d.call(
        "StorageDomain.activate",
        json!({"storagedomainID": sd, "storagepoolID": sp}),
    );
    d.new_image(&sp, &sd, json!({"size": "1048576"}));
    let mnt = d.data().join("mnt").join(spec.replace('/', "_"));
    vdsm_check(&mnt.join(&sd));

    d.call(
        "Host.startMonitoringDomain",
        json!({"sdUUID": sd, "hostID": 1}),
    );
    let stats =
        |d: &Daemon| d.call("Host.getStorageRepoStats", json!({"domains": [sd]}))[&sd].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats(&d)["valid"] != true {
        assert!(Instant::now() < deadline, "{}", stats(&d));
        std::thread::sleep(Duration::from_millis(50));
    }

    // The brick stops: reads on the mount hang in the kernel.
    vol.signal_brick("-STOP");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = Instant::now();
        let v = stats(&d);
        assert!(t.elapsed() < Duration::from_secs(1), "stats answer at once");
        if v["valid"] == false {
            assert_eq!(v["code"], 379, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "never invalid: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // cairnd goes on: the local domain works.
    let t = Instant::now();
    d.create_volume(&sp, &local, &uuid(), &uuid(), json!({"size": "1048576"}));
    assert!(t.elapsed() < Duration::from_secs(5));
    d.call("Host.stopMonitoringDomain", json!({"sdUUID": sd}));
    let t = Instant::now();
    let log = d.data().join("cairnd.log");
    let dir = d.stop(false);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "cairnd stops: {:?}\n{}",
        t.elapsed(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Detach the hung mount before the data dir is removed (removing it
    // would walk into the mount and hang as well).
    let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    vol.signal_brick("-CONT");
    drop(dir);
}
