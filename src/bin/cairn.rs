//! cairn: the command line for people (and scripts, with --json).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn::client::{Client, ClientError, Target};
use cairn::config::{default_data_dir, socket_in};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    version,
    about = "Manage Cairn storage: domains, pools, images, volumes and tasks"
)]
struct Cli {
    /// cairnd's Unix socket [default: <data-dir>/cairnd.sock].
    #[arg(long, global = true, env = "CAIRN_SOCKET")]
    socket: Option<PathBuf>,
    /// cairnd's data directory, to find its socket.
    #[arg(long, global = true, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Talk to cairnd over TCP instead (host:port), with mutual TLS.
    #[arg(long, global = true, env = "CAIRN_CONNECT")]
    connect: Option<String>,
    /// This client's certificate for --connect [default:
    /// <data-dir>/pki/client.pem].
    #[arg(long, global = true, env = "CAIRN_CERT")]
    cert: Option<PathBuf>,
    /// Its private key [default: <data-dir>/pki/client-key.pem].
    #[arg(long, global = true, env = "CAIRN_KEY")]
    key: Option<PathBuf>,
    /// The CA that signed cairnd's certificate [default:
    /// <data-dir>/pki/ca.pem].
    #[arg(long, global = true, env = "CAIRN_CA")]
    ca: Option<PathBuf>,
    /// With --connect: plain TCP, to a cairnd serving insecure_plain_tcp.
    #[arg(long, global = true)]
    insecure_plain: bool,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Overview: connected pool, SPM role, domains and space.
    Status,
    /// Storage connections (connectStorageServer).
    #[command(subcommand)]
    Storage(StorageCmd),
    /// Storage domains.
    #[command(subcommand)]
    Domain(DomainCmd),
    /// The storage pool.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Images (chains of volumes).
    #[command(subcommand)]
    Image(ImageCmd),
    /// Volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Asynchronous tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Certificates for mutual TLS: a cluster CA, host and client
    /// certificates (written to <data-dir>/pki unless --dir).
    #[command(subcommand)]
    Pki(PkiCmd),
    /// Call any JSON-RPC verb: cairn call Volume.getInfo '{"volumeID": ...}'
    Call {
        method: String,
        /// Parameters as a JSON object or array.
        #[arg(default_value = "{}")]
        params: String,
    },
}

#[derive(Subcommand, Debug)]
enum PkiCmd {
    /// Create the cluster CA (ca.pem, ca-key.pem): once per cluster; copy
    /// ca.pem to every host and client, keep ca-key.pem safe.
    Init {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The CA's common name.
        #[arg(long, default_value = "Cairn cluster CA")]
        name: String,
    },
    /// Issue <name>.pem and <name>-key.pem signed by the CA: --host for a
    /// cairnd listener (cairnd looks for "host"), --client for a caller
    /// (the CLI looks for "client").
    Issue {
        name: String,
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        host: bool,
        #[arg(long)]
        client: bool,
        /// More names or IP addresses the host is reached by (repeatable).
        #[arg(long)]
        san: Vec<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum StorageCmd {
    /// Connect storage: a local directory, or a mountable file system.
    Connect(ConnArgs),
    /// Disconnect storage (unmounts).
    Disconnect(ConnArgs),
}

#[derive(Args, Debug)]
struct ConnArgs {
    /// LOCALFS, POSIXFS, NFS or GLUSTERFS.
    #[arg(long = "type", default_value = "LOCALFS")]
    kind: String,
    /// Path (LOCALFS) or mount source (device, server:/export).
    spec: String,
    /// File system type for POSIXFS (xfs, ext4, ...).
    #[arg(long)]
    vfs_type: Option<String>,
    /// Mount options.
    #[arg(long)]
    options: Option<String>,
}

#[derive(Subcommand, Debug)]
enum DomainCmd {
    /// Domains visible on the connected storage.
    List,
    /// Domain metadata.
    Info { domain: Option<String> },
    /// Create a data domain on connected storage.
    Create {
        /// The connection's path or mount source.
        remote_path: String,
        #[arg(long, default_value = "data")]
        name: String,
        #[arg(long = "type", default_value = "LOCALFS")]
        kind: String,
        #[arg(long, default_value_t = 5)]
        version: u32,
        /// 512, 4096 or 0 to detect.
        #[arg(long, default_value_t = 0)]
        block_size: u32,
        /// Domain UUID [default: a new one].
        #[arg(long)]
        id: Option<String>,
    },
    /// Attach a domain to the connected pool (SPM).
    Attach { domain: String },
    /// Make an attached domain active (SPM).
    Activate { domain: String },
    /// Make an active domain attached only (SPM).
    Deactivate { domain: String },
    /// Detach an inactive domain from the pool (SPM).
    Detach {
        domain: String,
        #[arg(long)]
        force: bool,
    },
    /// Start monitoring a domain (on shared storage: join its lockspace).
    Monitor {
        domain: String,
        /// This host's id in the domain's lockspace.
        #[arg(long, default_value_t = 1)]
        host_id: u32,
    },
    /// Stop monitoring a domain.
    Unmonitor { domain: String },
    /// Health of the monitored domains.
    Health,
    /// Sanlock leases of a shared domain as stored: host ids and the
    /// reserved leases (whose owner is the SPM).
    Leases { domain: Option<String> },
    /// Erase a domain and all its data.
    Format {
        domain: String,
        #[arg(long)]
        auto_detach: bool,
    },
}

#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Pool metadata and member domains.
    Info,
    /// Create a pool with MASTER as its master domain.
    Create {
        master: String,
        #[arg(long, default_value = "cairn")]
        name: String,
        /// Other member domains (attached).
        #[arg(long = "domain")]
        domains: Vec<String>,
        /// Pool UUID [default: a new one].
        #[arg(long)]
        id: Option<String>,
    },
    /// Connect this host to a pool (another host may have created it).
    Connect {
        pool: String,
        master: String,
        /// This host's id in the pool (1-2000), unique per host.
        #[arg(long)]
        host_id: u32,
        #[arg(long, default_value_t = 1)]
        master_version: i64,
    },
    /// Disconnect this host from its pool (not while SPM).
    Disconnect {
        #[arg(long)]
        host_id: u32,
    },
    /// Rebuild a pool whose master is lost on a surviving domain (from a
    /// host not connected to it).
    ReconstructMaster {
        pool: String,
        master: String,
        #[arg(long)]
        host_id: u32,
        /// Must be newer than the master version the domain knows.
        #[arg(long)]
        master_version: i64,
        /// Other members: UUID or UUID:attached (default active).
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Move the master role to another active domain (SPM only; waits for
    /// the task). Other hosts then follow with `pool refresh`.
    SwitchMaster {
        new_master: String,
        /// [default: the pool's master version + 1]
        #[arg(long)]
        master_version: Option<i64>,
    },
    /// Re-read the pool; with MASTER, follow a master that moved.
    Refresh {
        master: Option<String>,
        /// [default: what MASTER's metadata says]
        #[arg(long)]
        master_version: Option<i64>,
    },
    /// SPM role of this host.
    SpmStatus,
    /// Become SPM (waits for the task).
    SpmStart,
    /// Give up the SPM role.
    SpmStop,
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Images of a domain.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Volumes of an image, base first.
    Show {
        image: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Delete an image and all its volumes.
    Delete {
        image: String,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Make an image usable by a VM; prints the path to open.
    Prepare {
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Upload a local file into a volume through an image transfer ticket
    /// (sparsely: holes are sent as zero requests). A RAW volume takes raw
    /// data; a COW volume takes a qcow2 file, checked when the upload ends.
    Upload {
        file: PathBuf,
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Download a volume's bytes into a local file (sparse; a COW volume
    /// comes as its qcow2 file).
    Download {
        image: String,
        volume: String,
        file: PathBuf,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Release a prepared image.
    Teardown {
        image: String,
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum VolumeCmd {
    /// Create a volume (a new image, or a snapshot with --parent).
    Create {
        /// Virtual size: bytes or with a suffix (K, M, G, T; powers of 1024).
        #[arg(long)]
        size: String,
        /// cow or raw.
        #[arg(long, default_value = "cow")]
        format: String,
        /// sparse or preallocated.
        #[arg(long, default_value = "sparse")]
        allocation: String,
        /// Image UUID [default: a new image].
        #[arg(long)]
        image: Option<String>,
        /// Volume UUID [default: a new one].
        #[arg(long)]
        volume: Option<String>,
        /// Parent volume in the same image: creates a snapshot.
        #[arg(long)]
        parent: Option<String>,
        /// A template to clone thin into a new image: IMAGE/VOLUME.
        #[arg(long, conflicts_with = "parent")]
        template: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        domain: Option<String>,
        /// Wait for the task, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Volumes of a domain with their metadata.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Volume metadata and sizes.
    Info {
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Delete a volume (a leaf, or a base with no children).
    Delete {
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        wait: bool,
        /// Overwrite the data with zeros before it goes.
        #[arg(long)]
        post_zero: bool,
    },
    /// Grow a volume's virtual size.
    Extend {
        image: String,
        volume: String,
        /// New virtual size (K, M, G, T suffixes).
        #[arg(long)]
        size: String,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Merge a volume into its parent and remove it (cold: the image must
    /// not be prepared). Runs prepareMerge, SDM.merge and finalizeMerge.
    Merge {
        image: String,
        /// The volume merged away.
        volume: String,
        /// Carry its bitmaps into the parent (qcow2 parents only).
        #[arg(long)]
        bitmaps: bool,
        #[arg(long)]
        domain: Option<String>,
    },
    /// Make a base volume a template (SHARED) that new images can clone.
    MakeTemplate {
        image: String,
        volume: String,
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum TaskCmd {
    /// All tasks with their state.
    List,
    Status {
        task: String,
    },
    /// Wait for a task (progress bar), then clear it.
    Wait {
        task: String,
    },
    Clear {
        task: String,
    },
    Stop {
        task: String,
    },
}

struct Ctx {
    client: Client,
    json: bool,
    data_dir: PathBuf,
}

type Res<T> = Result<T, ClientError>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let target = match (&cli.connect, &cli.socket) {
        (Some(addr), _) if cli.insecure_plain => Target::Tcp(addr.clone()),
        (Some(addr), _) => {
            let default = cairn::tls::TlsFiles::in_dir(&cairn::config::pki_in(&data_dir), "client");
            let files = cairn::tls::TlsFiles {
                cert: cli.cert.clone().unwrap_or(default.cert),
                key: cli.key.clone().unwrap_or(default.key),
                ca: cli.ca.clone().unwrap_or(default.ca),
            };
            match cairn::tls::client_config(&files) {
                Ok(config) => Target::Tls {
                    addr: addr.clone(),
                    config,
                },
                Err(e) => {
                    eprintln!("cairn: --connect uses mutual TLS: {e} (pass --cert/--key/--ca, or see `cairn pki`)");
                    return ExitCode::from(2);
                }
            }
        }
        (None, Some(s)) => Target::Unix(s.clone()),
        (None, None) => Target::Unix(socket_in(&data_dir)),
    };
    let ctx = Ctx {
        client: Client::new(target),
        json: cli.json,
        data_dir,
    };
    match run(&ctx, cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ClientError::Rpc { code, message }) => {
            eprintln!("cairn: error {code}: {message}");
            ExitCode::FAILURE
        }
        Err(e @ ClientError::Transport { .. }) => {
            eprintln!("cairn: {e}\n(is cairnd running? start it with `cairnd`, or pass --socket/--data-dir)");
            ExitCode::from(2)
        }
    }
}

fn pki(data_dir: &std::path::Path, cmd: &PkiCmd) -> Result<PathBuf, cairn::pki::PkiError> {
    let dir = |d: &Option<PathBuf>| d.clone().unwrap_or_else(|| cairn::config::pki_in(data_dir));
    match cmd {
        PkiCmd::Init { dir: d, name } => cairn::pki::init_ca(&dir(d), name),
        PkiCmd::Issue {
            name,
            host,
            san,
            dir: d,
            ..
        } => {
            let role = if *host {
                cairn::pki::Role::Host
            } else {
                cairn::pki::Role::Client
            };
            cairn::pki::issue(&dir(d), name, role, san)
        }
    }
}

fn usage(msg: impl Into<String>) -> ClientError {
    ClientError::Rpc {
        code: -32602,
        message: msg.into(),
    }
}

fn run(ctx: &Ctx, cmd: Cmd) -> Res<()> {
    match cmd {
        Cmd::Status => status(ctx),
        Cmd::Pki(c) => {
            let path = pki(&ctx.data_dir, &c).map_err(|e| usage(e.to_string()))?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::Call { method, params } => {
            let params: Value = serde_json::from_str(&params)
                .map_err(|e| usage(format!("params are not JSON: {e}")))?;
            let v = ctx.client.call(&method, params)?;
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            Ok(())
        }
        Cmd::Storage(c) => storage(ctx, c),
        Cmd::Domain(c) => domain(ctx, c),
        Cmd::Pool(c) => pool(ctx, c),
        Cmd::Image(c) => image(ctx, c),
        Cmd::Volume(c) => volume(ctx, c),
        Cmd::Task(c) => task(ctx, c),
    }
}

// ---- defaults: the connected pool and its master domain ----

fn pool_id(ctx: &Ctx) -> Res<String> {
    let pools = ctx
        .client
        .call("Host.getConnectedStoragePools", json!({}))?;
    pools
        .get(0)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| usage("this host is not connected to a storage pool"))
}

fn domain_id(ctx: &Ctx, given: Option<String>) -> Res<String> {
    match given {
        Some(d) => Ok(d),
        None => pool_and_domain(ctx, None).map(|(_, sd)| sd),
    }
}

/// The connected pool and a domain (the given one, or the pool's master).
fn pool_and_domain(ctx: &Ctx, given: Option<String>) -> Res<(String, String)> {
    let sp = pool_id(ctx)?;
    let sd = match given {
        Some(d) => d,
        None => {
            let info = ctx
                .client
                .call("StoragePool.getInfo", json!({"storagepoolID": sp}))?;
            info["info"]["master_uuid"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    Ok((sp, sd))
}

fn new_uuid() -> String {
    cairn::types::Uuid::new_v4().to_string()
}

// ---- output ----

fn print_value(ctx: &Ctx, v: &Value, human: impl FnOnce(&Value)) {
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(v).expect("json"));
    } else {
        human(v);
    }
}

/// An object as aligned `key value` lines (or JSON with --json).
/// Reports a command that changed something: `value` with --json, else
/// one line.
fn done(ctx: &Ctx, value: Value, line: &str) {
    print_value(ctx, &value, |_| println!("{line}"));
}

fn print_fields(ctx: &Ctx, v: &Value) {
    print_value(ctx, v, print_pairs);
}

fn print_pairs(v: &Value) {
    let fields = v.as_object().cloned().unwrap_or_default();
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    for (k, val) in &fields {
        println!("{k:<width$}  {}", s(val));
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn parse_size(text: &str) -> Res<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| usage(format!("invalid size {text:?}")))?;
    let mult: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(usage(format!(
                "invalid size suffix in {text:?} (use K, M, G or T)"
            )))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| usage(format!("size {text:?} is too large")))
}

// ---- tasks ----

/// Polls a task with a progress bar until it finishes, then clears it: what
/// the CLI waited for, nobody else will clear.
fn wait_task(ctx: &Ctx, id: &str, what: &str) -> Res<Value> {
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .expect("progress template"),
        );
        b.set_message(what.to_string());
        b.enable_steady_tick(Duration::from_millis(100));
        b
    };
    let start = Instant::now();
    loop {
        let st = ctx.client.call("Task.getStatus", json!({"taskID": id}))?;
        if st["taskState"] == "finished" {
            bar.finish_and_clear();
            if st["taskResult"] == "success" {
                ctx.client.call("Task.clear", json!({"taskID": id}))?;
                return Ok(st);
            }
            // The failure is reported below; a task already rolled back
            // has nothing more to give.
            let _ = ctx.client.call("Task.clear", json!({"taskID": id}));
            return Err(ClientError::Rpc {
                code: st["code"].as_i64().unwrap_or(0),
                message: format!(
                    "{} (task {id} ended {})",
                    s(&st["message"]),
                    s(&st["taskResult"])
                ),
            });
        }
        bar.set_message(format!("{what}: {}", s(&st["taskState"])));
        let pause = if start.elapsed() < Duration::from_secs(1) {
            20
        } else {
            200
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
}

/// Starts host job `method` (a new `job_id` is added to `params`), shows
/// its progress, and returns its final `HostJobInfo` if it is done.
fn run_job(ctx: &Ctx, method: &str, mut params: Value, what: &str) -> Res<Value> {
    let job = new_uuid();
    params["job_id"] = json!(job);
    ctx.client.call(method, params)?;
    let bar = if ctx.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(100);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}% [{elapsed}]")
                .expect("progress template"),
        );
        b.set_message(what.to_string());
        b
    };
    let status = loop {
        let jobs = ctx.client.call("Host.getJobs", json!({"job_ids": [job]}))?;
        let j = jobs[&job].clone();
        bar.set_position(j["progress"].as_u64().unwrap_or(0));
        if j["status"] != "pending" && j["status"] != "running" {
            break j;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    bar.finish_and_clear();
    if status["status"] != "done" {
        return Err(ClientError::Rpc {
            code: status["error"]["code"].as_i64().unwrap_or(0),
            message: format!(
                "{} (job {job} {})",
                s(&status["error"]["message"]),
                s(&status["status"])
            ),
        });
    }
    Ok(status)
}

fn task(ctx: &Ctx, cmd: TaskCmd) -> Res<()> {
    match cmd {
        TaskCmd::List => {
            let all = ctx.client.call("Host.getAllTasksStatuses", json!({}))?;
            print_value(ctx, &all, |v| {
                let rows = v
                    .as_object()
                    .map(|m| {
                        m.values()
                            .map(|t| {
                                vec![
                                    s(&t["taskID"]),
                                    s(&t["taskState"]),
                                    s(&t["taskResult"]),
                                    s(&t["code"]),
                                    s(&t["message"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(&["TASK", "STATE", "RESULT", "CODE", "MESSAGE"], rows);
            });
        }
        TaskCmd::Status { task } => {
            let st = ctx.client.call("Task.getStatus", json!({"taskID": task}))?;
            print_value(ctx, &st, |t| {
                println!(
                    "{} {} {} (code {}) {}",
                    s(&t["taskID"]),
                    s(&t["taskState"]),
                    s(&t["taskResult"]),
                    s(&t["code"]),
                    s(&t["message"])
                )
            });
        }
        TaskCmd::Wait { task } => {
            let st = wait_task(ctx, &task, "waiting")?;
            print_value(ctx, &st, |_| println!("task {task} succeeded"));
        }
        TaskCmd::Clear { task } => {
            ctx.client.call("Task.clear", json!({"taskID": task}))?;
        }
        TaskCmd::Stop { task } => {
            ctx.client.call("Task.stop", json!({"taskID": task}))?;
        }
    }
    Ok(())
}

// ---- commands ----

fn status(ctx: &Ctx) -> Res<()> {
    let pools = ctx
        .client
        .call("Host.getConnectedStoragePools", json!({}))?;
    let Some(pool) = pools.get(0).and_then(Value::as_str) else {
        let out = json!({"pool": null});
        print_value(ctx, &out, |_| println!("not connected to a storage pool"));
        return Ok(());
    };
    let info = ctx
        .client
        .call("StoragePool.getInfo", json!({"storagepoolID": pool}))?;
    let spm = ctx
        .client
        .call("StoragePool.getSpmStatus", json!({"storagepoolID": pool}))?;
    let out = json!({"pool": pool, "info": info["info"], "spm": spm, "domains": info["dominfo"]});
    print_value(ctx, &out, |o| {
        println!("pool    {} ({})", pool, s(&o["info"]["name"]));
        println!(
            "master  {} (version {})",
            s(&o["info"]["master_uuid"]),
            s(&o["info"]["version"])
        );
        println!(
            "spm     {} (host {}, lver {})",
            s(&o["spm"]["spmStatus"]),
            s(&o["spm"]["spmId"]),
            s(&o["spm"]["spmLver"])
        );
        let rows = o["domains"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(sd, d)| {
                        vec![
                            sd.clone(),
                            s(&d["status"]),
                            human_size(num(&d["disktotal"])),
                            human_size(num(&d["diskfree"])),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!();
        table(&["DOMAIN", "STATUS", "SIZE", "FREE"], rows);
    });
    Ok(())
}

fn storage(ctx: &Ctx, cmd: StorageCmd) -> Res<()> {
    let (verb, a) = match cmd {
        StorageCmd::Connect(a) => ("StoragePool.connectStorageServer", a),
        StorageCmd::Disconnect(a) => ("StoragePool.disconnectStorageServer", a),
    };
    let mut conn = json!({"id": new_uuid(), "connection": a.spec});
    if let Some(t) = a.vfs_type {
        conn["vfs_type"] = json!(t);
    }
    if let Some(o) = a.options {
        conn["mnt_options"] = json!(o);
    }
    let params = json!({
        "storagepoolID": "00000000-0000-0000-0000-000000000000",
        "domainType": a.kind.to_ascii_uppercase(),
        "connectionParams": [conn],
    });
    let res = ctx.client.call(verb, params)?;
    let code = res[0]["status"].as_i64().unwrap_or(-1);
    print_value(ctx, &res, |_| {
        if code == 0 {
            println!("ok");
        }
    });
    if code != 0 {
        return Err(ClientError::Rpc {
            code,
            message: format!("{verb} failed (see cairnd's log for details)"),
        });
    }
    Ok(())
}

fn domain(ctx: &Ctx, cmd: DomainCmd) -> Res<()> {
    let membership = |verb: &str, sd: &str, extra: Value| -> Res<()> {
        let mut params = json!({"storagedomainID": sd, "storagepoolID": pool_id(ctx)?});
        for (k, v) in extra.as_object().expect("an object") {
            params[k] = v.clone();
        }
        ctx.client.call(verb, params)?;
        done(
            ctx,
            json!({"storagedomainID": sd}),
            &format!("{verb}: {sd}"),
        );
        Ok(())
    };
    match cmd {
        DomainCmd::Attach { domain } => membership("StorageDomain.attach", &domain, json!({}))?,
        DomainCmd::Activate { domain } => membership("StorageDomain.activate", &domain, json!({}))?,
        DomainCmd::Deactivate { domain } => {
            membership("StorageDomain.deactivate", &domain, json!({}))?
        }
        DomainCmd::Detach { domain, force } => {
            membership("StorageDomain.detach", &domain, json!({"force": force}))?
        }
        DomainCmd::Monitor { domain, host_id } => {
            ctx.client.call(
                "Host.startMonitoringDomain",
                json!({"sdUUID": domain, "hostID": host_id}),
            )?;
            done(
                ctx,
                json!({"sdUUID": domain}),
                &format!("monitoring {domain}"),
            );
        }
        DomainCmd::Unmonitor { domain } => {
            ctx.client
                .call("Host.stopMonitoringDomain", json!({"sdUUID": domain}))?;
            done(
                ctx,
                json!({"sdUUID": domain}),
                &format!("no longer monitoring {domain}"),
            );
        }
        DomainCmd::Leases { domain } => {
            let sd = domain_id(ctx, domain)?;
            let dump = ctx
                .client
                .call("StorageDomain.dump", json!({"sd_id": sd, "full": true}))?;
            let out = json!({"lockspace": dump["lockspace"], "leases": dump["leases"], "xleases": dump["xleases"]});
            print_value(ctx, &out, |v| {
                if v["lockspace"].is_null() {
                    println!("domain {sd} has no sanlock leases (LOCALFS keeps a host-local lock)");
                    return;
                }
                let rows = |key: &str| {
                    v[key]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|r| {
                            vec![
                                s(&r["offset"]),
                                s(&r["resource"]),
                                s(&r["own"]),
                                s(&r["gen"]),
                                s(&r["timestamp"]),
                                if r["lver"].is_null() {
                                    "-".into()
                                } else {
                                    s(&r["lver"])
                                },
                            ]
                        })
                        .collect()
                };
                let headers = ["OFFSET", "NAME", "OWNER", "GEN", "TIMESTAMP", "LVER"];
                println!("host ids (dom_md/ids):");
                table(&headers, rows("lockspace"));
                println!("\nreserved leases (dom_md/leases):");
                table(&headers, rows("leases"));
            });
        }
        DomainCmd::Health => {
            let stats = ctx.client.call("Host.getStorageRepoStats", json!({}))?;
            print_value(ctx, &stats, |v| {
                let rows = v
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(id, st)| {
                                vec![
                                    id.clone(),
                                    if st["valid"] == true {
                                        "valid"
                                    } else {
                                        "INVALID"
                                    }
                                    .into(),
                                    s(&st["code"]),
                                    format!("{} s", s(&st["delay"])),
                                    format!("{} s ago", s(&st["lastCheck"])),
                                    s(&st["acquired"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(
                    &["DOMAIN", "STATE", "CODE", "DELAY", "CHECKED", "HOST ID"],
                    rows,
                );
            });
        }
        DomainCmd::List => {
            let ids = ctx.client.call("Host.getStorageDomains", json!({}))?;
            let mut infos = Vec::new();
            for id in ids.as_array().cloned().unwrap_or_default() {
                let info = ctx
                    .client
                    .call("StorageDomain.getInfo", json!({"storagedomainID": id}))?;
                let stats = ctx
                    .client
                    .call("StorageDomain.getStats", json!({"storagedomainID": id}))?;
                infos.push(json!({"info": info, "stats": stats}));
            }
            let out = Value::Array(infos);
            print_value(ctx, &out, |v| {
                let rows = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|d| {
                                let i = &d["info"];
                                vec![
                                    s(&i["uuid"]),
                                    s(&i["name"]),
                                    s(&i["type"]),
                                    s(&i["role"]),
                                    s(&i["version"]),
                                    human_size(num(&d["stats"]["diskfree"])),
                                    s(&i["remotePath"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(
                    &["DOMAIN", "NAME", "TYPE", "ROLE", "V", "FREE", "PATH"],
                    rows,
                );
            });
        }
        DomainCmd::Info { domain } => {
            let sd = domain_id(ctx, domain)?;
            let info = ctx
                .client
                .call("StorageDomain.getInfo", json!({"storagedomainID": sd}))?;
            print_fields(ctx, &info);
        }
        DomainCmd::Create {
            remote_path,
            name,
            kind,
            version,
            block_size,
            id,
        } => {
            let sd = id.unwrap_or_else(new_uuid);
            ctx.client.call(
                "StorageDomain.create",
                json!({
                    "storagedomainID": sd, "domainType": kind.to_ascii_uppercase(), "typeArgs": remote_path,
                    "name": name, "domainClass": "Data", "version": version, "blockSize": block_size,
                }),
            )?;
            print_value(ctx, &json!({"storagedomainID": sd}), |_| println!("{sd}"));
        }
        DomainCmd::Format {
            domain,
            auto_detach,
        } => {
            ctx.client.call(
                "StorageDomain.format",
                json!({"storagedomainID": domain, "autoDetach": auto_detach}),
            )?;
        }
    }
    Ok(())
}

fn pool(ctx: &Ctx, cmd: PoolCmd) -> Res<()> {
    match cmd {
        PoolCmd::Create {
            master,
            name,
            domains,
            id,
        } => {
            let sp = id.unwrap_or_else(new_uuid);
            let mut all = domains;
            all.push(master.clone());
            ctx.client.call(
                "StoragePool.create",
                json!({"storagepoolID": sp, "name": name, "masterSdUUID": master, "masterVersion": 1, "domainList": all}),
            )?;
            print_value(ctx, &json!({"storagepoolID": sp}), |_| {
                println!("pool {sp}")
            });
            return Ok(());
        }
        PoolCmd::Connect {
            pool,
            master,
            host_id,
            master_version,
        } => {
            ctx.client.call(
                "StoragePool.connect",
                json!({"storagepoolID": pool, "hostID": host_id, "scsiKey": "", "masterSdUUID": master, "masterVersion": master_version}),
            )?;
            done(
                ctx,
                json!({"storagepoolID": pool}),
                &format!("connected to pool {pool} as host {host_id}"),
            );
            return Ok(());
        }
        PoolCmd::ReconstructMaster {
            pool,
            master,
            host_id,
            master_version,
            domains,
        } => {
            let mut dict = serde_json::Map::new();
            for d in domains {
                let (id, status) = d.split_once(':').unwrap_or((&d, "active"));
                dict.insert(id.to_string(), json!(status));
            }
            dict.insert(master.clone(), json!("active"));
            ctx.client.call(
                "StoragePool.reconstructMaster",
                json!({"storagepoolID": pool, "hostId": host_id, "name": "cairn", "masterSdUUID": master,
                       "masterVersion": master_version, "domainDict": dict}),
            )?;
            done(
                ctx,
                json!({"storagepoolID": pool, "masterSdUUID": master}),
                &format!("pool {pool} rebuilt on master {master}"),
            );
            return Ok(());
        }
        _ => {}
    }
    let sp = pool_id(ctx)?;
    match cmd {
        PoolCmd::Create { .. } | PoolCmd::Connect { .. } | PoolCmd::ReconstructMaster { .. } => {
            unreachable!("handled above")
        }
        PoolCmd::Disconnect { host_id } => {
            ctx.client.call(
                "StoragePool.disconnect",
                json!({"storagepoolID": sp, "hostID": host_id, "scsiKey": ""}),
            )?;
            done(
                ctx,
                json!({"storagepoolID": sp}),
                &format!("disconnected from pool {sp}"),
            );
        }
        PoolCmd::Info => {
            let info = ctx
                .client
                .call("StoragePool.getInfo", json!({"storagepoolID": sp}))?;
            print_value(ctx, &info, |v| print_pairs(&v["info"]));
        }
        PoolCmd::SpmStatus => {
            let st = ctx
                .client
                .call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}))?;
            print_value(ctx, &st, |v| {
                println!(
                    "{} (host {}, lver {})",
                    s(&v["spmStatus"]),
                    s(&v["spmId"]),
                    s(&v["spmLver"])
                )
            });
        }
        PoolCmd::SpmStart => {
            let t = ctx.client.call(
                "StoragePool.spmStart",
                json!({"storagepoolID": sp, "prevID": -1, "prevLver": "-1"}),
            )?;
            wait_task(ctx, &s(&t), "becoming SPM")?;
            print_value(ctx, &json!({"spm": true}), |_| println!("this host is SPM"));
        }
        PoolCmd::SpmStop => {
            ctx.client
                .call("StoragePool.spmStop", json!({"storagepoolID": sp}))?;
            done(ctx, json!({"spm": false}), "this host is no longer SPM");
        }
        PoolCmd::SwitchMaster {
            new_master,
            master_version,
        } => {
            let info = ctx
                .client
                .call("StoragePool.getInfo", json!({"storagepoolID": sp}))?;
            let old = s(&info["info"]["master_uuid"]);
            let version = match master_version {
                Some(v) => v,
                None => info["info"]["master_ver"].as_i64().unwrap_or(0) + 1,
            };
            let t = ctx.client.call(
                "StoragePool.switchMaster",
                json!({"storagepoolID": sp, "oldMasterUUID": old, "newMasterUUID": new_master, "masterVersion": version}),
            )?;
            wait_task(ctx, &s(&t), "switching the master")?;
            done(
                ctx,
                json!({"storagepoolID": sp, "masterSdUUID": new_master, "masterVersion": version}),
                &format!("master of pool {sp} is now {new_master} (version {version})"),
            );
        }
        PoolCmd::Refresh {
            master,
            master_version,
        } => {
            let (master, version) = match master {
                None => {
                    let info = ctx
                        .client
                        .call("StoragePool.getInfo", json!({"storagepoolID": sp}))?;
                    (
                        s(&info["info"]["master_uuid"]),
                        info["info"]["master_ver"].as_i64().unwrap_or(0),
                    )
                }
                Some(m) => {
                    let version = match master_version {
                        Some(v) => v,
                        None => ctx
                            .client
                            .call("StorageDomain.getInfo", json!({"storagedomainID": m}))?
                            ["master_ver"]
                            .as_i64()
                            .unwrap_or(0),
                    };
                    (m, version)
                }
            };
            ctx.client.call(
                "StoragePool.refresh",
                json!({"storagepoolID": sp, "masterSdUUID": master, "masterVersion": version}),
            )?;
            done(
                ctx,
                json!({"storagepoolID": sp, "masterSdUUID": master, "masterVersion": version}),
                &format!("pool {sp} refreshed from master {master} (version {version})"),
            );
        }
    }
    Ok(())
}

fn image(ctx: &Ctx, cmd: ImageCmd) -> Res<()> {
    match cmd {
        ImageCmd::List { domain } => {
            let sd = domain_id(ctx, domain)?;
            let imgs = ctx
                .client
                .call("StorageDomain.getImages", json!({"storagedomainID": sd}))?;
            print_value(ctx, &imgs, |v| {
                for i in v.as_array().cloned().unwrap_or_default() {
                    println!("{}", s(&i));
                }
            });
        }
        ImageCmd::Show { image, domain } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let vols = ctx.client.call(
                "Image.getVolumes",
                json!({"imageID": image, "storagepoolID": sp, "storagedomainID": sd}),
            )?;
            let mut infos = Vec::new();
            for v in vols.as_array().cloned().unwrap_or_default() {
                infos.push(volume_query(
                    ctx,
                    "Volume.getInfo",
                    (&sp, &sd, &image, &s(&v)),
                )?);
            }
            // Base first: order by the parent links.
            let depths: Vec<usize> = infos.iter().map(|i| depth(&infos, i)).collect();
            let mut ordered: Vec<(usize, Value)> = depths.into_iter().zip(infos).collect();
            ordered.sort_by_key(|(d, _)| *d);
            let out = Value::Array(ordered.into_iter().map(|(_, v)| v).collect());
            print_value(ctx, &out, volume_table);
        }
        ImageCmd::Delete {
            image,
            domain,
            wait,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let t = ctx.client.call(
                "Image.delete",
                json!({"imageID": image, "storagepoolID": sp, "storagedomainID": sd, "postZero": false, "force": false}),
            )?;
            finish_task(ctx, &t, wait, "deleting image")?;
        }
        ImageCmd::Prepare {
            image,
            volume,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let r = ctx.client.call(
                "Image.prepare",
                json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": image, "volumeID": volume}),
            )?;
            print_value(ctx, &r, |v| println!("{}", s(&v["path"])));
        }
        ImageCmd::Upload {
            file,
            image,
            volume,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let f = std::fs::File::open(&file)
                .map_err(|e| usage(format!("cannot open {}: {e}", file.display())))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let info = volume_query(ctx, "Volume.getInfo", (&sp, &sd, &image, &volume))?;
            let capacity = num(&info["capacity"]);
            let size = if s(&info["format"]) == "RAW" {
                if len > capacity {
                    return Err(usage(format!(
                        "{} is {len} bytes; the volume holds {capacity}",
                        file.display()
                    )));
                }
                capacity
            } else {
                len
            };
            transfer(
                ctx,
                (&sp, &sd, &image, &volume),
                size,
                Direction::Upload,
                &f,
            )?;
        }
        ImageCmd::Download {
            image,
            volume,
            file,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let sizes = volume_query(ctx, "Volume.getSize", (&sp, &sd, &image, &volume))?;
            let size = num(&sizes["apparentsize"]);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&file)
                .map_err(|e| usage(format!("cannot create {}: {e}", file.display())))?;
            transfer(
                ctx,
                (&sp, &sd, &image, &volume),
                size,
                Direction::Download,
                &f,
            )?;
        }
        ImageCmd::Teardown { image, domain } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            ctx.client.call(
                "Image.teardown",
                json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": image}),
            )?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Direction {
    Upload,
    Download,
}

/// Prepares the image, adds a ticket for the volume, moves the bytes
/// between it and `file` with a progress bar, then removes the ticket and
/// tears the image down, whatever happened; prints what moved.
fn transfer(
    ctx: &Ctx,
    (sp, sd, image, volume): (&str, &str, &str, &str),
    size: u64,
    direction: Direction,
    file: &std::fs::File,
) -> Res<()> {
    let ids = json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": image});
    let mut prepare = ids.clone();
    prepare["volumeID"] = json!(volume);
    let path = s(&ctx.client.call("Image.prepare", prepare)?["path"]);
    let ticket = new_uuid();
    let op = match direction {
        Direction::Upload => "write",
        Direction::Download => "read",
    };
    let added = ctx.client.call(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": ticket, "size": size, "url": format!("file://{path}"),
                          "timeout": 3600, "ops": [op]}}),
    );
    let result = added.and_then(|_| {
        let bar = if ctx.json {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::new(size);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} [{elapsed}]",
                )
                .expect("progress template"),
            );
            b
        };
        let progress = |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        };
        let r = match direction {
            Direction::Upload => cairn::transfer::upload(&ctx.client, &ticket, file, progress),
            Direction::Download => cairn::transfer::download(&ctx.client, &ticket, file, progress),
        };
        bar.finish_and_clear();
        r
    });
    let removed = ctx
        .client
        .call("Host.remove_image_ticket", json!({"uuid": ticket}));
    let torn_down = ctx.client.call("Image.teardown", ids);
    let stats = result?;
    removed?;
    torn_down?;
    let out = json!({"data": stats.data, "zeros": stats.zeros});
    print_value(ctx, &out, |_| {
        let (done, zeros) = match direction {
            Direction::Upload => ("uploaded", "sent as zeros"),
            Direction::Download => ("downloaded", "left as holes"),
        };
        println!(
            "{done} {} of data, {} {zeros}",
            human_size(stats.data),
            human_size(stats.zeros)
        )
    });
    Ok(())
}

/// A query about one volume (`Volume.getInfo`, `Volume.getSize`).
fn volume_query(
    ctx: &Ctx,
    method: &str,
    (sp, sd, image, volume): (&str, &str, &str, &str),
) -> Res<Value> {
    ctx.client.call(
        method,
        json!({"volumeID": volume, "storagepoolID": sp, "storagedomainID": sd, "imageID": image}),
    )
}

fn depth(all: &[Value], v: &Value) -> usize {
    let mut d = 0;
    let mut parent = s(&v["parent"]);
    while let Some(p) = all.iter().find(|x| s(&x["uuid"]) == parent) {
        d += 1;
        parent = s(&p["parent"]);
        if d > all.len() {
            break;
        }
    }
    d
}

fn volume_table(v: &Value) {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    vec![
                        s(&i["image"]),
                        s(&i["uuid"]),
                        s(&i["format"]),
                        s(&i["type"]),
                        s(&i["voltype"]),
                        s(&i["legality"]),
                        human_size(num(&i["capacity"])),
                        human_size(num(&i["truesize"])),
                        s(&i["description"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "IMAGE",
            "VOLUME",
            "FORMAT",
            "ALLOC",
            "ROLE",
            "LEGALITY",
            "SIZE",
            "USED",
            "DESCRIPTION",
        ],
        rows,
    );
}

fn finish_task(ctx: &Ctx, task: &Value, wait: bool, what: &str) -> Res<()> {
    let id = s(task);
    if wait {
        wait_task(ctx, &id, what)?;
        print_value(ctx, &json!({"taskID": id, "taskResult": "success"}), |_| {
            println!("done")
        });
    } else {
        print_value(ctx, &json!({"taskID": id}), |_| {
            println!("task {id} (follow it with `cairn task wait {id}`)")
        });
    }
    Ok(())
}

fn volume(ctx: &Ctx, cmd: VolumeCmd) -> Res<()> {
    match cmd {
        VolumeCmd::Create {
            size,
            format,
            allocation,
            image,
            volume,
            parent,
            template,
            description,
            domain,
            wait,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let size = parse_size(&size)?;
            let img = match (&image, &parent) {
                (Some(i), _) => i.clone(),
                (None, Some(_)) => return Err(usage("--parent needs --image")),
                (None, None) => new_uuid(),
            };
            let vol = volume.unwrap_or_else(new_uuid);
            let blank = "00000000-0000-0000-0000-000000000000".to_string();
            let (src_img, src_vol) = match (&parent, &template) {
                (Some(p), _) => (img.clone(), p.clone()),
                (None, Some(t)) => {
                    let (ti, tv) = t
                        .split_once('/')
                        .ok_or_else(|| usage("--template takes IMAGE/VOLUME"))?;
                    (ti.to_string(), tv.to_string())
                }
                (None, None) => (blank.clone(), blank),
            };
            let t = ctx.client.call(
                "Volume.create",
                json!({
                    "volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img,
                    "size": size.to_string(), "volFormat": format.to_ascii_uppercase(),
                    "preallocate": allocation.to_ascii_uppercase(), "diskType": "DATA", "desc": description,
                    "srcImgUUID": src_img, "srcVolUUID": src_vol,
                }),
            )?;
            let id = s(&t);
            if wait {
                wait_task(ctx, &id, "creating volume")?;
            }
            let out = json!({"imageID": img, "volumeID": vol, "taskID": id});
            print_value(ctx, &out, |_| {
                println!("image   {img}\nvolume  {vol}");
                if !wait {
                    println!("task    {id}");
                }
            });
        }
        VolumeCmd::List { domain } => {
            let sd = domain_id(ctx, domain)?;
            let dump = ctx
                .client
                .call("StorageDomain.dump", json!({"sd_id": sd}))?;
            let vols: Vec<Value> = dump["volumes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(id, v)| {
                            let mut v = v.clone();
                            v["uuid"] = json!(id);
                            v
                        })
                        .collect()
                })
                .unwrap_or_default();
            let out = Value::Array(vols);
            print_value(ctx, &out, volume_table);
        }
        VolumeCmd::Info {
            image,
            volume,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let info = volume_query(ctx, "Volume.getInfo", (&sp, &sd, &image, &volume))?;
            print_fields(ctx, &info);
        }
        VolumeCmd::Delete {
            image,
            volume,
            domain,
            wait,
            post_zero,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let t = ctx.client.call(
                "Volume.delete",
                json!({"volumeID": volume, "storagepoolID": sp, "storagedomainID": sd, "imageID": image, "postZero": post_zero, "force": false}),
            )?;
            finish_task(ctx, &t, wait, "deleting volume")?;
        }
        VolumeCmd::Extend {
            image,
            volume,
            size,
            domain,
            wait,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let size = parse_size(&size)?;
            let t = ctx.client.call(
                "Volume.extendSize",
                json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": image, "volumeID": volume, "newSize": size.to_string()}),
            )?;
            finish_task(ctx, &t, wait, "extending volume")?;
        }
        VolumeCmd::Merge {
            image,
            volume,
            bitmaps,
            domain,
        } => {
            let (sp, sd) = pool_and_domain(ctx, domain)?;
            let info = volume_query(ctx, "Volume.getInfo", (&sp, &sd, &image, &volume))?;
            let base = s(&info["parent"]);
            let sc = json!({"sd_id": sd, "img_id": image, "top_id": volume, "base_id": base});
            let t = ctx.client.call(
                "StoragePool.prepareMerge",
                json!({"storagepoolID": sp, "subchainInfo": sc}),
            )?;
            wait_task(ctx, &s(&t), "preparing the merge")?;
            run_job(
                ctx,
                "SDM.merge",
                json!({"subchain_info": sc, "merge_bitmaps": bitmaps}),
                "merging",
            )?;
            let t = ctx.client.call(
                "StoragePool.finalizeMerge",
                json!({"storagepoolID": sp, "subchainInfo": sc}),
            )?;
            wait_task(ctx, &s(&t), "finalizing the merge")?;
            let out = json!({"imageID": image, "merged": volume, "into": base});
            print_value(ctx, &out, |_| println!("merged {volume} into {base}"));
        }
        VolumeCmd::MakeTemplate {
            image,
            volume,
            domain,
        } => {
            let sd = domain_id(ctx, domain)?;
            let status = run_job(
                ctx,
                "SDM.update_volume",
                json!({"vol_info": {"sd_id": sd, "img_id": image, "vol_id": volume}, "vol_attr": {"type": "SHARED"}}),
                "making a template",
            )?;
            print_value(ctx, &status, |_| {
                println!("{image}/{volume} is now a template")
            });
        }
    }
    Ok(())
}
