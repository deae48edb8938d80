//! The VM tier: what needs a kernel with device-mapper (and, later, an
//! iSCSI initiator and an NFS client). These tests are ignored here and run
//! by `scripts/vm-tier` inside a VM booting Debian's kernel, with this
//! machine's root shared in (`scripts/test` runs that tier too).

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn::primitives::lvm::{Lvm, NewLv};

use crate::lvm::LoopDevice;

/// The real lvm, on a VM without udevd: lvm makes the device nodes itself.
fn real_lvm() -> Lvm {
    assert_eq!(
        std::env::var("CAIRN_VM_TIER").as_deref(),
        Ok("1"),
        "run by scripts/vm-tier"
    );
    for module in ["dm-mod", "loop"] {
        let ok = Command::new("modprobe").arg(module).status().unwrap();
        assert!(ok.success(), "modprobe {module}");
    }
    Lvm::with_program("lvm")
        .with_extra_config("activation { udev_sync=0 udev_rules=0 monitoring=0 }")
}

fn size_of(dev: &Path) -> u64 {
    let out = Command::new("blockdev")
        .arg("--getsize64")
        .arg(dev)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn dd(args: &[&str]) {
    let out = Command::new("dd").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "dd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Activation through device-mapper, a multi-segment LV, and an extension
/// by another host (another runner, its own cache) seen after a refresh.
#[test]
#[ignore = "runs in the VM tier (scripts/vm-tier): needs device-mapper"]
fn lvm_activation_extend_and_refresh_are_real() {
    let lvm = real_lvm();
    let pv = LoopDevice::new(1 << 30).expect("a loop device");
    let devs = vec![pv.path.clone()];
    let vg = "cairn-vm-test";
    lvm.pvcreate(&pv.path, 1 << 20).unwrap();
    lvm.vgcreate(vg, &devs, 4 << 20, &[]).unwrap();
    let vol = NewLv {
        name: "vol",
        size: 16 << 20,
        tags: &[],
        contiguous: false,
    };
    lvm.lvcreate(&devs, vg, &vol).unwrap();
    // Another LV right after it: growing `vol` makes a second segment.
    let next = NewLv {
        name: "next",
        size: 8 << 20,
        ..vol.clone()
    };
    lvm.lvcreate(&devs, vg, &next).unwrap();

    lvm.set_active(&devs, vg, &["vol"], true).unwrap();
    let dev = PathBuf::from(format!("/dev/{vg}/vol"));
    let meta = std::fs::metadata(&dev).expect("an active LV has a device");
    assert!(meta.file_type().is_block_device());
    assert!(lvm.lv(&devs, vg, "vol").unwrap().is_active());
    assert_eq!(size_of(&dev), 16 << 20);
    let of = format!("of={}", dev.display());
    dd(&["if=/dev/urandom", "of=/tmp/pattern", "bs=1M", "count=1"]);
    dd(&[
        "if=/tmp/pattern",
        &of,
        "bs=1M",
        "oflag=direct",
        "conv=notrunc",
    ]);

    // Another host (the SPM) grows it in the VG metadata only, as it does
    // for an LV in use elsewhere: this host's cache and mapping are old.
    let other = Lvm::with_program("lvm")
        .with_extra_config("activation { udev_sync=0 udev_rules=0 monitoring=0 }");
    other
        .lvextend_metadata_only(&devs, vg, "vol", 40 << 20)
        .unwrap();
    assert_eq!(lvm.lv(&devs, vg, "vol").unwrap().size, 16 << 20, "cached");
    assert_eq!(size_of(&dev), 16 << 20, "the mapping is the old one");
    lvm.refresh(&devs, vg, "vol").unwrap();
    let lv = lvm.lv(&devs, vg, "vol").unwrap();
    assert_eq!(lv.size, 40 << 20);
    assert_eq!(lv.segments.len(), 2, "{lv:?}");
    assert_eq!(size_of(&dev), 40 << 20, "refreshed");
    let table = Command::new("dmsetup")
        // device-mapper's name doubles the dashes in the VG's.
        .args(["table", &format!("{}-vol", vg.replace('-', "--"))])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&table.stdout).lines().count(),
        2,
        "two linear segments"
    );
    // The data written before the extension is still there.
    dd(&[
        &format!("if={}", dev.display()),
        "of=/tmp/back",
        "bs=1M",
        "count=1",
        "iflag=direct",
    ]);
    assert_eq!(
        std::fs::read("/tmp/pattern").unwrap(),
        std::fs::read("/tmp/back").unwrap()
    );

    lvm.set_active(&devs, vg, &["vol"], false).unwrap();
    assert!(!dev.exists(), "deactivated");
    lvm.lvremove(&devs, vg, &["vol", "next"]).unwrap();
    lvm.vgremove(&devs, vg).unwrap();
}
