//! cairn: the command line for people (and scripts, with --json), one
//! module per noun.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn::client::{Client, ClientError, Target};
use cairn::config::{default_data_dir, socket_in};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

mod catalog;
mod domain;
mod image;
mod output;
mod pki;
mod pool;
mod storage;
mod task;
mod volume;

use catalog::*;
use domain::*;
use image::*;
use output::*;
use pki::*;
use pool::*;
use storage::*;
use task::*;
use volume::*;

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
    /// Volume types of the pool's catalog (what the Cinder face serves).
    #[command(subcommand)]
    Type(TypeCmd),
    /// QoS specs of the pool's catalog.
    #[command(subcommand)]
    Qos(QosCmd),
    /// Backups of catalog volumes (Cinder's format, on the backup target).
    #[command(subcommand)]
    Backup(BackupCmd),
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
        Cmd::Type(c) => volume_type(ctx, c),
        Cmd::Qos(c) => qos(ctx, c),
        Cmd::Backup(c) => backup(ctx, c),
    }
}

// ---- defaults: the connected pool and its master domain ----
