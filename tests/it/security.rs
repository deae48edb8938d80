//! Attacks from a security review, reproduced through the API and shown
//! refused: mounts and links that would turn storage against its host.
//! Every attack aims at canary files and directories, never at the host's.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;

/// A canary directory with a file whose contents must survive.
struct Canary {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const CANARY_TEXT: &[u8] = b"canary: must never change\n";

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap();
        std::fs::write(path.join("file"), CANARY_TEXT).unwrap();
        Canary { _dir: dir, path }
    }

    fn file(&self) -> PathBuf {
        self.path.join("file")
    }

    fn assert_intact(&self) {
        assert_eq!(
            std::fs::read(self.file()).unwrap(),
            CANARY_TEXT,
            "the canary file changed"
        );
        assert!(
            !is_mounted(&self.path),
            "something was mounted on the canary"
        );
    }
}

fn connect(d: &Daemon, kind: &str, conn: Value) -> i64 {
    let st = d.call(
        "StoragePool.connectStorageServer",
        json!({"storagepoolID": BLANK, "domainType": kind, "connectionParams": [conn]}),
    );
    st[0]["status"].as_i64().unwrap()
}

fn disconnect(d: &Daemon, kind: &str, conn: Value) -> i64 {
    let st = d.call(
        "StoragePool.disconnectStorageServer",
        json!({"storagepoolID": BLANK, "domainType": kind, "connectionParams": [conn]}),
    );
    st[0]["status"].as_i64().unwrap()
}

fn mnt_entries(d: &Daemon) -> usize {
    std::fs::read_dir(d.data().join("mnt")).unwrap().count()
}

#[test]
fn mounts_never_go_through_a_link_and_disconnect_unmounts_only_its_own() {
    let d = Daemon::start_bare();
    let canary = Canary::new();
    let spec = canary.path.to_str().unwrap();
    // A LOCALFS link named after the canary, then mounts with the same name.
    assert_eq!(
        connect(&d, "LOCALFS", json!({"id": 1, "connection": spec})),
        0
    );
    for (vfs, opts) in [
        ("xfs", ""),
        ("tmpfs", ""),
        ("none", "bind"),
        ("overlay", ""),
    ] {
        let code = connect(
            &d,
            "POSIXFS",
            json!({"id": 1, "connection": spec, "vfs_type": vfs, "mnt_options": opts}),
        );
        assert_ne!(code, 0, "{vfs} mount through the link was accepted");
    }
    canary.assert_intact();
    // A POSIXFS disconnect of the same name leaves the link and the canary.
    assert_eq!(
        disconnect(
            &d,
            "POSIXFS",
            json!({"id": 1, "connection": spec, "vfs_type": "xfs"})
        ),
        0
    );
    let link = d
        .data()
        .join("mnt")
        .join(spec.replace('_', "__").replace('/', "_"));
    assert!(link.is_symlink(), "the LOCALFS link was removed");

    // A file system cairnd did not mount, reached through a LOCALFS link,
    // is never unmounted by a POSIXFS disconnect.
    let Some(fs) = LoopFs::new(64, "ext4", true) else {
        return;
    };
    let theirs = fs.mount.to_str().unwrap();
    assert_eq!(
        connect(&d, "LOCALFS", json!({"id": 2, "connection": theirs})),
        0
    );
    assert_eq!(
        disconnect(
            &d,
            "POSIXFS",
            json!({"id": 2, "connection": theirs, "vfs_type": "ext4"})
        ),
        0
    );
    assert!(
        is_mounted(&fs.mount),
        "cairnd unmounted a file system it did not mount"
    );
    assert_eq!(
        disconnect(&d, "LOCALFS", json!({"id": 2, "connection": theirs})),
        0
    );
    assert!(is_mounted(&fs.mount));
}

#[test]
fn mount_options_and_types_are_policed() {
    let d = Daemon::start_bare();
    let Some(fs) = LoopFs::new(64, "ext4", false) else {
        return;
    };
    for opts in [
        "exec",
        "suid",
        "dev",
        "noatime,exec",
        "loop",
        "remount",
        "errors=panic",
    ] {
        let code = connect(
            &d,
            "POSIXFS",
            json!({"id": 1, "connection": fs.device, "vfs_type": "ext4", "mnt_options": opts}),
        );
        assert_eq!(code, 1000, "option {opts} was accepted");
    }
    // Special file systems are never storage, whatever the spec.
    for vfs in ["tmpfs", "proc", "overlay", "none", "sysfs"] {
        let code = connect(
            &d,
            "POSIXFS",
            json!({"id": 1, "connection": "x", "vfs_type": vfs}),
        );
        assert_eq!(code, 1000, "type {vfs} was accepted");
    }
    // A local file system comes from a block device, never from a file.
    let canary = Canary::new();
    let code = connect(
        &d,
        "POSIXFS",
        json!({"id": 1, "connection": canary.file(), "vfs_type": "ext4"}),
    );
    assert_eq!(code, 390);
    assert_eq!(
        connect(
            &d,
            "GLUSTERFS",
            json!({"id": 1, "connection": "h:/v", "mnt_options": "log-file=/tmp/x"})
        ),
        1000
    );
    assert_eq!(
        mnt_entries(&d),
        0,
        "a refused connection left a mount point"
    );

    // What is mounted is always nosuid,nodev,noexec.
    let conn =
        json!({"id": 1, "connection": fs.device, "vfs_type": "ext4", "mnt_options": "noatime"});
    assert_eq!(connect(&d, "POSIXFS", conn.clone()), 0);
    let mnt = d.data().join("mnt").join(fs.device.replace('/', "_"));
    let opts = mount_options(&mnt).unwrap_or_default();
    for o in ["nosuid", "nodev", "noexec", "noatime"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing from {opts}");
    }
    assert_eq!(disconnect(&d, "POSIXFS", conn), 0);
    assert!(!mnt.exists());
    canary.assert_intact();
}

#[test]
fn local_storage_stays_under_its_roots() {
    let d = Daemon::start_bare();
    for p in [
        "/",
        "/etc",
        "/proc",
        "/root",
        "/usr/share",
        "/dev",
        "/sys/kernel",
        "/boot",
    ] {
        assert_eq!(
            connect(&d, "LOCALFS", json!({"id": 1, "connection": p})),
            390,
            "{p}"
        );
    }
    // cairnd's own directories are not storage either.
    for own in ["mnt", "run", "jobs", ""] {
        let p = d.data().join(own);
        let p = p.to_str().unwrap().trim_end_matches('/');
        assert_eq!(
            connect(&d, "LOCALFS", json!({"id": 1, "connection": p})),
            390,
            "{p}"
        );
    }
    // A path through a link is refused, even under an allowed root.
    let canary = Canary::new();
    let link = d.data().join("to-canary");
    std::os::unix::fs::symlink(&canary.path, &link).unwrap();
    assert_eq!(
        connect(&d, "LOCALFS", json!({"id": 1, "connection": link})),
        390
    );
    assert_eq!(mnt_entries(&d), 0);
    let (code, _) = d.call_err(
        "StorageDomain.create",
        json!({"storagedomainID": uuid(), "domainType": "LOCALFS", "typeArgs": "/etc", "name": "x", "domainClass": "Data"}),
    );
    assert_ne!(code, 0);
    canary.assert_intact();
}

/// Replaces a volume's data file with a link to `target`.
fn plant_link(d: &Daemon, sd: &str, img: &str, vol: &str, target: &Path) {
    let path = d.domain_dir(sd).join("images").join(img).join(vol);
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(target, &path).unwrap();
}

#[test]
fn links_found_on_storage_are_never_followed() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let canary = Canary::new();
    let victim = canary.path.join("victim.raw");
    std::fs::write(&victim, CANARY_TEXT).unwrap();
    let raw = json!({"volFormat": "RAW", "size": "1048576"});

    // copy_data from a linked source would read a host file.
    let (src_img, src_vol) = d.new_image(&sp, &sd, raw.clone());
    let (dst_img, dst_vol) = d.new_image(&sp, &sd, raw.clone());
    plant_link(&d, &sd, &src_img, &src_vol, &canary.file());
    let src = json!({"sd_id": sd, "img_id": src_img, "vol_id": src_vol});
    let dst = json!({"sd_id": sd, "img_id": dst_img, "vol_id": dst_vol});
    let j = d.run_job("SDM.copy_data", json!({"source": src, "destination": dst}));
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(j["error"]["code"], 254, "{j}");
    let copied = std::fs::read(
        d.domain_dir(&sd)
            .join("images")
            .join(&dst_img)
            .join(&dst_vol),
    )
    .unwrap();
    assert!(
        !copied.starts_with(CANARY_TEXT),
        "a host file was copied into a volume"
    );

    // copy_data onto a linked destination would overwrite a host file.
    let (img2, vol2) = d.new_image(&sp, &sd, raw.clone());
    plant_link(&d, &sd, &img2, &vol2, &victim);
    let j = d.run_job(
        "SDM.copy_data",
        json!({"source": dst, "destination": {"sd_id": sd, "img_id": img2, "vol_id": vol2}}),
    );
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(std::fs::read(&victim).unwrap(), CANARY_TEXT);

    // Preparing a linked volume would hand the VM a host file.
    let (code, _) = d.call_err(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": src_img, "volumeID": src_vol}),
    );
    assert_eq!(code, 254);

    // Deleting it with postZero would zero the host file.
    let t = d.call(
        "Volume.delete",
        json!({"volumeID": vol2, "storagepoolID": sp, "storagedomainID": sd, "imageID": img2, "postZero": true, "force": false}),
    );
    d.wait_task(&t);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        CANARY_TEXT,
        "postZero zeroed a host file"
    );

    // A linked image directory, and a device where a volume should be.
    let (img3, vol3) = d.new_image(&sp, &sd, raw);
    let images = d.domain_dir(&sd).join("images");
    let real = images.join(format!(".{img3}.moved"));
    std::fs::rename(images.join(&img3), &real).unwrap();
    std::os::unix::fs::symlink(&real, images.join(&img3)).unwrap();
    let info = d.client.call(
        "Volume.getInfo",
        json!({"volumeID": vol3, "storagepoolID": sp, "storagedomainID": sd, "imageID": img3}),
    );
    assert!(
        info.is_err(),
        "a volume read through a linked image directory: {info:?}"
    );
    std::fs::remove_file(images.join(&img3)).unwrap();
    std::fs::rename(&real, images.join(&img3)).unwrap();
    let data = images.join(&img3).join(&vol3);
    std::fs::remove_file(&data).unwrap();
    let st = Command::new("mknod")
        .arg(&data)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    let (code, _) = d.call_err(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img3, "volumeID": vol3}),
    );
    assert_eq!(code, 254);
    canary.assert_intact();
}

#[test]
fn helper_processes_die_with_cairnd() {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/slow_qemu_img.sh");
    let d = Daemon::start_with(Opts {
        env: vec![("CAIRN_QEMU_IMG".into(), tool.to_str().unwrap().into())],
        ..Default::default()
    });
    let (sp, sd) = d.embedded();
    let (src_img, src_vol) = d.new_image(&sp, &sd, json!({"volFormat": "RAW", "size": "1048576"}));
    let (dst_img, dst_vol) = d.new_image(&sp, &sd, json!({"size": "1048576"}));
    d.call(
        "SDM.copy_data",
        json!({"job_id": uuid(), "source": {"sd_id": sd, "img_id": src_img, "vol_id": src_vol},
               "destination": {"sd_id": sd, "img_id": dst_img, "vol_id": dst_vol}}),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let convert = loop {
        if let Some((c, _)) = d
            .children()
            .into_iter()
            .find(|(_, cmd)| cmd.starts_with("sleep"))
        {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never started\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _dir = d.stop(true);
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::read_to_string(format!("/proc/{convert}/stat"))
            .map_or(true, |s| s.split(' ').nth(2) == Some("Z"))
    });
    assert!(gone, "qemu-img convert (pid {convert}) outlived cairnd");
}

#[test]
fn forgotten_tasks_and_idle_tickets_cost_nothing() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    // More tasks than VDSM's cap of 500, none cleared: new work still runs.
    let mut last = Value::Null;
    for _ in 0..505 {
        let p = volume_params(&sp, &sd, &uuid(), &uuid(), json!({"size": "1048576"}));
        last = d.call("Volume.create", p);
        d.wait_task(&last);
    }
    assert_eq!(d.wait_task(&last)["taskResult"], "success");
    assert!(d.log().contains("forgot a finished task nobody cleared"));
}

#[test]
fn an_idle_ticket_never_blocks_domain_changes() {
    let (d, sp, _sd1, sd2) = Daemon::two_domain_pool();
    let (img, vol) = d.new_image(&sp, &sd2, json!({"volFormat": "RAW", "size": "1048576"}));
    let path = d.domain_dir(&sd2).join("images").join(&img).join(&vol);
    let status = |verb: &str| {
        let started = std::time::Instant::now();
        let r = d
            .client
            .call(verb, json!({"storagedomainID": sd2, "storagepoolID": sp}));
        (r, started.elapsed())
    };
    let (r, _) = status("StorageDomain.deactivate");
    r.unwrap();
    let ticket = uuid();
    d.call(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": ticket, "size": 1048576, "url": format!("file://{}", path.display()),
                          "timeout": 604800, "ops": ["write"]}}),
    );
    // Activating changes no image: it does not wait for the ticket.
    let (r, took) = status("StorageDomain.activate");
    r.unwrap();
    assert!(took.as_secs() < 10, "activate took {took:?}");
    // Deactivating would pull the domain from under it: refused at once.
    let (r, took) = status("StorageDomain.deactivate");
    match r {
        Err(cairn::client::ClientError::Rpc { code, message }) => {
            assert_eq!(code, 350, "{message}");
            assert!(message.contains("image ticket"), "{message}");
        }
        other => panic!("deactivate with a ticket open: {other:?}"),
    }
    assert!(took.as_secs() < 10, "refusing took {took:?}");
    d.call("Host.remove_image_ticket", json!({"uuid": ticket}));
    let (r, _) = status("StorageDomain.deactivate");
    r.unwrap();
}

#[test]
fn huge_bad_values_are_not_echoed_into_the_log() {
    let d = Daemon::start_bare();
    let before = std::fs::metadata(d.data().join("cairnd.log"))
        .unwrap()
        .len();
    let huge = "x".repeat(1 << 20);
    for _ in 0..20 {
        // A per-connection refusal, an invalid parameter, an unknown verb.
        let st = d.client.call(
            "StoragePool.connectStorageServer",
            json!({"storagepoolID": BLANK, "domainType": "POSIXFS",
                   "connectionParams": [{"id": 1, "connection": "/dev/x", "vfs_type": huge}]}),
        );
        assert!(
            matches!(st, Ok(ref v) if v[0]["status"] != 0),
            "a huge vfs_type was accepted"
        );
        for (verb, params) in [
            ("Volume.getInfo", json!({"volumeID": huge})),
            (huge.as_str(), json!({})),
        ] {
            match d.client.call(verb, params) {
                Err(cairn::client::ClientError::Rpc { message, .. }) => {
                    assert!(
                        message.len() < 4096,
                        "the reply echoes {} bytes",
                        message.len()
                    )
                }
                _ => panic!("a huge bad value was not refused"),
            }
        }
    }
    let grown = std::fs::metadata(d.data().join("cairnd.log"))
        .unwrap()
        .len()
        - before;
    assert!(grown < 1 << 20, "20 requests grew the log by {grown} bytes");
}

#[test]
fn cairnd_gives_up_the_capabilities_it_never_uses() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: capabilities are root's to drop");
        return;
    }
    let d = Daemon::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let caps = |name: &str| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name}"))
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    };
    let (eff, bnd) = (caps("CapEff:"), caps("CapBnd:"));
    for (name, bit) in [
        ("SYS_MODULE", 16),
        ("SYS_PTRACE", 19),
        ("SYS_BOOT", 22),
        ("NET_ADMIN", 12),
        ("SYS_TIME", 25),
        ("BPF", 39),
    ] {
        assert_eq!(eff & (1 << bit), 0, "cairnd still holds CAP_{name}");
        assert_eq!(
            bnd & (1 << bit),
            0,
            "children of cairnd could regain CAP_{name}"
        );
    }
    // What it does need stays: mounts (SYS_ADMIN), storage files owned by
    // others (DAC_OVERRIDE).
    assert_ne!(eff & (1 << 21), 0);
    assert_ne!(eff & (1 << 1), 0);
}
