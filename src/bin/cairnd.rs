//! cairnd: the Cairn storage daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn::api::server;
use cairn::config::{default_data_dir, socket_in, FileConfig};
use cairn::engine::{Engine, EngineConfig};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "cairnd",
    version,
    about = "Cairn storage daemon: VDSM-compatible JSON-RPC for KVM storage"
)]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (host state, mount points, the embedded local domain).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Unix socket to serve JSON-RPC on [default: <data-dir>/cairnd.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Also serve HTTP/WebSocket JSON-RPC on this TCP address (e.g. 127.0.0.1:4044).
    #[arg(long)]
    listen: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "CAIRN_LOG")]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Do not create the embedded local domain and pool on first start.
    #[arg(long)]
    no_embedded_default: bool,
    /// Seconds between checks of a monitored storage domain [default: 10].
    #[arg(long, env = "CAIRN_MONITOR_INTERVAL")]
    monitor_interval: Option<f64>,
    /// Seconds a domain check may take before the domain is invalid
    /// [default: 10].
    #[arg(long, env = "CAIRN_MONITOR_TIMEOUT")]
    monitor_timeout: Option<f64>,
    /// Leases of shared (non-LOCALFS) domains: "sanlock" (the default; needs
    /// the sanlock daemon) or "flock" (one host only, for tests and trials).
    #[arg(long, env = "CAIRN_SHARED_LEASES")]
    shared_leases: Option<String>,
    /// sanlock io_timeout in seconds [default: 10]; failover takes a
    /// multiple of it.
    #[arg(long, env = "CAIRN_SANLOCK_IO_TIMEOUT")]
    sanlock_io_timeout: Option<u32>,
    /// A directory LOCALFS storage may lie under, besides the data dir
    /// (repeatable; the environment takes a ':'-separated list).
    #[arg(long = "local-root", env = "CAIRN_LOCAL_ROOTS", value_delimiter = ':')]
    local_roots: Vec<PathBuf>,
}

/// Caps glibc's malloc arenas. By default every thread that allocates may
/// get its own arena, and memory freed in one is not reused by another: a
/// daemon whose worker threads take turns building large replies keeps
/// growing its resident set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_arenas() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_ARENA_MAX: i32 = -8;
    // SAFETY: mallopt only adjusts allocator tuning; called before any
    // thread is started.
    unsafe {
        mallopt(M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_arenas() {}

fn main() -> ExitCode {
    cap_malloc_arenas();
    let args = Args::parse();
    let file = match args.config.as_deref().map(FileConfig::load).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("cairnd: {e}");
            return ExitCode::from(2);
        }
    };
    let level = args
        .log_level
        .or(file.log_level)
        .unwrap_or_else(|| "info".into());
    let json_logs = args.log_format.or(file.log_format).as_deref() == Some("json");
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(cairn::logging::CappedStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json_logs {
        builder.json().init();
    } else {
        builder.init();
    }

    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(default_data_dir);
    let socket = args
        .socket
        .or(file.socket)
        .unwrap_or_else(|| socket_in(&data_dir));
    let listen = args.listen.or(file.listen);
    let embedded = !args.no_embedded_default && file.embedded_default.unwrap_or(true);
    let mut config = EngineConfig::new(&data_dir);
    config.local_roots = if args.local_roots.is_empty() {
        file.local_roots.unwrap_or_default()
    } else {
        args.local_roots
    };
    if let Some(n) = file.task_workers {
        config.task_workers = n;
    }
    let seconds = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 && v < 3600.0 {
            Ok(std::time::Duration::from_secs_f64(v))
        } else {
            Err(format!(
                "{name} must be more than 0 and less than 3600 seconds"
            ))
        }
    };
    let timing = (|| -> Result<(), String> {
        if let Some(v) = args.monitor_interval.or(file.monitor_interval) {
            config.monitor.interval = seconds("monitor_interval", v)?;
        }
        if let Some(v) = args.monitor_timeout.or(file.monitor_timeout) {
            config.monitor.timeout = seconds("monitor_timeout", v)?;
        }
        let io_timeout = args
            .sanlock_io_timeout
            .or(file.sanlock_io_timeout)
            .unwrap_or(cairn::engine::DEFAULT_SANLOCK_IO_TIMEOUT);
        if !(1..=60).contains(&io_timeout) {
            return Err("sanlock_io_timeout must be 1 to 60 seconds".into());
        }
        config.sanlock_io_timeout = match args.shared_leases.or(file.shared_leases).as_deref() {
            None | Some("sanlock") => Some(io_timeout),
            Some("flock") => None,
            Some(other) => return Err(format!("shared_leases {other:?} is not sanlock or flock")),
        };
        Ok(())
    })();
    if let Err(e) = timing {
        eprintln!("cairnd: {e}");
        return ExitCode::from(2);
    }

    let engine = match Engine::open(config) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, data_dir = %data_dir.display(), "cannot open data directory");
            return ExitCode::FAILURE;
        }
    };
    if embedded && engine.is_pristine() {
        match engine.ensure_embedded_default() {
            Ok(d) => {
                tracing::info!(pool = %d.pool, domain = %d.domain, "created the embedded default pool")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the embedded default storage");
                return ExitCode::FAILURE;
            }
        }
    }

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairnd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let router = server::router(engine);
        let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let stopper = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stopper.send(());
        });
        let wait = |tx: &tokio::sync::broadcast::Sender<()>| {
            let mut rx = tx.subscribe();
            async move {
                let _ = rx.recv().await;
            }
        };
        let unix = server::serve_unix(router.clone(), &socket, wait(&stop_tx));
        tracing::info!(data_dir = %data_dir.display(), "cairnd ready");
        match listen {
            Some(addr) => {
                let tcp = server::serve_tcp(router, &addr, wait(&stop_tx));
                tokio::try_join!(unix, tcp).map(drop)
            }
            None => unix.await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
