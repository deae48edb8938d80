//! The lvm runner against real lvm2 on a loop device. This kernel has no
//! device-mapper, so the runner is given `tests/tools/`'s stand-in
//! (`lvm_without_device_mapper.sh`, real lvm with activation disabled);
//! activation itself is tested in the VM tier.

use std::path::PathBuf;
use std::process::Command;

use cairn::primitives::lvm::{LvInfo, Lvm, NewLv};

/// A sparse file attached to a loop device; detached when dropped.
pub struct LoopDevice {
    pub path: PathBuf,
    _file: tempfile::NamedTempFile,
}

impl LoopDevice {
    pub fn new(size: u64) -> Option<LoopDevice> {
        let file = tempfile::NamedTempFile::new().ok()?;
        file.as_file().set_len(size).ok()?;
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipped: no loop device ({})",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Some(LoopDevice { path, _file: file })
    }
}

impl LoopDevice {
    /// The LUN grows on the storage: its file, then the loop device's size.
    pub fn grow(&self, size: u64) {
        self._file.as_file().set_len(size).unwrap();
        let ok = Command::new("losetup")
            .arg("--set-capacity")
            .arg(&self.path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "losetup --set-capacity {}", self.path.display());
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

pub fn stand_in_lvm() -> Lvm {
    eprintln!("using the lvm stand-in: activation disabled (no device-mapper here)");
    Lvm::with_program(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tools/lvm_without_device_mapper.sh"
    ))
}

#[test]
fn volume_groups_and_lvs_through_the_runner() {
    let Some(a) = LoopDevice::new(512 << 20) else {
        return;
    };
    let Some(b) = LoopDevice::new(256 << 20) else {
        return;
    };
    let lvm = stand_in_lvm();
    let devs = vec![a.path.clone()];
    let vg = format!("cairn-test-{}", std::process::id());
    lvm.pvcreate(&a.path, 1 << 20).unwrap();
    lvm.vgcreate(&vg, &devs, 4 << 20, &["MDT_SDUUID=x".to_string()])
        .unwrap();
    let info = lvm.vg(&devs, &vg).unwrap();
    assert_eq!(info.tags, vec!["MDT_SDUUID=x"]);
    assert_eq!(info.extent_size, 4 << 20);
    assert_eq!(info.pv_count, 1);

    let tags = ["IU_img".to_string(), "PU_parent".to_string()];
    let new = NewLv {
        name: "vol1",
        size: (10 << 20) + 1,
        tags: &tags,
        contiguous: true,
        activate: false,
    };
    lvm.lvcreate(&devs, &vg, &new).unwrap();
    let lv = lvm.lv(&devs, &vg, "vol1").unwrap();
    assert_eq!(lv.size, 12 << 20, "rounded up to extents");
    assert_eq!(lv.tags, tags);
    assert_eq!(lvm.segments(&devs, &vg, "vol1").unwrap().len(), 1);
    assert!(!lv.is_active());
    // The cache follows the runner's own changes.
    let seqno = lvm.vg(&devs, &vg).unwrap().seqno;
    lvm.lvextend(&devs, &vg, "vol1", 20 << 20).unwrap();
    assert_eq!(lvm.lv(&devs, &vg, "vol1").unwrap().size, 20 << 20);
    // The extend was written into the cache, sequence number included; a
    // re-read agrees with it.
    let cached = lvm.vg(&devs, &vg).unwrap();
    lvm.invalidate(&vg);
    assert_eq!(lvm.lv(&devs, &vg, "vol1").unwrap().size, 20 << 20);
    let read = lvm.vg(&devs, &vg).unwrap();
    assert_eq!(read.seqno, seqno + 1);
    assert_eq!((cached.seqno, cached.free), (read.seqno, read.free));
    lvm.lvextend(&devs, &vg, "vol1", 8 << 20).unwrap();
    assert_eq!(
        lvm.lv(&devs, &vg, "vol1").unwrap().size,
        20 << 20,
        "never shrinks"
    );
    lvm.change_lv_tags(
        &devs,
        &vg,
        "vol1",
        &["PU_other".into()],
        &["PU_parent".into()],
    )
    .unwrap();
    assert_eq!(
        lvm.lv(&devs, &vg, "vol1").unwrap().tags,
        vec!["IU_img", "PU_other"]
    );
    lvm.change_vg_tags(&devs, &vg, &["MDT_X=1".into()], &[])
        .unwrap();
    assert!(lvm
        .vg(&devs, &vg)
        .unwrap()
        .tags
        .contains(&"MDT_X=1".to_string()));

    // An owned VG (the SPM's) is served from the cache without rechecks;
    // others' changes show again once it is disowned.
    lvm.own(&vg);
    let seen = lvm.vg(&devs, &vg).unwrap().seqno;
    let other = stand_in_lvm();
    other
        .change_vg_tags(&devs, &vg, &["MDT_Y=1".into()], &[])
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(lvm.vg(&devs, &vg).unwrap().seqno, seen, "trusted");
    lvm.disown_all();
    assert_eq!(lvm.vg(&devs, &vg).unwrap().seqno, seen + 1, "rechecked");

    // Too large for the VG: a clear error, and nothing made.
    let huge = NewLv {
        name: "huge",
        size: 1 << 30,
        tags: &[],
        contiguous: false,
        activate: false,
    };
    let err = lvm.lvcreate(&devs, &vg, &huge).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(lvm.lv(&devs, &vg, "huge").is_err());

    // A device outside the filter is invisible, even if named.
    let err = lvm
        .vg(std::slice::from_ref(&b.path), "no-such-vg")
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    lvm.invalidate(&vg);
    assert!(lvm
        .vg(std::slice::from_ref(&b.path), &vg)
        .unwrap_err()
        .is_not_found());

    // More room: a second PV.
    lvm.vgextend(&devs, &vg, std::slice::from_ref(&b.path), 1 << 20)
        .unwrap();
    let both = vec![a.path.clone(), b.path.clone()];
    assert_eq!(lvm.vg(&both, &vg).unwrap().pv_count, 2);
    let pvs = lvm.pvs(&both).unwrap();
    assert_eq!(pvs.len(), 2);
    assert!(pvs.iter().all(|p| p.vg_name == vg && p.pe_start > 0));

    // Changes whose outcome the runner writes into its cache leave it as
    // a fresh read would find the VG.
    let vol2 = NewLv {
        name: "vol2",
        size: 5 << 20,
        tags: &tags,
        contiguous: false,
        activate: false,
    };
    lvm.lvs(&both, &vg).unwrap();
    lvm.lvcreate(&both, &vg, &vol2).unwrap();
    lvm.change_lvs_tags(
        &both,
        &vg,
        &["vol1", "vol2"],
        &["X_1".into()],
        &["IU_img".into()],
    )
    .unwrap();
    lvm.lvremove(&both, &vg, &["vol1"]).unwrap();
    let fresh = stand_in_lvm();
    // Without device-mapper lvm reports an unknown state ("XX") in lv_attr.
    let seen = |lvs: std::sync::Arc<Vec<LvInfo>>| -> Vec<_> {
        lvs.iter()
            .map(|l| (l.name.clone(), l.size, l.tags.clone(), l.is_active()))
            .collect()
    };
    assert_eq!(
        seen(lvm.lvs(&both, &vg).unwrap()),
        seen(fresh.lvs(&both, &vg).unwrap())
    );
    let (cached, read) = (lvm.vg(&both, &vg).unwrap(), fresh.vg(&both, &vg).unwrap());
    assert_eq!(
        (cached.free, cached.free_count),
        (read.free, read.free_count)
    );

    lvm.lvremove(&both, &vg, &["vol2"]).unwrap();
    assert!(lvm.lvs(&both, &vg).unwrap().is_empty());
    lvm.vgremove(&both, &vg).unwrap();
}
