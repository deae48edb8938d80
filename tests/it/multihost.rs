//! Several hosts on one machine: a cairnd and a sanlock daemon each,
//! sharing a POSIXFS domain on a loop-mounted xfs (each host mounts the
//! same device at its own mount point).

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use crate::common::*;
use crate::sanlock::SanlockDaemon;

/// A cairnd that takes sanlock leases through `sanlock`, host `id`.
fn host(sanlock: &SanlockDaemon) -> Daemon {
    let env = [
        ("CAIRN_SHARED_LEASES", "sanlock".to_string()),
        ("SANLOCK_RUN_DIR", sanlock.run_dir().display().to_string()),
        ("CAIRN_SANLOCK_IO_TIMEOUT", "1".to_string()),
    ];
    let d = Daemon::start_with(Opts {
        embedded: false,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    });
    // The sanlock daemon (user sanlock) reaches the leases under the mount.
    std::fs::set_permissions(d.data(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn spm_status(d: &Daemon, sp: &str) -> Value {
    d.call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}))
}

#[test]
fn one_spm_at_a_time_through_sanlock() {
    let Some(fs) = LoopFs::new(300, "xfs", false) else {
        return;
    };
    let (Some(s1), Some(s2)) = (SanlockDaemon::start(), SanlockDaemon::start()) else {
        return;
    };
    let (a, b) = (host(&s1), host(&s2));
    let conn = json!({"id": "shared", "connection": fs.device, "vfs_type": "xfs"});
    for d in [&a, &b] {
        let st = d.call(
            "StoragePool.connectStorageServer",
            json!({"storagepoolID": BLANK, "domainType": "POSIXFS", "connectionParams": [conn]}),
        );
        assert_eq!(st[0]["status"], 0, "{st}");
    }
    let (sp, sd) = (uuid(), uuid());
    a.call(
        "StorageDomain.create",
        json!({"storagedomainID": sd, "domainType": "POSIXFS", "typeArgs": fs.device, "name": "shared", "domainClass": "Data"}),
    );
    a.call(
        "StoragePool.create",
        json!({"storagepoolID": sp, "name": "p", "masterSdUUID": sd, "masterVersion": 1, "domainList": [sd]}),
    );
    for (d, id) in [(&a, 1), (&b, 2)] {
        d.call(
            "StoragePool.connect",
            json!({"storagepoolID": sp, "hostID": id, "scsiKey": "", "masterSdUUID": sd, "masterVersion": 1}),
        );
    }

    // Host 1 becomes SPM; host 2 cannot while host 1 holds the lease.
    a.spm_start(&sp);
    assert_eq!(spm_status(&a, &sp)["spmStatus"], "SPM");
    let t = b.call(
        "StoragePool.spmStart",
        json!({"storagepoolID": sp, "prevID": -1, "prevLver": "-1", "enableScsiFencing": "false"}),
    );
    let st = b.wait_task(&t);
    assert_eq!(st["code"], 651, "{st}\n{}", b.log());
    assert_eq!(spm_status(&b, &sp)["spmStatus"], "Free");
    let (img, vol) = (uuid(), uuid());
    a.create_volume(&sp, &sd, &img, &vol, json!({"size": "1048576"}));
    assert_eq!(b.volume_info(&sp, &sd, &img, &vol)["status"], "OK");
    let (code, _) = b.call_err(
        "Volume.create",
        volume_params(&sp, &sd, &uuid(), &uuid(), json!({"size": "1048576"})),
    );
    assert_eq!(code, 654, "only the SPM writes metadata");

    // Host 1 steps down; host 2 takes over with the next lease version.
    a.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    b.spm_start(&sp);
    let st = spm_status(&b, &sp);
    assert_eq!(
        (st["spmStatus"].as_str(), st["spmId"].as_i64()),
        (Some("SPM"), Some(2)),
        "{st}"
    );
    assert_eq!(st["spmLver"], 2, "{st}");
    b.create_volume(
        &sp,
        &sd,
        &img,
        &uuid(),
        json!({"srcImgUUID": img, "srcVolUUID": vol, "size": "1048576"}),
    );
    let (code, _) = a.call_err(
        "Volume.create",
        volume_params(&sp, &sd, &uuid(), &uuid(), json!({"size": "1048576"})),
    );
    assert_eq!(code, 654);
    vdsm_check(
        &b.data()
            .join("mnt")
            .join(fs.device.replace('/', "_"))
            .join(&sd),
    );

    b.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    for (d, id) in [(&a, 1), (&b, 2)] {
        d.call(
            "StoragePool.disconnect",
            json!({"storagepoolID": sp, "hostID": id, "scsiKey": ""}),
        );
        let st = d.call(
            "StoragePool.disconnectStorageServer",
            json!({"storagepoolID": BLANK, "domainType": "POSIXFS", "connectionParams": [conn]}),
        );
        assert_eq!(
            st[0]["status"], 0,
            "unmounted once the lockspace is left: {st}"
        );
    }
}
