//! A small, typed runner for lvm2: the commands block domains need, their
//! JSON reports parsed into structs, and a cache of VG and LV state.
//!
//! Every command names its devices explicitly (a filter accepting only the
//! domain's PVs), never the host's whole /dev: a shared LUN holds other
//! hosts' and guests' LVM metadata. At most [`MAX_COMMANDS`] run at once
//! (VDSM's limit). The runner's own changes update the cache with their
//! known outcome (a failed one drops it); a change made by another host is
//! seen within [`FRESH_FOR`], or at once after [`Lvm::invalidate`].
//!
//! `CAIRN_LVM` may name another program than `lvm` (tests on a kernel
//! without device-mapper use a stand-in from `tests/tools/`).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Deserialize;

/// lvm commands running at once, at most.
pub const MAX_COMMANDS: usize = 10;
/// How long one lvm command may take: a command on a dead LUN blocks in
/// the kernel, never a cairnd thread for ever.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// VDSM's settings for shared LUNs: no udev device list (random failures),
/// no hints (other hosts create PVs), no local metadata backups.
const BASE_CONFIG: &str = "devices { preferred_names=[\"^/dev/mapper/\"] \
ignore_suspended_devices=1 write_cache_state=0 disable_after_error_count=3 hints=\"none\" \
obtain_device_list_from_udev=0 %FILTER% } global { prioritise_write_locks=1 wait_for_locks=1 \
use_lvmpolld=1 } backup { backup=0 archive=0 }";

#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    #[error("lvm {command}: {reason}")]
    Failed { command: String, reason: String },
    #[error("lvm {command} did not finish in {} s", COMMAND_TIMEOUT.as_secs())]
    Timeout { command: String },
    #[error("cannot run lvm: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("device {0:?} cannot be named in an lvm filter")]
    BadDevice(PathBuf),
    #[error("lvm {command}: unexpected report: {reason}")]
    Report { command: String, reason: String },
}

impl LvmError {
    /// The VG or LV named does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, LvmError::Failed { reason, .. }
            if reason.contains("not found") || reason.contains("Failed to find"))
    }

    /// The VG has no room for the request.
    pub fn is_no_space(&self) -> bool {
        matches!(self, LvmError::Failed { reason, .. }
            if reason.to_ascii_lowercase().contains("insufficient free space"))
    }
}

pub type Result<T> = std::result::Result<T, LvmError>;

/// A volume group as `vgs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgInfo {
    pub name: String,
    pub uuid: String,
    pub size: u64,
    pub free: u64,
    pub extent_size: u64,
    pub extent_count: u64,
    pub free_count: u64,
    pub tags: Vec<String>,
    /// vg_attr: permission (w/r), resizeable (z), exported (x), partial
    /// (p), allocation policy, clustered (c).
    pub attr: String,
    /// Bumped by every metadata change, by any host.
    pub seqno: u64,
    pub pv_count: u64,
    pub mda_size: u64,
    pub mda_free: u64,
}

/// A logical volume as `lvs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvInfo {
    pub name: String,
    pub size: u64,
    pub tags: Vec<String>,
    /// lv_attr: state at index 4 ('a' active), open at 5 ('o').
    pub attr: String,
}

impl LvInfo {
    pub fn is_active(&self) -> bool {
        self.attr.as_bytes().get(4) == Some(&b'a')
    }

    pub fn is_open(&self) -> bool {
        self.attr.as_bytes().get(5) == Some(&b'o')
    }

    fn set_active(&mut self, on: bool) {
        let mut attr: Vec<u8> = format!("{:-<10}", self.attr).into_bytes();
        attr[4] = if on { b'a' } else { b'-' };
        self.attr = String::from_utf8(attr).unwrap_or_default();
    }
}

/// A physical volume as `pvs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvInfo {
    pub name: PathBuf,
    pub uuid: String,
    pub size: u64,
    pub vg_name: String,
    pub vg_uuid: String,
    /// Where the first extent starts on the device.
    pub pe_start: u64,
    pub pe_count: u64,
    pub pe_alloc_count: u64,
}

/// What a new LV is.
#[derive(Debug, Clone, Default)]
pub struct NewLv<'a> {
    pub name: &'a str,
    pub size: u64,
    pub tags: &'a [String],
    /// One segment, where a test reads the LV's bytes through its PV.
    pub contiguous: bool,
    /// Mapped on this host as it is made (one command, not two).
    pub activate: bool,
}

/// The runner. One per cairnd: its limit and cache are host-wide.
#[derive(Debug)]
pub struct Lvm {
    program: OsString,
    running: Mutex<usize>,
    slot_free: Condvar,
    cache: Mutex<HashMap<String, Cached>>,
    /// VGs whose metadata only this process changes (the SPM's domains):
    /// what is cached of them is current without a recheck.
    owned: Mutex<HashSet<String>>,
}

#[derive(Debug, Clone)]
struct Cached {
    vg: VgInfo,
    /// Sorted by name. Shared: a reader holds it while changes make a new
    /// list, so a domain of 10,000 LVs is not copied per lookup.
    lvs: Arc<Vec<LvInfo>>,
    checked: std::time::Instant,
}

/// How long a VG read here is trusted before its sequence number is read
/// again: only the SPM changes a domain's VG, and it keeps its own cache
/// exact, so other hosts see a change at most this late. A cache updated
/// by an own change holds the sequence number from before it, so the next
/// check reads the whole VG again.
const FRESH_FOR: Duration = Duration::from_secs(1);

impl Default for Lvm {
    fn default() -> Self {
        Lvm::new()
    }
}

impl Lvm {
    pub fn new() -> Lvm {
        Lvm::with_program(std::env::var_os("CAIRN_LVM").unwrap_or_else(|| "lvm".into()))
    }

    pub fn with_program(program: impl Into<OsString>) -> Lvm {
        Lvm {
            program: program.into(),
            running: Mutex::new(0),
            slot_free: Condvar::new(),
            cache: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashSet::new()),
        }
    }

    /// The `--config` text accepting exactly `devices`.
    fn config(devices: &[PathBuf]) -> Result<String> {
        let mut accept = String::new();
        for dev in devices {
            let text = dev.to_str().unwrap_or("");
            // Only names that need no escaping inside lvm's regex and quotes.
            let plain = !text.is_empty()
                && text.starts_with("/dev/")
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-:".contains(&b));
            if !plain {
                return Err(LvmError::BadDevice(dev.clone()));
            }
            accept.push_str(&format!("\"a|^{text}$|\", "));
        }
        let filter = format!("filter=[{accept}\"r|.*|\"]");
        Ok(BASE_CONFIG.replace("%FILTER%", &filter))
    }

    /// Runs `lvm <args>` seeing only `devices`; returns its stdout.
    fn run(&self, devices: &[PathBuf], args: &[&str]) -> Result<String> {
        let command = args.first().copied().unwrap_or("").to_string();
        let config = Self::config(devices)?;
        let mut cmd = Command::new(&self.program);
        cmd.arg(args[0])
            .arg("--config")
            .arg(&config)
            .args(&args[1..])
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .env("LC_ALL", "C");
        crate::primitives::child::die_with_parent(&mut cmd);
        let _slot = self.slot();
        let started = std::time::Instant::now();
        let out = crate::primitives::child::output_within(cmd, COMMAND_TIMEOUT)
            .map_err(LvmError::Spawn)?
            .ok_or_else(|| LvmError::Timeout {
                command: command.clone(),
            })?;
        tracing::debug!(command = %command, args = ?&args[1..], ms = started.elapsed().as_secs_f64() * 1e3, status = ?out.status.code(), "lvm");
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // lvm's warnings (no backup, activation disabled) are noise here.
            let reason: Vec<&str> = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("WARNING"))
                .collect();
            return Err(LvmError::Failed {
                command,
                reason: if reason.is_empty() {
                    format!("exit status {:?}", out.status.code())
                } else {
                    reason.join("; ")
                },
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits for one of the [`MAX_COMMANDS`] slots.
    fn slot(&self) -> SlotGuard<'_> {
        let mut running = self.running.lock().expect("lvm slots");
        while *running >= MAX_COMMANDS {
            running = self.slot_free.wait(running).expect("lvm slots");
        }
        *running += 1;
        SlotGuard(self)
    }

    fn changed(&self, vg: &str) {
        self.cache.lock().expect("lvm cache").remove(vg);
    }

    /// Runs a command that changes `vg`, and forgets what is cached of it
    /// whether or not the command succeeded (a failed one may have
    /// changed part of it).
    fn change(&self, devices: &[PathBuf], vg: &str, args: &[&str]) -> Result<()> {
        self.change_known(devices, vg, args, |_| false)
    }

    /// [`Lvm::change`] of a command whose outcome `apply` writes into the
    /// cached VG, saving the re-read; `apply` returns false when it cannot.
    fn change_known(
        &self,
        devices: &[PathBuf],
        vg: &str,
        args: &[&str],
        apply: impl FnOnce(&mut Cached) -> bool,
    ) -> Result<()> {
        let result = self.run(devices, args);
        let mut cache = self.cache.lock().expect("lvm cache");
        let kept = result.is_ok() && cache.get_mut(vg).is_some_and(apply);
        if !kept {
            cache.remove(vg);
        }
        result.map(drop)
    }

    /// Forgets what is known of `vg` (another host changed it).
    pub fn invalidate(&self, vg: &str) {
        self.changed(vg);
    }

    /// From now on only this process changes `vg`'s metadata (it is the
    /// SPM): it is read afresh once, then served from the cache, which
    /// follows this process's own changes, with no recheck.
    pub fn own(&self, vg: &str) {
        if self.owned.lock().expect("owned vgs").insert(vg.to_string()) {
            self.changed(vg);
        }
    }

    /// Other processes may change any VG again (the SPM role ended).
    pub fn disown_all(&self) {
        self.owned.lock().expect("owned vgs").clear();
    }

    // --- Reports --------------------------------------------------------

    fn report<T: for<'de> Deserialize<'de>>(
        &self,
        devices: &[PathBuf],
        args: &[&str],
        kind: &str,
    ) -> Result<Vec<T>> {
        let text = self.run(devices, args)?;
        let bad = |reason: String| LvmError::Report {
            command: args[0].to_string(),
            reason,
        };
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::new();
        for part in doc["report"]
            .as_array()
            .ok_or_else(|| bad("no report".into()))?
        {
            if let Some(rows) = part.get(kind) {
                out.extend(
                    serde_json::from_value::<Vec<T>>(rows.clone())
                        .map_err(|e| bad(e.to_string()))?,
                );
            }
        }
        Ok(out)
    }

    pub fn pvs(&self, devices: &[PathBuf]) -> Result<Vec<PvInfo>> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let args = vec![
            "pvs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pv_name,pv_uuid,pv_size,vg_name,vg_uuid,pe_start,pv_pe_count,pv_pe_alloc_count",
        ];
        // The filter names the devices: those that are no PV are left out
        // (naming them would fail the command).
        let rows: Vec<PvRow> = self.report(devices, &args, "pv")?;
        rows.into_iter().map(PvRow::parse).collect()
    }

    /// The VG and its LVs, from the cache when nothing changed them here.
    fn load(&self, devices: &[PathBuf], vg: &str) -> Result<Cached> {
        let cached = self.cache.lock().expect("lvm cache").get(vg).cloned();
        let owned = self.owned.lock().expect("owned vgs").contains(vg);
        let reuse = match cached {
            Some(c) if owned || c.checked.elapsed() < FRESH_FOR => return Ok(c),
            Some(mut c) => {
                // Unchanged since it was read (by any host): its LVs are as cached.
                let info = self.vg_report(devices, vg)?;
                (c.vg.seqno == info.seqno).then(|| {
                    c.vg = info;
                    c.checked = std::time::Instant::now();
                    c
                })
            }
            None => None,
        };
        let fresh = match reuse {
            Some(c) => c,
            None => self.read_vg(devices, vg)?,
        };
        self.cache
            .lock()
            .expect("lvm cache")
            .insert(vg.to_string(), fresh.clone());
        Ok(fresh)
    }

    const VG_FIELDS: &'static str = "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,\
        vg_extent_count,vg_free_count,vg_tags,vg_attr,vg_seqno,pv_count,vg_mda_size,vg_mda_free";
    const LV_AND_VG_FIELDS: &'static str = "lv_name,lv_size,lv_tags,lv_attr,vg_name,vg_uuid,\
        vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,vg_tags,vg_attr,vg_seqno,\
        pv_count,vg_mda_size,vg_mda_free";

    /// The VG and its LVs in one `lvs` (each row repeats the VG's fields);
    /// a VG without LVs takes a `vgs`.
    fn read_vg(&self, devices: &[PathBuf], vg: &str) -> Result<Cached> {
        let rows: Vec<LvVgRow> = self.report(
            devices,
            &[
                "lvs",
                "--reportformat",
                "json",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                Self::LV_AND_VG_FIELDS,
                vg,
            ],
            "lv",
        )?;
        let mut info = None;
        let mut lvs = Vec::with_capacity(rows.len());
        for row in rows {
            if info.is_none() {
                info = Some(row.vg.parse()?);
            }
            lvs.push(row.lv.parse()?);
        }
        lvs.sort_by(|a, b| a.name.cmp(&b.name));
        let vg = match info {
            Some(info) => info,
            None => self.vg_report(devices, vg)?,
        };
        Ok(Cached {
            vg,
            lvs: Arc::new(lvs),
            checked: std::time::Instant::now(),
        })
    }

    fn vg_report(&self, devices: &[PathBuf], vg: &str) -> Result<VgInfo> {
        let vgs: Vec<VgRow> = self.report(
            devices,
            &[
                "vgs",
                "--reportformat",
                "json",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                Self::VG_FIELDS,
                vg,
            ],
            "vg",
        )?;
        vgs.into_iter()
            .next()
            .ok_or_else(|| LvmError::Failed {
                command: "vgs".into(),
                reason: format!("Volume group \"{vg}\" not found"),
            })?
            .parse()
    }

    /// Every VG on `devices`, read now.
    pub fn vgs(&self, devices: &[PathBuf]) -> Result<Vec<VgInfo>> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<VgRow> = self.report(
            devices,
            &[
                "vgs",
                "--reportformat",
                "json",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                Self::VG_FIELDS,
            ],
            "vg",
        )?;
        rows.into_iter().map(VgRow::parse).collect()
    }

    pub fn vg(&self, devices: &[PathBuf], vg: &str) -> Result<VgInfo> {
        Ok(self.load(devices, vg)?.vg)
    }

    /// The VG and its LVs as of one read.
    pub fn vg_and_lvs(&self, devices: &[PathBuf], vg: &str) -> Result<(VgInfo, Arc<Vec<LvInfo>>)> {
        let c = self.load(devices, vg)?;
        Ok((c.vg, c.lvs))
    }

    /// The VG's LVs, sorted by name; the same list until the VG changes.
    pub fn lvs(&self, devices: &[PathBuf], vg: &str) -> Result<Arc<Vec<LvInfo>>> {
        Ok(self.load(devices, vg)?.lvs)
    }

    pub fn lv(&self, devices: &[PathBuf], vg: &str, lv: &str) -> Result<LvInfo> {
        let lvs = self.lvs(devices, vg)?;
        lvs.binary_search_by(|l| l.name.as_str().cmp(lv))
            .map(|i| lvs[i].clone())
            .map_err(|_| LvmError::Failed {
                command: "lvs".into(),
                reason: format!("Failed to find logical volume \"{vg}/{lv}\""),
            })
    }

    /// An LV's extents as "<pv>:<first>-<last>", a segment each, read now.
    pub fn segments(&self, devices: &[PathBuf], vg: &str, lv: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct SegRow {
            seg_pe_ranges: String,
        }
        let name = format!("{vg}/{lv}");
        let rows: Vec<SegRow> = self.report(
            devices,
            &[
                "lvs",
                "--reportformat",
                "json",
                "-o",
                "seg_pe_ranges",
                &name,
            ],
            "lv",
        )?;
        Ok(rows
            .iter()
            .flat_map(|r| r.seg_pe_ranges.split_whitespace().map(str::to_string))
            .collect())
    }

    // --- Changes ----------------------------------------------------------

    /// Makes `device` a PV with `metadata_size` bytes of metadata area.
    pub fn pvcreate(&self, device: &Path, metadata_size: u64) -> Result<()> {
        let dev = device.to_path_buf();
        let size = format!("{}b", metadata_size);
        self.run(
            std::slice::from_ref(&dev),
            &[
                "pvcreate",
                "--metadatasize",
                &size,
                "--yes",
                device.to_str().unwrap_or(""),
            ],
        )
        .map(drop)
    }

    /// Makes `devices` PVs for a domain VG: two metadata areas of
    /// `metadata_size` each, all ignored but the first PV's, so only one
    /// PV carries live VG metadata (VDSM's layout: no host ever "repairs"
    /// copies that differ).
    pub fn pvcreate_for_domain(&self, devices: &[PathBuf], metadata_size: u64) -> Result<()> {
        let size = format!("{}b", metadata_size);
        let mut args = vec![
            "pvcreate",
            "--metadatasize",
            &size,
            "--metadatacopies",
            "2",
            "--metadataignore",
            "y",
            "--yes",
        ];
        args.extend(devices.iter().filter_map(|d| d.to_str()));
        self.run(devices, &args)?;
        let first = devices.first().and_then(|d| d.to_str()).unwrap_or("");
        self.run(devices, &["pvchange", "--metadataignore", "n", first])
            .map(drop)
    }

    pub fn vgcreate(
        &self,
        vg: &str,
        devices: &[PathBuf],
        extent_size: u64,
        tags: &[String],
    ) -> Result<()> {
        let extent = format!("{}b", extent_size);
        // Never activated by the host's own LVM at boot: guests' LVs are
        // Cairn's to activate where they are used.
        let mut args = vec![
            "vgcreate",
            "--setautoactivation",
            "n",
            "--physicalextentsize",
            &extent,
        ];
        for t in tags {
            args.extend(["--addtag", t.as_str()]);
        }
        args.push(vg);
        args.extend(devices.iter().filter_map(|d| d.to_str()));
        self.change(devices, vg, &args)
    }

    pub fn vgremove(&self, devices: &[PathBuf], vg: &str) -> Result<()> {
        self.change(devices, vg, &["vgremove", "--force", vg])
    }

    /// Adds `new` devices to the VG, made PVs by the same command (so a
    /// crash leaves them in the VG or not at all) with two metadata areas
    /// of `metadata_size` each, both ignored: the VG's metadata stays on
    /// its first PV, as VDSM keeps it.
    pub fn vgextend(
        &self,
        devices: &[PathBuf],
        vg: &str,
        new: &[PathBuf],
        metadata_size: u64,
    ) -> Result<()> {
        let all: Vec<PathBuf> = devices.iter().chain(new).cloned().collect();
        let size = format!("{metadata_size}b");
        let mut args = vec![
            "vgextend",
            "--autobackup",
            "n",
            "--metadatasize",
            &size,
            "--pvmetadatacopies",
            "2",
            "--metadataignore",
            "y",
            "--yes",
            vg,
        ];
        args.extend(new.iter().filter_map(|d| d.to_str()));
        self.change(&all, vg, &args)
    }

    /// Wipes the PV labels of `devices` (no longer in any VG).
    pub fn pvremove(&self, devices: &[PathBuf]) -> Result<()> {
        let mut args = vec!["pvremove", "--yes"];
        args.extend(devices.iter().filter_map(|d| d.to_str()));
        self.run(devices, &args).map(drop)
    }

    /// Grows a PV to its device's size (a LUN grown on the storage).
    pub fn pvresize(&self, devices: &[PathBuf], vg: &str, device: &Path) -> Result<()> {
        self.change(devices, vg, &["pvresize", device.to_str().unwrap_or("")])
    }

    pub fn change_vg_tags(
        &self,
        devices: &[PathBuf],
        vg: &str,
        add: &[String],
        del: &[String],
    ) -> Result<()> {
        let mut args = vec!["vgchange", "--autobackup", "n"];
        for t in del {
            args.extend(["--deltag", t.as_str()]);
        }
        for t in add {
            args.extend(["--addtag", t.as_str()]);
        }
        args.push(vg);
        self.change(devices, vg, &args)
    }

    /// Creates an LV, left unzeroed (its user writes what it needs).
    pub fn lvcreate(&self, devices: &[PathBuf], vg: &str, new: &NewLv<'_>) -> Result<()> {
        let size = sectors(new.size);
        let mut args = vec![
            "lvcreate",
            "--autobackup",
            "n",
            "--activate",
            if new.activate { "y" } else { "n" },
            "--zero",
            "n",
            "--wipesignatures",
            "n",
            "--contiguous",
            if new.contiguous { "y" } else { "n" },
            "--size",
            &size,
            "--name",
            new.name,
        ];
        for t in new.tags {
            args.extend(["--addtag", t.as_str()]);
        }
        args.push(vg);
        self.change_known(devices, vg, &args, |c| {
            let extent = c.vg.extent_size.max(1);
            let extents = new.size.div_ceil(extent);
            // Where lvm would have placed it is not known: a contiguous
            // LV's caller reads its segments, so read the VG again.
            if new.contiguous || extents > c.vg.free_count {
                return false;
            }
            c.vg.free_count -= extents;
            c.vg.free -= extents * extent;
            let mut lv = LvInfo {
                name: new.name.to_string(),
                size: extents * extent,
                tags: tags(&new.tags.join(",")),
                attr: "-wi-------".into(),
            };
            lv.set_active(new.activate);
            let lvs = Arc::make_mut(&mut c.lvs);
            let at = lvs.partition_point(|l| l.name.as_str() < new.name);
            lvs.insert(at, lv);
            true
        })
    }

    pub fn lvremove(&self, devices: &[PathBuf], vg: &str, lvs: &[&str]) -> Result<()> {
        let names: Vec<String> = lvs.iter().map(|lv| format!("{vg}/{lv}")).collect();
        let mut args = vec!["lvremove", "--autobackup", "n", "--force"];
        args.extend(names.iter().map(String::as_str));
        self.change_known(devices, vg, &args, |c| {
            let extent = c.vg.extent_size.max(1);
            let freed: u64 = c
                .lvs
                .iter()
                .filter(|l| lvs.contains(&l.name.as_str()))
                .map(|l| l.size / extent)
                .sum();
            Arc::make_mut(&mut c.lvs).retain(|l| !lvs.contains(&l.name.as_str()));
            c.vg.free_count += freed;
            c.vg.free += freed * extent;
            true
        })
    }

    /// Grows an LV to `size` bytes (rounded up to extents); a no-op if it
    /// is that large already. An LV active here is remapped at once.
    pub fn lvextend(&self, devices: &[PathBuf], vg: &str, lv: &str, size: u64) -> Result<()> {
        self.extend(devices, vg, lv, size, &[])
    }

    /// [`Lvm::lvextend`] of the VG metadata only, leaving this host's
    /// mapping as it is: what an SPM does for an LV that a guest on another
    /// host is using (that host refreshes it first; VDSM BZ 1983882).
    pub fn lvextend_metadata_only(
        &self,
        devices: &[PathBuf],
        vg: &str,
        lv: &str,
        size: u64,
    ) -> Result<()> {
        self.extend(devices, vg, lv, size, &["--driverloaded", "n"])
    }

    fn extend(
        &self,
        devices: &[PathBuf],
        vg: &str,
        lv: &str,
        size: u64,
        extra: &[&str],
    ) -> Result<()> {
        let current = self.lv(devices, vg, lv)?;
        if current.size >= size {
            return Ok(());
        }
        let target = sectors(size);
        let name = format!("{vg}/{lv}");
        let mut args = vec!["lvextend", "--autobackup", "n"];
        args.extend(extra);
        args.extend(["--size", &target, &name]);
        // The SPM extends thin volumes while guests write: the next extend
        // must not pay for a re-read.
        self.change_known(devices, vg, &args, |c| {
            let extent = c.vg.extent_size.max(1);
            let Some(l) = Arc::make_mut(&mut c.lvs).iter_mut().find(|l| l.name == lv) else {
                return false;
            };
            let added = size.div_ceil(extent).saturating_sub(l.size / extent);
            if added > c.vg.free_count {
                return false;
            }
            l.size += added * extent;
            c.vg.free_count -= added;
            c.vg.free -= added * extent;
            // One metadata commit: the next check finds the cache current
            // unless another host changed the VG too (then it reads all).
            c.vg.seqno += 1;
            true
        })
    }

    pub fn change_lv_tags(
        &self,
        devices: &[PathBuf],
        vg: &str,
        lv: &str,
        add: &[String],
        del: &[String],
    ) -> Result<()> {
        self.change_lvs_tags(devices, vg, &[lv], add, del)
    }

    /// The same tag change on several LVs, in one command.
    pub fn change_lvs_tags(
        &self,
        devices: &[PathBuf],
        vg: &str,
        lvs: &[&str],
        add: &[String],
        del: &[String],
    ) -> Result<()> {
        let names: Vec<String> = lvs.iter().map(|lv| format!("{vg}/{lv}")).collect();
        let mut args = vec!["lvchange", "--autobackup", "n"];
        for t in del {
            args.extend(["--deltag", t.as_str()]);
        }
        for t in add {
            args.extend(["--addtag", t.as_str()]);
        }
        args.extend(names.iter().map(String::as_str));
        self.change_known(devices, vg, &args, |c| {
            for lv in Arc::make_mut(&mut c.lvs)
                .iter_mut()
                .filter(|l| lvs.contains(&l.name.as_str()))
            {
                lv.tags.retain(|t| !del.contains(t));
                for t in add {
                    if !lv.tags.contains(t) {
                        lv.tags.push(t.clone());
                    }
                }
                lv.tags.sort();
            }
            true
        })
    }

    /// Activates or deactivates LVs of `vg`.
    pub fn set_active(&self, devices: &[PathBuf], vg: &str, lvs: &[&str], on: bool) -> Result<()> {
        let names: Vec<String> = lvs.iter().map(|lv| format!("{vg}/{lv}")).collect();
        let mut args = vec![
            "lvchange",
            "--autobackup",
            "n",
            "--activate",
            if on { "y" } else { "n" },
        ];
        args.extend(names.iter().map(String::as_str));
        self.change_known(devices, vg, &args, |c| {
            for lv in Arc::make_mut(&mut c.lvs)
                .iter_mut()
                .filter(|l| lvs.contains(&l.name.as_str()))
            {
                lv.set_active(on);
            }
            true
        })
    }

    /// Makes an active LV show a size another host gave it. The VG's
    /// metadata is unchanged: what is cached stays (it is rechecked by its
    /// sequence number as always).
    pub fn refresh(&self, devices: &[PathBuf], vg: &str, lv: &str) -> Result<()> {
        let name = format!("{vg}/{lv}");
        self.run(devices, &["lvchange", "--refresh", &name])
            .map(drop)
    }
}

struct SlotGuard<'a>(&'a Lvm);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.running.lock().expect("lvm slots") -= 1;
        self.0.slot_free.notify_one();
    }
}

/// A size for lvm, which takes whole 512-byte sectors: rounded up.
fn sectors(bytes: u64) -> String {
    format!("{}s", bytes.div_ceil(512))
}

fn number(command: &str, field: &str, text: &str) -> Result<u64> {
    text.parse().map_err(|_| LvmError::Report {
        command: command.into(),
        reason: format!("{field} is {text:?}"),
    })
}

/// Tags are a set: kept sorted, so a cache updated here and a fresh
/// report compare equal.
fn tags(text: &str) -> Vec<String> {
    let mut tags: Vec<String> = text
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    tags.sort();
    tags
}

#[derive(Deserialize)]
struct VgRow {
    vg_name: String,
    vg_uuid: String,
    vg_size: String,
    vg_free: String,
    vg_extent_size: String,
    vg_extent_count: String,
    vg_free_count: String,
    vg_tags: String,
    vg_attr: String,
    vg_seqno: String,
    pv_count: String,
    vg_mda_size: String,
    vg_mda_free: String,
}

impl VgRow {
    fn parse(self) -> Result<VgInfo> {
        let n = |field: &str, text: &str| number("vgs", field, text);
        Ok(VgInfo {
            size: n("vg_size", &self.vg_size)?,
            free: n("vg_free", &self.vg_free)?,
            extent_size: n("vg_extent_size", &self.vg_extent_size)?,
            extent_count: n("vg_extent_count", &self.vg_extent_count)?,
            free_count: n("vg_free_count", &self.vg_free_count)?,
            tags: tags(&self.vg_tags),
            attr: self.vg_attr,
            seqno: n("vg_seqno", &self.vg_seqno)?,
            pv_count: n("pv_count", &self.pv_count)?,
            mda_size: n("vg_mda_size", &self.vg_mda_size)?,
            mda_free: n("vg_mda_free", &self.vg_mda_free)?,
            name: self.vg_name,
            uuid: self.vg_uuid,
        })
    }
}

#[derive(Deserialize)]
struct LvRow {
    lv_name: String,
    lv_size: String,
    lv_tags: String,
    lv_attr: String,
}

impl LvRow {
    fn parse(self) -> Result<LvInfo> {
        Ok(LvInfo {
            size: number("lvs", "lv_size", &self.lv_size)?,
            tags: tags(&self.lv_tags),
            name: self.lv_name,
            attr: self.lv_attr,
        })
    }
}

/// A row of `lvs` with the VG's fields beside the LV's.
#[derive(Deserialize)]
struct LvVgRow {
    #[serde(flatten)]
    lv: LvRow,
    #[serde(flatten)]
    vg: VgRow,
}

#[derive(Deserialize)]
struct PvRow {
    pv_name: String,
    pv_uuid: String,
    pv_size: String,
    vg_name: String,
    vg_uuid: String,
    pe_start: String,
    pv_pe_count: String,
    pv_pe_alloc_count: String,
}

impl PvRow {
    fn parse(self) -> Result<PvInfo> {
        let n = |field: &str, text: &str| number("pvs", field, text);
        Ok(PvInfo {
            size: n("pv_size", &self.pv_size)?,
            pe_start: n("pe_start", &self.pe_start)?,
            pe_count: n("pv_pe_count", &self.pv_pe_count)?,
            pe_alloc_count: n("pv_pe_alloc_count", &self.pv_pe_alloc_count)?,
            name: PathBuf::from(self.pv_name),
            uuid: self.pv_uuid,
            vg_name: self.vg_name,
            vg_uuid: self.vg_uuid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_accepts_only_the_named_devices() {
        let cfg =
            Lvm::config(&[PathBuf::from("/dev/mapper/360014051"), "/dev/loop3".into()]).unwrap();
        assert!(
            cfg.contains(r#"filter=["a|^/dev/mapper/360014051$|", "a|^/dev/loop3$|", "r|.*|"]"#),
            "{cfg}"
        );
        // Nothing at all when no device is named.
        assert!(Lvm::config(&[]).unwrap().contains(r#"filter=["r|.*|"]"#));
        for bad in [
            "/dev/sd[a-z]",
            "/dev/x|y",
            "sda",
            "/dev/a b",
            "/dev/\"x",
            "",
        ] {
            assert!(Lvm::config(&[PathBuf::from(bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn reports_parse_into_types() {
        let row: LvRow = serde_json::from_str(
            r#"{"lv_name":"lv1", "lv_size":"209715200", "lv_tags":"IU_x,PU_y",
                "lv_attr":"-wi-ao----"}"#,
        )
        .unwrap();
        let mut lv = row.parse().unwrap();
        assert_eq!(lv.size, 200 << 20);
        assert_eq!(lv.tags, vec!["IU_x", "PU_y"]);
        assert!(lv.is_active() && lv.is_open());
        lv.set_active(false);
        assert_eq!(lv.attr, "-wi--o----");
        let row: VgRow = serde_json::from_str(
            r#"{"vg_name":"v", "vg_uuid":"u", "vg_size":"1069547520", "vg_free":"859832320",
                "vg_extent_size":"4194304", "vg_extent_count":"255", "vg_free_count":"205",
                "vg_tags":"", "vg_attr":"wz--n-", "vg_seqno":"2", "pv_count":"1", "vg_mda_size":"1044480", "vg_mda_free":"520192"}"#,
        )
        .unwrap();
        let vg = row.parse().unwrap();
        assert_eq!((vg.free_count, vg.tags.len(), vg.seqno), (205, 0, 2));
        let row: LvRow =
            serde_json::from_str(r#"{"lv_name":"x", "lv_size":"12x", "lv_tags":"", "lv_attr":""}"#)
                .unwrap();
        assert!(matches!(row.parse(), Err(LvmError::Report { .. })));
    }
}
