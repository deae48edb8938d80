//! Typed wrapper around `qemu-img`.
//!
//! Every change to an existing qcow2 image goes through qemu-img, which keeps
//! bitmaps, subclusters and compat levels right. Output is read as JSON;
//! long-running commands run with `-p` and report progress through a callback.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

/// Where the qemu-img binary is; overridable for tests and odd installs.
/// A qemu-img command that dies with cairnd.
fn command() -> Command {
    let mut cmd = Command::new(binary());
    super::child::die_with_parent(&mut cmd);
    cmd
}

pub fn binary() -> PathBuf {
    std::env::var_os("CAIRN_QEMU_IMG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-img"))
}

#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    #[error("cannot run qemu-img: {0}")]
    Spawn(#[source] io::Error),
    #[error("qemu-img {command} failed (exit {code:?}): {stderr}")]
    Failed {
        command: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("qemu-img {command} printed output Cairn cannot parse: {error}")]
    BadOutput { command: String, error: String },
}

impl QemuImgError {
    /// True when qemu-img failed because the file system is full.
    pub fn is_no_space(&self) -> bool {
        match self {
            QemuImgError::Failed { stderr, .. } => stderr.contains("No space left on device"),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocation {
    Off,
    Metadata,
    Falloc,
    Full,
}

impl Preallocation {
    fn as_str(self) -> &'static str {
        match self {
            Preallocation::Off => "off",
            Preallocation::Metadata => "metadata",
            Preallocation::Falloc => "falloc",
            Preallocation::Full => "full",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CreateOptions<'a> {
    /// "qcow2" or "raw".
    pub format: &'a str,
    pub size: Option<u64>,
    /// Backing file as it will be written in the header, and its format.
    pub backing: Option<(&'a str, &'a str)>,
    /// qcow2 compat level ("1.1" or "0.10").
    pub compat: Option<&'a str>,
    pub preallocation: Option<Preallocation>,
}

pub fn create(path: &Path, opts: &CreateOptions<'_>) -> Result<(), QemuImgError> {
    let mut cmd = command();
    cmd.arg("create").arg("-q").arg("-f").arg(opts.format);
    let mut o = Vec::new();
    if let Some(c) = opts.compat {
        o.push(format!("compat={c}"));
    }
    if let Some(p) = opts.preallocation {
        o.push(format!("preallocation={}", p.as_str()));
    }
    if !o.is_empty() {
        cmd.arg("-o").arg(o.join(","));
    }
    if let Some((file, fmt)) = opts.backing {
        // -u: do not open the backing file; the caller validated the chain.
        cmd.arg("-u").arg("-b").arg(file).arg("-F").arg(fmt);
    }
    cmd.arg(path);
    if let Some(size) = opts.size {
        cmd.arg(size.to_string());
    }
    run(cmd, "create").map(drop)
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    pub filename: String,
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    pub actual_size: Option<u64>,
    #[serde(rename = "cluster-size", default)]
    pub cluster_size: Option<u64>,
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
    #[serde(rename = "backing-filename-format", default)]
    pub backing_format: Option<String>,
    #[serde(rename = "dirty-flag", default)]
    pub dirty_flag: bool,
    #[serde(rename = "format-specific", default)]
    pub format_specific: Option<FormatSpecific>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FormatSpecific {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl ImageInfo {
    /// qcow2 compat level, if this is a qcow2 image.
    pub fn compat(&self) -> Option<&str> {
        self.format_specific.as_ref()?.data.get("compat")?.as_str()
    }

    /// Names of the persistent bitmaps of a qcow2 image.
    pub fn bitmap_names(&self) -> Vec<String> {
        let list = self
            .format_specific
            .as_ref()
            .and_then(|f| f.data.get("bitmaps"))
            .and_then(|b| b.as_array());
        list.into_iter()
            .flatten()
            .filter_map(|b| b.get("name")?.as_str().map(str::to_string))
            .collect()
    }

    /// Whether bitmap `name` has tracked every write since it was added:
    /// enabled ("auto") and not left "in-use" by a writer that died.
    pub fn bitmap_is_complete(&self, name: &str) -> bool {
        let list = self
            .format_specific
            .as_ref()
            .and_then(|f| f.data.get("bitmaps"))
            .and_then(|b| b.as_array());
        list.into_iter().flatten().any(|b| {
            let flags: Vec<&str> = b["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .collect();
            b["name"] == name && flags.contains(&"auto") && !flags.contains(&"in-use")
        })
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct InfoOptions<'a> {
    /// Expected format; never let qemu-img guess for stored volumes.
    pub format: Option<&'a str>,
    pub backing_chain: bool,
    /// `-U`: read an image another process holds open.
    pub force_share: bool,
}

impl<'a> InfoOptions<'a> {
    /// Reads the image as `format`, nothing else.
    pub fn format(format: &'a str) -> Self {
        InfoOptions {
            format: Some(format),
            ..Default::default()
        }
    }
}

pub fn info(path: &Path, opts: InfoOptions<'_>) -> Result<ImageInfo, QemuImgError> {
    let mut cmd = info_command(path, opts);
    if opts.backing_chain {
        // The chain form is a list, top first.
        let out = run(cmd, "info")?;
        let mut chain: Vec<ImageInfo> = parse_json("info", &out)?;
        return chain
            .drain(..)
            .next()
            .ok_or_else(|| QemuImgError::BadOutput {
                command: "info".into(),
                error: "empty chain".into(),
            });
    }
    cmd.arg(path);
    parse_json("info", &run(cmd, "info")?)
}

/// The whole chain, top first.
pub fn info_chain(path: &Path, opts: InfoOptions<'_>) -> Result<Vec<ImageInfo>, QemuImgError> {
    let cmd = info_command(
        path,
        InfoOptions {
            backing_chain: true,
            ..opts
        },
    );
    parse_json("info", &run(cmd, "info")?)
}

/// `qemu-img info` reads images anyone with access to the domain may have
/// written: it always runs under the untrusted-input limits.
fn info_command(path: &Path, opts: InfoOptions<'_>) -> Command {
    let mut cmd = command();
    limit_resources(&mut cmd);
    cmd.args(["info", "--output", "json"]);
    if let Some(f) = opts.format {
        cmd.arg("-f").arg(f);
    }
    if opts.force_share {
        cmd.arg("-U");
    }
    if opts.backing_chain {
        cmd.arg("--backing-chain").arg(path);
    }
    cmd
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct CheckResult {
    #[serde(rename = "check-errors", default)]
    pub check_errors: u64,
    #[serde(default)]
    pub corruptions: u64,
    #[serde(default)]
    pub leaks: u64,
    #[serde(rename = "image-end-offset", default)]
    pub image_end_offset: Option<u64>,
}

impl CheckResult {
    pub fn is_clean(&self) -> bool {
        self.check_errors == 0 && self.corruptions == 0 && self.leaks == 0
    }
}

/// `qemu-img check`. Leaks and corruptions are reported in the result, not as
/// an error: qemu-img exits 2 or 3 for them but the JSON is complete.
pub fn check(path: &Path, format: &str) -> Result<CheckResult, QemuImgError> {
    run_check(check_command(path, format))
}

/// qemu's protocol driver for `path`: a device (an LV) or a file.
fn protocol_driver(path: &Path) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => "host_device",
        _ => "file",
    }
}

/// `qemu-img check` of an image nobody vouches for (an upload): the
/// backing chain is not opened (`-U`, only this file, `backing: null`
/// through the json spec) and qemu-img runs with bounded memory and CPU
/// time, so a hostile image cannot exhaust the host.
pub fn check_untrusted(path: &Path, format: &str) -> Result<CheckResult, QemuImgError> {
    let mut cmd = command();
    let spec = serde_json::json!({
        "driver": format,
        "file": {"driver": protocol_driver(path), "filename": path},
        "backing": null,
    });
    cmd.args(["check", "--output", "json", "-U"])
        .arg(format!("json:{spec}"));
    limit_resources(&mut cmd);
    run_check(cmd)
}

/// Memory and CPU time a qemu-img run on untrusted input may use (as
/// VDSM's prlimit for `qemu-img info`).
const UNTRUSTED_MEMORY: u64 = 1 << 30;
const UNTRUSTED_CPU_SECS: u64 = 30;

fn limit_resources(cmd: &mut Command) {
    use rustix::process::{setrlimit, Resource, Rlimit};
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            for (res, limit) in [
                (Resource::As, UNTRUSTED_MEMORY),
                (Resource::Cpu, UNTRUSTED_CPU_SECS),
            ] {
                let l = Rlimit {
                    current: Some(limit),
                    maximum: Some(limit),
                };
                setrlimit(res, l).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
}

fn check_command(path: &Path, format: &str) -> Command {
    let mut cmd = command();
    cmd.args(["check", "--output", "json", "-f", format])
        .arg(path);
    cmd
}

fn run_check(cmd: Command) -> Result<CheckResult, QemuImgError> {
    let out = run_accepting(cmd, "check", &[0, 2, 3])?;
    parse_json("check", &out)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Measure {
    pub required: u64,
    #[serde(rename = "fully-allocated")]
    pub fully_allocated: u64,
    #[serde(default)]
    pub bitmaps: Option<u64>,
}

/// Space a `target_format` image would need: for an existing image (source
/// path and format) or for an empty image of `size` bytes.
/// What `qemu-img measure` measures.
#[derive(Debug, Clone)]
pub enum MeasureSource<'a> {
    /// An empty image of this many bytes.
    Size(u64),
    /// An image file of a known format (with its backing chain).
    File(&'a Path, &'a str),
    /// A `json:` block specification built by Cairn (never taken from an
    /// image), e.g. to cut a chain short.
    Spec(&'a serde_json::Value),
}

/// Space a `target_format` image would need for `source`.
pub fn measure(source: MeasureSource<'_>, target_format: &str) -> Result<Measure, QemuImgError> {
    let mut cmd = command();
    cmd.args(["measure", "--output", "json", "-O", target_format]);
    match source {
        MeasureSource::Size(size) => {
            cmd.arg("--size").arg(size.to_string());
        }
        MeasureSource::File(path, fmt) => {
            cmd.arg("-f").arg(fmt).arg(path);
        }
        MeasureSource::Spec(spec) => {
            cmd.arg(format!("json:{spec}"));
        }
    }
    parse_json("measure", &run(cmd, "measure")?)
}

/// Changes an image's virtual size; `shrink` allows making it smaller
/// (qcow2 refuses without it).
pub fn resize(path: &Path, format: &str, size: u64, shrink: bool) -> Result<(), QemuImgError> {
    let mut cmd = command();
    cmd.args(["resize", "-q", "-f", format]);
    if shrink {
        cmd.arg("--shrink");
    }
    cmd.arg(path).arg(size.to_string());
    run(cmd, "resize").map(drop)
}

#[derive(Debug, Clone)]
pub struct ConvertOptions<'a> {
    pub src_format: &'a str,
    pub dst_format: &'a str,
    /// qcow2 compat for a created target.
    pub compat: Option<&'a str>,
    /// Target backing file and format, written as given.
    pub backing: Option<(&'a str, &'a str)>,
    /// Write to an existing target (`-n`) instead of creating it.
    pub existing_target: bool,
    /// Out-of-order writes (`-W`).
    pub unordered: bool,
    pub bitmaps: bool,
    /// The existing target reads as zeros (`--target-is-zero`): qemu-img
    /// skips zero ranges instead of writing them.
    pub target_is_zero: bool,
    /// Parallel coroutines (`-m`).
    pub coroutines: Option<u32>,
}

/// `qemu-img convert -p -t none -T none`, reporting progress in percent.
pub fn convert(
    src: &Path,
    dst: &Path,
    opts: &ConvertOptions<'_>,
    progress: impl FnMut(f64),
) -> Result<(), QemuImgError> {
    let mut cmd = command();
    cmd.args(["convert", "-p", "-t", "none", "-T", "none"]);
    cmd.arg("-f")
        .arg(opts.src_format)
        .arg("-O")
        .arg(opts.dst_format);
    if opts.existing_target {
        cmd.arg("-n");
    }
    if opts.unordered {
        cmd.arg("-W");
    }
    if opts.bitmaps {
        cmd.arg("--bitmaps");
    }
    if opts.existing_target && opts.target_is_zero {
        cmd.arg("--target-is-zero");
    }
    if let Some(m) = opts.coroutines {
        cmd.arg("-m").arg(m.to_string());
    }
    let mut o = Vec::new();
    if let Some(c) = opts.compat.filter(|_| !opts.existing_target) {
        o.push(format!("compat={c}"));
    }
    if !o.is_empty() {
        cmd.arg("-o").arg(o.join(","));
    }
    if let Some((file, fmt)) = opts.backing {
        cmd.arg("-B").arg(file).arg("-F").arg(fmt);
    }
    cmd.arg(src).arg(dst);
    run_with_progress(cmd, "convert", progress)
}

/// `qemu-img commit -t none -b BASE`: writes `top`'s data into `base`, a
/// volume below it in its chain. With `-b` qemu-img leaves `top` as it was,
/// so an interrupted commit can simply be run again.
pub fn commit(top: &Path, base: &Path, mut progress: impl FnMut(f64)) -> Result<(), QemuImgError> {
    let mut cmd = command();
    cmd.args(["commit", "-p", "-t", "none", "-f", "qcow2", "-b"])
        .arg(base)
        .arg(top);
    run_with_progress(cmd, "commit", &mut progress)
}

/// `qemu-img rebase -u`: rewrites the backing file named in `image`'s
/// header without touching data (the caller knows the data is the same).
pub fn rebase_unsafe(
    image: &Path,
    backing: &str,
    backing_format: &str,
) -> Result<(), QemuImgError> {
    let mut cmd = command();
    cmd.args([
        "rebase",
        "-q",
        "-u",
        "-f",
        "qcow2",
        "-b",
        backing,
        "-F",
        backing_format,
    ])
    .arg(image);
    run(cmd, "rebase").map(drop)
}

/// `qemu-img amend -o compat=...` of a qcow2 image.
pub fn amend_compat(image: &Path, compat: &str) -> Result<(), QemuImgError> {
    let mut cmd = command();
    cmd.args(["amend", "-q", "-f", "qcow2", "-o"])
        .arg(format!("compat={compat}"))
        .arg(image);
    run(cmd, "amend").map(drop)
}

/// One range of `qemu-img map --output=json`.
#[derive(Debug, Clone, Deserialize)]
pub struct MapEntry {
    pub start: u64,
    pub length: u64,
    /// 0: the top image; n: n images down its backing chain.
    pub depth: u32,
    pub data: bool,
    #[serde(default)]
    pub zero: bool,
    #[serde(default)]
    pub compressed: bool,
    /// Where the data is in the image's file.
    #[serde(default)]
    pub offset: Option<u64>,
}

/// `qemu-img map` of an image given as a qemu json spec (`-U`: it may be
/// in use read-only).
pub fn map(spec: &serde_json::Value) -> Result<Vec<MapEntry>, QemuImgError> {
    let mut cmd = command();
    cmd.args(["map", "--output=json", "-U"])
        .arg(format!("json:{spec}"));
    parse_json("map", &run(cmd, "map")?)
}

/// What `qemu-img bitmap` does to one bitmap of a qcow2 image.
#[derive(Debug, Clone, Copy)]
pub enum BitmapOp<'a> {
    Add,
    Remove,
    /// Merge the same-named bitmap of this other qcow2 image into it.
    MergeFrom(&'a Path),
}

pub fn bitmap(image: &Path, name: &str, op: BitmapOp<'_>) -> Result<(), QemuImgError> {
    let mut cmd = command();
    cmd.args(["bitmap", "-f", "qcow2"]);
    match op {
        BitmapOp::Add => {
            cmd.arg("--add");
        }
        BitmapOp::Remove => {
            cmd.arg("--remove");
        }
        BitmapOp::MergeFrom(src) => {
            cmd.args(["--merge", name, "-F", "qcow2", "-b"]).arg(src);
        }
    }
    cmd.arg(image).arg(name);
    run(cmd, "bitmap").map(drop)
}

/// Runs a qemu-img command given `-p`, feeding its progress to `progress`.
fn run_with_progress(
    mut cmd: Command,
    name: &str,
    mut progress: impl FnMut(f64),
) -> Result<(), QemuImgError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(QemuImgError::Spawn)?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut parser = ProgressParser::default();
    let mut buf = [0u8; 4096];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => parser.feed(&buf[..n], &mut progress),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(QemuImgError::Spawn(e)),
        }
    }
    let status = child.wait().map_err(QemuImgError::Spawn)?;
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(QemuImgError::Failed {
            command: name.into(),
            code: status.code(),
            stderr: stderr.trim().into(),
        });
    }
    progress(100.0);
    Ok(())
}

/// Parses qemu-img's `-p` output: `    (12.34/100%)` records separated by `\r`.
#[derive(Debug, Default)]
pub struct ProgressParser {
    pending: Vec<u8>,
}

impl ProgressParser {
    pub fn feed(&mut self, bytes: &[u8], report: &mut impl FnMut(f64)) {
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                if let Some(p) = parse_progress(&self.pending) {
                    report(p);
                }
                self.pending.clear();
            } else if self.pending.len() < 64 {
                self.pending.push(b);
            }
        }
    }
}

pub fn parse_progress(record: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(record).ok()?.trim();
    let inner = s.strip_prefix('(')?.strip_suffix("/100%)")?;
    let v: f64 = inner.parse().ok()?;
    (0.0..=100.0).contains(&v).then_some(v)
}

fn run(cmd: Command, name: &str) -> Result<Vec<u8>, QemuImgError> {
    run_accepting(cmd, name, &[0])
}

fn run_accepting(mut cmd: Command, name: &str, ok_codes: &[i32]) -> Result<Vec<u8>, QemuImgError> {
    cmd.stdin(Stdio::null());
    let out = cmd.output().map_err(QemuImgError::Spawn)?;
    match out.status.code() {
        Some(c) if ok_codes.contains(&c) => Ok(out.stdout),
        code => Err(QemuImgError::Failed {
            command: name.to_string(),
            code,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(name: &str, out: &[u8]) -> Result<T, QemuImgError> {
    serde_json::from_slice(out).map_err(|e| QemuImgError::BadOutput {
        command: name.into(),
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_records() {
        let mut seen = Vec::new();
        let mut p = ProgressParser::default();
        p.feed(b"    (0.00/100%)\r    (12.5", &mut |v| seen.push(v));
        p.feed(b"0/100%)\r    (100.00/100%)\n", &mut |v| seen.push(v));
        assert_eq!(seen, vec![0.0, 12.5, 100.0]);
        assert_eq!(parse_progress(b"garbage"), None);
        assert_eq!(parse_progress(b"(101.00/100%)"), None);
    }
}

#[cfg(test)]
mod real_tests {
    use super::*;

    #[test]
    fn convert_reports_progress_and_copies() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.raw");
        std::fs::write(&src, vec![7u8; 4 << 20]).unwrap();
        let dst = dir.path().join("dst.qcow2");
        let mut seen = Vec::new();
        let opts = ConvertOptions {
            src_format: "raw",
            dst_format: "qcow2",
            compat: Some("1.1"),
            backing: None,
            existing_target: false,
            unordered: true,
            bitmaps: false,
            target_is_zero: false,
            coroutines: None,
        };
        convert(&src, &dst, &opts, |p| seen.push(p)).unwrap();
        assert_eq!(seen.last(), Some(&100.0));
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "progress never goes back: {seen:?}"
        );
        let info = info(&dst, InfoOptions::format("qcow2")).unwrap();
        assert_eq!(info.virtual_size, 4 << 20);
        assert!(check(&dst, "qcow2").unwrap().is_clean());
    }

    #[test]
    fn measure_and_errors() {
        let m = measure(MeasureSource::Size(1 << 30), "qcow2").unwrap();
        assert!(m.required < 1 << 20 && m.fully_allocated > 1 << 30);
        let dir = tempfile::tempdir().unwrap();
        let err = info(&dir.path().join("missing"), InfoOptions::default()).unwrap_err();
        assert!(matches!(err, QemuImgError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("missing"));
    }
}
