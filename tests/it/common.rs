//! Test harness: runs the real cairnd binary on a temporary data directory
//! and talks to it over its Unix socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::client::{Client, ClientError, Target};
use serde_json::{json, Value};

pub const BLANK: &str = "00000000-0000-0000-0000-000000000000";

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub tcp: Option<String>,
    child: Child,
    pub client: Client,
}

/// A file in a test daemon's data dir of `KEY=VALUE` lines added to its
/// environment at every start.
const SAVED_ENV: &str = "test-env";

/// Sparse loop devices standing for SAN LUNs, for block domains on this
/// kernel (no device-mapper: cairnd runs the lvm stand-in, which maps
/// one-segment LVs with loop devices). Dropping them unmaps every LV of
/// the VGs made on them.
pub struct TestLuns {
    pub luns: Vec<crate::lvm::LoopDevice>,
    vgs: std::cell::RefCell<Vec<String>>,
}

impl TestLuns {
    /// `n` LUNs of 12 GiB (VDSM wants 10 GiB per domain); None without
    /// loop devices.
    pub fn new(n: usize) -> Option<TestLuns> {
        let luns = (0..n)
            .map(|_| crate::lvm::LoopDevice::new(12 << 30))
            .collect::<Option<Vec<_>>>()?;
        if !real_device_mapper() {
            eprintln!("using the lvm stand-in: LVs mapped by loop devices (no device-mapper here)");
        }
        Some(TestLuns {
            luns,
            vgs: Default::default(),
        })
    }

    /// Unmaps the VG's LVs when the LUNs go.
    pub fn track_vg(&self, vg: &str) {
        self.vgs.borrow_mut().push(vg.to_string());
    }

    /// The GUID cairnd knows a LUN by (a configured device's name).
    pub fn guid(&self, i: usize) -> String {
        self.luns[i]
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// What cairnd needs to see the LUNs (and, without device-mapper, the
    /// lvm stand-in), as environment variables.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let devs: Vec<String> = self
            .luns
            .iter()
            .map(|l| l.path.display().to_string())
            .collect();
        let mut vars = vec![("CAIRN_BLOCK_DEVICES".to_string(), devs.join(":"))];
        if !real_device_mapper() {
            vars.push((
                "CAIRN_LVM".to_string(),
                format!(
                    "{}/tests/tools/lvm_without_device_mapper.sh",
                    env!("CARGO_MANIFEST_DIR")
                ),
            ));
        }
        vars
    }

    fn env(&self) -> String {
        self.env_vars()
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    }
}

/// In the VM tier cairnd runs the real lvm, with device-mapper.
pub fn real_device_mapper() -> bool {
    std::env::var_os("CAIRN_VM_TIER").is_some()
}

impl Drop for TestLuns {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for vg in self.vgs.borrow().iter() {
            // The master file system an SPM left mounted.
            let inside = format!("/blockSD/{vg}/");
            for target in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
                if target.contains(&inside) {
                    let _ = Command::new("umount").arg("-l").arg(target).status();
                }
            }
            if real_device_mapper() {
                // Device-mapper maps hold the LUNs: deactivate the VG.
                let accept: String = self
                    .luns
                    .iter()
                    .map(|l| format!("\"a|^{}$|\", ", l.path.display()))
                    .collect();
                let config = format!("devices {{ filter=[{accept}\"r|.*|\"] }}");
                let _ = Command::new("lvm")
                    .args(["vgchange", "--config", &config, "-an", vg])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                continue;
            }
            let dir = Path::new("/dev").join(vg);
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                // The stand-in's loop devices (device-mapper's go with the VM).
                match std::fs::canonicalize(e.path()) {
                    Ok(dev) if dev.to_string_lossy().starts_with("/dev/loop") => {
                        let _ = Command::new("losetup").arg("-d").arg(dev).status();
                    }
                    _ => {}
                }
                let _ = std::fs::remove_file(e.path());
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

pub struct Opts {
    pub embedded: bool,
    pub tcp: bool,
    /// Extra environment (failpoints).
    pub env: Vec<(String, String)>,
    /// Extra cairnd arguments.
    pub args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            embedded: true,
            tcp: false,
            env: Vec::new(),
            args: Vec::new(),
        }
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start() -> Daemon {
        Self::start_with(Opts::default())
    }

    /// cairnd without the embedded default domain, for tests that build
    /// their own storage.
    /// A cairnd without the embedded default that sees `luns`.
    pub fn start_with_luns(luns: &TestLuns) -> Daemon {
        Self::start_with_luns_and(luns, &[])
    }

    /// [`Daemon::start_with_luns`] with more environment, kept across
    /// restarts.
    pub fn start_with_luns_and(luns: &TestLuns, extra: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = luns.env();
        for (k, v) in extra {
            env.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(dir.path().join(SAVED_ENV), env).unwrap();
        Self::start_in(
            dir,
            Opts {
                embedded: false,
                ..Default::default()
            },
        )
    }

    /// A block domain (ISCSI) on LUN `i`: its VG, then the domain.
    pub fn block_domain(&self, luns: &TestLuns, i: usize, name: &str) -> String {
        let sd = uuid();
        let vg = self.call(
            "LVMVolumeGroup.create",
            json!({"name": sd, "devlist": [luns.guid(i)], "force": false}),
        );
        luns.track_vg(&sd);
        self.call(
            "StorageDomain.create",
            json!({"storagedomainID": sd, "domainType": "ISCSI", "typeArgs": vg, "name": name, "domainClass": "Data"}),
        );
        sd
    }

    /// A cairnd that is SPM of a pool of two block domains, one per LUN
    /// (the first the master): (daemon, pool, master, other).
    pub fn block_pool(luns: &TestLuns) -> (Daemon, String, String, String) {
        let d = Daemon::start_with_luns(luns);
        let sd = d.block_domain(luns, 0, "one");
        let other = d.block_domain(luns, 1, "two");
        let sp = d.spm_of_pool(&[&sd, &other]);
        (d, sp, sd, other)
    }

    /// A new pool of `domains` (the first its master), connected as host 1
    /// and with this host SPM; returns the pool's UUID.
    pub fn spm_of_pool(&self, domains: &[&str]) -> String {
        let (sp, master) = (uuid(), domains[0]);
        self.call(
            "StoragePool.create",
            json!({"storagepoolID": sp, "name": "p", "masterSdUUID": master, "masterVersion": 1, "domainList": domains}),
        );
        self.call(
            "StoragePool.connect",
            json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": master, "masterVersion": 1}),
        );
        self.spm_start(&sp);
        sp
    }

    pub fn start_bare() -> Daemon {
        Self::start_with(Opts {
            embedded: false,
            ..Default::default()
        })
    }

    pub fn start_with(opts: Opts) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, opts)
    }

    /// Starts (or restarts) cairnd on an existing data directory.
    pub fn start_in(dir: tempfile::TempDir, opts: Opts) -> Daemon {
        let socket = dir.path().join("cairnd.sock");
        let _ = std::fs::remove_file(&socket);
        let tcp = opts.tcp.then(free_tcp_addr);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairnd"));
        cmd.arg("--data-dir")
            .arg(dir.path())
            .arg("--log-level")
            .arg("debug");
        if !opts.embedded {
            cmd.arg("--no-embedded-default");
        }
        if let Some(addr) = &tcp {
            cmd.arg("--listen").arg(addr);
            cluster_pki(&dir.path().join("pki"));
        }
        cmd.args(&opts.args);
        // Shared domains take sanlock leases, which need a sanlock daemon:
        // the tests that start one ask for sanlock; the others use flock.
        cmd.env("CAIRN_SHARED_LEASES", "flock");
        // Loop file systems and fixtures live in temporary directories.
        cmd.env("CAIRN_LOCAL_ROOTS", std::env::temp_dir());
        // What a test set for every start of this data dir (block LUNs).
        let saved = std::fs::read_to_string(dir.path().join(SAVED_ENV)).unwrap_or_default();
        cmd.envs(saved.lines().filter_map(|l| l.split_once('=')));
        cmd.envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let log = std::fs::File::create(dir.path().join("cairnd.log")).expect("log file");
        cmd.stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().expect("start cairnd");
        let client = Client::new(Target::Unix(socket.clone()));
        let d = Daemon {
            dir,
            socket,
            tcp,
            child,
            client,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.socket.exists()
                && self
                    .client
                    .call("Host.getConnectedStoragePools", json!({}))
                    .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cairnd did not start; log:\n{}", self.log());
    }

    /// Waits for cairnd to exit on its own; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cairnd.log")).unwrap_or_default()
    }

    /// Waits (up to `patience`) until cairnd's log says `text`.
    pub fn wait_log(&self, text: &str, patience: Duration) {
        let deadline = Instant::now() + patience;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "cairnd never logged {text:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Stops cairnd (SIGKILL when `crash`) and returns the data directory.
    pub fn stop(mut self, crash: bool) -> tempfile::TempDir {
        if crash {
            let _ = self.child.kill();
        } else {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
        }
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        drop(self);
        dir
    }

    pub fn call(&self, method: &str, params: Value) -> Value {
        match self.client.call(method, params.clone()) {
            Ok(v) => v,
            Err(e) => panic!("{method}({params}) failed: {e}\nlog:\n{}", self.log()),
        }
    }

    /// Calls and expects an error; returns its code and message.
    pub fn call_err(&self, method: &str, params: Value) -> (i64, String) {
        match self.client.call(method, params.clone()) {
            Ok(v) => panic!("{method}({params}) succeeded with {v}, expected an error"),
            Err(ClientError::Rpc { code, message }) => (code, message),
            Err(e) => panic!("{method}: transport error {e}"),
        }
    }

    /// Waits for a task; returns its final status (not cleared).
    pub fn wait_task(&self, task: &Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = self.call("Task.getStatus", json!({"taskID": task}));
            if st["taskState"] == "finished" {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "task {task} did not finish: {st}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a task that must succeed, and clears it.
    pub fn task_ok(&self, task: &Value) {
        let st = self.wait_task(task);
        assert_eq!(
            st["taskResult"],
            "success",
            "task failed: {st}\nlog:\n{}",
            self.log()
        );
        assert_eq!(st["code"], 0);
        self.call("Task.clear", json!({"taskID": task}));
    }

    /// Waits for a host job to finish; its `HostJobInfo`.
    pub fn wait_job(&self, job: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let j = self.call("Host.getJobs", json!({"job_ids": [job]}))[job].clone();
            if j["status"] != "pending" && j["status"] != "running" {
                return j;
            }
            assert!(Instant::now() < deadline, "job {job} did not finish: {j}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts host job `method` with a fresh `job_id` added to `params`,
    /// and returns how it ended (`HostJobInfo`).
    pub fn run_job(&self, method: &str, mut params: Value) -> Value {
        let job = uuid();
        params["job_id"] = json!(job);
        self.call(method, params);
        self.wait_job(&job)
    }

    /// Like [`Daemon::run_job`], asserting the job is done.
    pub fn job_ok(&self, method: &str, params: Value) {
        let j = self.run_job(method, params);
        assert_eq!(j["status"], "done", "{method}: {j}\n{}", self.log());
    }

    /// Makes a base volume a template (SDM.update_volume type SHARED).
    pub fn make_template(&self, sd: &str, img: &str, vol: &str) {
        self.job_ok(
            "SDM.update_volume",
            json!({"vol_info": {"sd_id": sd, "img_id": img, "vol_id": vol}, "vol_attr": {"type": "SHARED"}}),
        );
    }

    /// A bare cairnd with a pool of two LOCALFS domains, connected and SPM:
    /// (daemon, pool, master domain, second domain).
    pub fn two_domain_pool() -> (Daemon, String, String, String) {
        let d = Daemon::start_bare();
        let (sd1, sd2) = (uuid(), uuid());
        for (sd, name) in [(&sd1, "one"), (&sd2, "two")] {
            let dir = d.local_storage(name);
            d.call(
                "StorageDomain.create",
                json!({"storagedomainID": sd, "domainType": "LOCALFS", "typeArgs": dir.to_str().unwrap(), "name": name, "domainClass": "Data"}),
            );
        }
        let sp = d.spm_of_pool(&[&sd1, &sd2]);
        (d, sp, sd1, sd2)
    }

    /// A new directory under the data dir, connected as LOCALFS storage.
    pub fn local_storage(&self, name: &str) -> PathBuf {
        let dir = self.data().join(name);
        std::fs::create_dir(&dir).unwrap();
        self.connect_local(&dir);
        dir
    }

    /// Stops cairnd and starts it again with `CAIRN_FAILPOINTS` armed.
    pub fn restart_armed(self, failpoints: &str, embedded: bool) -> Daemon {
        let env = vec![("CAIRN_FAILPOINTS".to_string(), failpoints.to_string())];
        Daemon::start_in(
            self.stop(false),
            Opts {
                embedded,
                env,
                ..Default::default()
            },
        )
    }

    /// Waits for an armed failpoint to crash cairnd (exit 86), then starts
    /// it again unarmed on the same data directory.
    pub fn restart_after_crash(mut self, embedded: bool) -> Daemon {
        let code = self.wait_exit(Duration::from_secs(20));
        assert_eq!(
            code,
            Some(86),
            "cairnd should have crashed at its failpoint\n{}",
            self.log()
        );
        Daemon::start_in(
            self.stop(true),
            Opts {
                embedded,
                ..Default::default()
            },
        )
    }

    /// Takes the SPM role of `sp` and waits for it.
    pub fn spm_start(&self, sp: &str) {
        let t = self.call(
            "StoragePool.spmStart",
            json!({"storagepoolID": sp, "prevID": -1, "prevLver": "-1", "enableScsiFencing": "false"}),
        );
        self.task_ok(&t);
    }

    /// Connects a local directory (LOCALFS) and checks it worked.
    pub fn connect_local(&self, path: &Path) {
        let st = self.call(
            "StoragePool.connectStorageServer",
            json!({"storagepoolID": BLANK, "domainType": "LOCALFS",
                   "connectionParams": [{"id": 1, "connection": path.to_str().unwrap()}]}),
        );
        assert_eq!(st[0]["status"], 0, "connect {}: {st}", path.display());
    }

    /// The embedded pool and its master domain.
    pub fn embedded(&self) -> (String, String) {
        let pools = self.call("Host.getConnectedStoragePools", json!({}));
        let sp = pools[0].as_str().expect("a connected pool").to_string();
        let info = self.call("StoragePool.getInfo", json!({"storagepoolID": sp}));
        (
            sp,
            info["info"]["master_uuid"].as_str().unwrap().to_string(),
        )
    }

    /// Creates a volume and waits for it.
    pub fn create_volume(&self, sp: &str, sd: &str, img: &str, vol: &str, extra: Value) {
        let t = self.call("Volume.create", volume_params(sp, sd, img, vol, extra));
        self.task_ok(&t);
    }

    /// A new image holding one volume made with `extra` (its volume
    /// parameters): (image, volume).
    pub fn new_image(&self, sp: &str, sd: &str, extra: Value) -> (String, String) {
        let (img, vol) = (uuid(), uuid());
        self.create_volume(sp, sd, &img, &vol, extra);
        (img, vol)
    }

    /// An image with a base volume created with `base` (its volume
    /// parameters) and a qcow2 snapshot of the same size on it:
    /// (image, base, top).
    pub fn base_and_snapshot(&self, sp: &str, sd: &str, base: Value) -> (String, String, String) {
        let top = uuid();
        let (img, base_id) = self.new_image(sp, sd, base.clone());
        let mut snap = json!({"srcImgUUID": img, "srcVolUUID": base_id});
        if let Some(size) = base.get("size") {
            snap["size"] = size.clone();
        }
        self.create_volume(sp, sd, &img, &top, snap);
        (img, base_id, top)
    }

    /// [`Daemon::base_and_snapshot`] with a RAW base of `size` bytes.
    pub fn raw_base_and_snapshot(
        &self,
        sp: &str,
        sd: &str,
        size: impl std::fmt::Display,
    ) -> (String, String, String) {
        let size = size.to_string();
        self.base_and_snapshot(sp, sd, json!({"volFormat": "RAW", "size": size}))
    }

    /// The domain's directory on disk.
    /// `Volume.getInfo` of one volume.
    pub fn volume_info(&self, sp: &str, sd: &str, img: &str, vol: &str) -> Value {
        self.call(
            "Volume.getInfo",
            json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img}),
        )
    }

    /// Names of a volume's bitmaps (`Volume.getQemuImageInfo`), sorted.
    pub fn bitmaps(&self, sp: &str, sd: &str, img: &str, vol: &str) -> Vec<String> {
        let qi = self.call(
            "Volume.getQemuImageInfo",
            json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img}),
        );
        let mut names: Vec<String> = qi["bitmaps"]
            .as_array()
            .unwrap_or_else(|| panic!("no bitmaps listed: {qi}"))
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// `Image.getVolumes` of one image.
    pub fn image_volumes(&self, sp: &str, sd: &str, img: &str) -> Value {
        self.call(
            "Image.getVolumes",
            json!({"imageID": img, "storagepoolID": sp, "storagedomainID": sd}),
        )
    }

    /// This host (host 1) steps down as SPM of `sp` and leaves the pool.
    pub fn leave_pool(&self, sp: &str) {
        self.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
        self.call(
            "StoragePool.disconnect",
            json!({"storagepoolID": sp, "hostID": 1, "scsiKey": ""}),
        );
    }

    /// Prepares the chain up to `vol`, runs `f` on the path a VM would
    /// open, then tears the image down.
    pub fn with_prepared<T>(
        &self,
        (sp, sd): (&str, &str),
        img: &str,
        vol: &str,
        f: impl FnOnce(&Path) -> T,
    ) -> T {
        let ids =
            json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol});
        let path = self.call("Image.prepare", ids.clone())["path"]
            .as_str()
            .expect("prepare returns a path")
            .to_string();
        let out = f(Path::new(&path));
        self.call("Image.teardown", ids);
        out
    }

    pub fn domain_dir(&self, sd: &str) -> PathBuf {
        let info = self.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
        PathBuf::from(info["remotePath"].as_str().unwrap()).join(sd)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Volume.create parameters for a 1 GiB COW sparse volume, with overrides.
pub fn volume_params(sp: &str, sd: &str, img: &str, vol: &str, extra: Value) -> Value {
    let mut p = json!({
        "volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img,
        "size": (1u64 << 30).to_string(), "volFormat": "COW", "preallocate": "SPARSE",
        "diskType": "DATA", "desc": "test", "srcImgUUID": BLANK, "srcVolUUID": BLANK,
    });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            p[k] = v;
        }
    }
    p
}

pub fn uuid() -> String {
    cairn::types::Uuid::new_v4().to_string()
}

/// A cluster CA in `dir` with a "host" certificate for 127.0.0.1 and a
/// "client" one, where cairnd and the CLI look for them by default.
pub fn cluster_pki(dir: &Path) {
    use cairn::pki::{init_ca, issue, Role};
    if !dir.join("ca.pem").exists() {
        init_ca(dir, "test cluster").expect("CA");
        issue(dir, "host", Role::Host, &["127.0.0.1".into()]).expect("host certificate");
        issue(dir, "client", Role::Client, &[]).expect("client certificate");
    }
}

impl Daemon {
    /// TLS settings of a client holding this cluster's client certificate.
    pub fn tls_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let files = cairn::tls::TlsFiles::in_dir(&self.data().join("pki"), "client");
        cairn::tls::client_config(&files).expect("client TLS")
    }

    /// A client of the TCP listener with this cluster's client certificate.
    pub fn tls_client(&self) -> Client {
        Client::new(Target::Tls {
            addr: self.tcp.clone().expect("a TCP listener"),
            config: self.tls_config(),
        })
    }
}

/// The options `dir` is mounted with, if it is a mount point (from
/// /proc/self/mountinfo; `dir` resolved first, as the kernel lists it).
pub fn mount_options(dir: &Path) -> Option<String> {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == canon.to_str())
        .map(|l| l.split(' ').nth(5).unwrap_or("").to_string())
}

pub fn is_mounted(dir: &Path) -> bool {
    mount_options(dir).is_some()
}

impl Daemon {
    /// cairnd's child processes: (pid, command line with spaces).
    pub fn children(&self) -> Vec<(u32, String)> {
        let out = Command::new("pgrep")
            .args(["-P", &self.pid().to_string()])
            .output()
            .expect("pgrep");
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                (pid.parse().unwrap(), cmdline)
            })
            .collect()
    }
}

pub fn free_tcp_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Every path below `dir` (sorted), to show that a failed call left nothing.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Runs the independent VDSM format checker (tests/tools/vdsm_check.py).
/// The independent VDSM-rules check of block domain `sd` on `luns`.
pub fn vdsm_check_block(sd: &str, luns: &TestLuns) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/vdsm_check.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--block", sd])
        .args(luns.luns.iter().map(|l| &l.path))
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim() == "ok",
        "VDSM format check of block domain {sd}:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn vdsm_check(domain_dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/vdsm_check.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(domain_dir)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim() == "ok",
        "VDSM format check of {}:\n{text}{}",
        domain_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one qemu-io command (e.g. `write -P 0x5a 0 1M`) on an image.
pub fn qemu_io(path: &Path, fmt: &str, cmd: &str) {
    let out = Command::new("qemu-io")
        .args(["-f", fmt, "-c", cmd])
        .arg(path)
        .output()
        .expect("qemu-io");
    assert!(
        out.status.success(),
        "qemu-io {cmd:?} on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts two images read the same (`qemu-img compare`, opened shared).
pub fn same_contents(a: &Path, afmt: &str, b: &Path, bfmt: &str) {
    let out = Command::new("qemu-img")
        .args(["compare", "-U", "-f", afmt, "-F", bfmt])
        .arg(a)
        .arg(b)
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "{} and {} differ: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn qemu_img_json(args: &[&str]) -> Value {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("qemu-img json")
}

/// A loop-mounted file system for tests that need a real, separate one
/// (ENOSPC, POSIXFS mounts). Needs root and loop devices.
pub struct LoopFs {
    /// Holds the image file; removed when the file system is dropped.
    _dir: tempfile::TempDir,
    pub device: String,
    pub mount: PathBuf,
}

impl LoopFs {
    /// Returns None (and says why) when the machine cannot do it.
    pub fn new(size_mib: u64, fs_type: &str, mount: bool) -> Option<LoopFs> {
        LoopFs::with_sector_size(size_mib, fs_type, mount, 512)
    }

    /// On a loop device with `sector_size`-byte logical sectors (4096: a
    /// 4K-native disk, which refuses 512-byte direct I/O).
    pub fn with_sector_size(
        size_mib: u64,
        fs_type: &str,
        mount: bool,
        sector_size: u32,
    ) -> Option<LoopFs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP: loop-mounted {fs_type} needs root");
            return None;
        }
        let image = tempfile::tempdir().expect("tempdir");
        let file = image.path().join("fs.img");
        let f = std::fs::File::create(&file).expect("image");
        f.set_len(size_mib << 20).expect("size");
        let out = Command::new("losetup")
            .args(["-f", "--show", "--sector-size", &sector_size.to_string()])
            .arg(&file)
            .output()
            .expect("losetup");
        if !out.status.success() {
            eprintln!(
                "SKIP: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mkfs = match fs_type {
            "xfs" => Command::new("mkfs.xfs")
                .args(["-q", "-f", &device])
                .status(),
            _ => Command::new(format!("mkfs.{fs_type}"))
                .args(["-q", "-F", &device])
                .status(),
        };
        assert!(mkfs.expect("mkfs").success(), "mkfs.{fs_type} failed");
        let mnt = image.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let fs = LoopFs {
            _dir: image,
            device,
            mount: mnt,
        };
        if mount {
            let st = Command::new("mount")
                .arg(&fs.device)
                .arg(&fs.mount)
                .status()
                .expect("mount");
            assert!(st.success(), "mount failed");
        }
        Some(fs)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// A C program (or shared object) from `tests/tools/`, built once per test
/// process with `cc -o <out> <source> <args>`.
pub fn built_tool(source: &str, out: &str, args: &[&str]) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, p)) = built.iter().find(|(o, _)| o == out) {
        return p.clone();
    }
    let dir = std::env::temp_dir().join(format!("cairn-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(out);
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tools")
        .join(source);
    let st = Command::new("cc")
        .arg("-o")
        .arg(&path)
        .arg(&src)
        .args(args)
        .status()
        .expect("cc (scripts/deps.sh installs gcc)");
    assert!(st.success(), "cannot build {source}");
    built.push((out.to_string(), path.clone()));
    path
}
