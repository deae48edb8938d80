//! Tests with a real guest: a Linux VM (Debian's kernel, booted by
//! virtme-ng under qemu with this machine's root shared read-only) writing
//! to a thin volume through virtio-blk, as a VM manager would run it.
//! scripts/vm-tier runs them on this machine after the VM tier: they need
//! its kernel and qemu-system, and they are the only tests that boot a
//! guest of Cairn's volumes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

const MIB: u64 = 1 << 20;

fn wait_for(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < patience,
            "{what}: not within {patience:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A guest writes past the end of its thin volume's LV while no SPM can
/// extend it: qemu pauses it (ENOSPC, `werror=enospc`). When an SPM starts
/// again it serves the request waiting in the mailbox, the drive monitor
/// resumes the guest (`cont`), and everything the guest wrote is there.
#[test]
#[ignore = "boots a guest under qemu: run by scripts/vm-tier on this machine, after the VM tier"]
fn a_guest_paused_for_space_resumes_by_itself_when_an_spm_returns() {
    let kernel = std::env::var("CAIRN_GUEST_KERNEL").expect("run by scripts/vm-tier");
    let Some(luns) = TestLuns::new(1) else { return };
    let d = Daemon::start_with_luns(&luns);
    let sd = d.block_domain(&luns, 0, "guest");
    let sp = d.spm_of_pool(&[&sd]);
    let (img, vol) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (4096 * MIB).to_string(),
               "initialSize": (100 * MIB).to_string()}),
    );
    let ids = json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol});
    let path = d.call("Image.prepare", ids.clone())["path"]
        .as_str()
        .unwrap()
        .to_string();
    // No SPM: the guest's room cannot grow for now.
    d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));

    let dir = tempfile::tempdir().unwrap();
    let (qmp, probe, out) = (
        dir.path().join("qmp.sock"),
        dir.path().join("probe.sock"),
        dir.path().join("out"),
    );
    std::fs::create_dir(&out).unwrap();
    let opts = format!(
        "-blockdev driver=host_device,node-name=file0,filename={path},cache.direct=on \
         -blockdev driver=qcow2,node-name=fmt0,file=file0 \
         -device virtio-blk-pci,drive=fmt0,werror=enospc,rerror=enospc \
         -qmp unix:{},server=on,wait=off -qmp unix:{},server=on,wait=off",
        qmp.display(),
        probe.display()
    );
    // 512 MiB of 'x' written straight to the disk: 4 times the LV.
    let exec = format!(
        "tr '\\0' x < /dev/zero | dd of=/dev/vda bs=1M count=512 iflag=fullblock oflag=direct status=none && echo ok > {}/done",
        out.display()
    );
    let mut guest = Command::new("vng")
        .args(["--disable-kvm", "--disable-microvm", "--run", &kernel])
        .args(["--memory", "512M", "--cpus", "1", "--rwdir"])
        .arg(&out)
        // (`=`: the value starts with a dash.)
        .arg(format!("--qemu-opts={opts}"))
        .args(["--exec", &exec])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vng");
    wait_for("qemu's QMP sockets", Duration::from_secs(60), || {
        qmp.exists() && probe.exists()
    });
    let mut add = ids.clone();
    add["qmpSocket"] = json!(qmp);
    add["nodeName"] = json!("file0");
    let monitor = d.call("DriveMonitor.add", add)["monitorID"].clone();

    // The guest boots, writes, meets the end of the LV and is paused.
    let mut probe = cairn::primitives::qmp::Qmp::connect(&probe, Duration::from_secs(10)).unwrap();
    let status = |q: &mut cairn::primitives::qmp::Qmp| {
        q.execute("query-status", json!({})).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    wait_for(
        "the guest paused for space",
        Duration::from_secs(300),
        || status(&mut probe) == "io-error",
    );
    assert!(!out.join("done").exists());

    // An SPM again: it serves the request, the monitor resumes the guest.
    d.spm_start(&sp);
    wait_for(
        "the guest finished writing",
        Duration::from_secs(300),
        || out.join("done").exists(),
    );
    let _ = guest.wait();
    let list = d.call("DriveMonitor.list", json!({}));
    let st = &list[0]["status"];
    assert_eq!(list[0]["monitorID"], monitor);
    assert!(st["pauses"].as_u64().unwrap() >= 1, "{list}");
    assert!(st["extends"].as_u64().unwrap() >= 1, "{list}");
    assert!(d.log().contains("guest resumed"), "{list}");
    qemu_io(Path::new(&path), "qcow2", "read -P 0x78 0 512M");
    d.call("DriveMonitor.remove", json!({"monitorID": monitor}));
    d.call("Image.teardown", ids);
}
