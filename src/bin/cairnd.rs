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
    /// A block device block domains may use besides the LUNs found (iSCSI,
    /// FC, multipath), such as a local disk (repeatable; the environment
    /// takes a ':'-separated list).
    #[arg(
        long = "block-device",
        env = "CAIRN_BLOCK_DEVICES",
        value_delimiter = ':'
    )]
    block_devices: Vec<PathBuf>,
    /// The TCP listener's certificate [default: <data-dir>/pki/host.pem].
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Its private key [default: <data-dir>/pki/host-key.pem].
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The CA whose client certificates are accepted [default:
    /// <data-dir>/pki/ca.pem].
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Serve TCP in the clear, unauthenticated: for a loopback address
    /// only, and logged as a warning.
    #[arg(long)]
    insecure_plain_tcp: bool,
    /// A browser origin allowed to call cairnd, e.g. a dashboard's
    /// "https://dash.example:8443" (repeatable); others get 403.
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// The unprivileged user the network front (TLS and connection
    /// handling of the TCP listener) runs as [default: nobody].
    #[arg(long)]
    front_user: Option<String>,
    /// Connections the TCP listener takes at once [default: 256].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a connection may move no byte before it is closed
    /// [default: 300].
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Serve OpenStack's Block Storage API v3 (the Cinder face) on this TCP
    /// address, e.g. 127.0.0.1:8776: plain HTTP on a loopback address,
    /// mutual TLS (the --listen certificates) on any other.
    #[arg(long, env = "CAIRN_CINDER_LISTEN")]
    cinder_listen: Option<String>,
    /// How Cinder clients authenticate: "tokens" (the default: the tokens
    /// file), "keystone" (tokens Keystone validates, at
    /// --cinder-keystone-url) or "noauth" (a standalone host; loopback
    /// only, every caller an admin).
    #[arg(long, env = "CAIRN_CINDER_AUTH")]
    cinder_auth: Option<String>,
    /// The Cinder tokens file [default: <data-dir>/cinder-tokens.toml].
    #[arg(long)]
    cinder_tokens: Option<PathBuf>,
    /// Keystone's URL, for --cinder-auth keystone (e.g.
    /// http://keystone:5000).
    #[arg(long)]
    cinder_keystone_url: Option<String>,
    /// The CAs an https Keystone's certificate is checked against
    /// [default: /etc/ssl/certs/ca-certificates.crt].
    #[arg(long)]
    cinder_keystone_ca: Option<PathBuf>,
    /// The URL Cinder clients reach cairnd at, for links [default: from
    /// each request's Host].
    #[arg(long)]
    cinder_public_url: Option<String>,
    /// How many times its size a domain's thin Cinder volumes may promise
    /// (Cinder's max_over_subscription_ratio) [default: 20].
    #[arg(long)]
    cinder_over_subscription: Option<f64>,
    /// Where Cinder backups go: an absolute directory, or domain:<uuid>
    /// for a file domain of the pool [default: <data-dir>/backup].
    #[arg(long)]
    cinder_backup_target: Option<String>,
    /// How backup objects are compressed: zlib (as Cinder) or none
    /// [default: zlib].
    #[arg(long)]
    cinder_backup_compression: Option<String>,
    /// The address:port of this host's tgtd that other hosts reach; block
    /// domains' RAW (thick) volumes are attached to them over iSCSI
    /// through it [default: only local attachments].
    #[arg(long)]
    cinder_iscsi_portal: Option<String>,
}

/// What the TCP listener's security comes from (flags over the file).
#[derive(Clone)]
struct TcpSecurity {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    insecure_plain: bool,
}

impl TcpSecurity {
    fn new(args: &Args, file: &FileConfig) -> TcpSecurity {
        TcpSecurity {
            cert: args.tls_cert.clone().or_else(|| file.tls_cert.clone()),
            key: args.tls_key.clone().or_else(|| file.tls_key.clone()),
            ca: args.tls_ca.clone().or_else(|| file.tls_ca.clone()),
            insecure_plain: args.insecure_plain_tcp || file.insecure_plain_tcp == Some(true),
        }
    }

    /// The certificate, key and client CA for mutual TLS, checked to load;
    /// None when plain TCP was asked for on a loopback address.
    fn tls_files(
        &self,
        addr: &str,
        data_dir: &std::path::Path,
    ) -> Result<Option<(PathBuf, PathBuf, PathBuf)>, String> {
        if self.insecure_plain {
            let loopback = addr
                .parse::<std::net::SocketAddr>()
                .map(|a| a.ip().is_loopback())
                .unwrap_or(false);
            if !loopback {
                return Err(format!(
                    "insecure_plain_tcp is allowed on a loopback address only, not {addr}"
                ));
            }
            return Ok(None);
        }
        let default = cairn::tls::TlsFiles::in_dir(&cairn::config::pki_in(data_dir), "host");
        let files = cairn::tls::TlsFiles {
            cert: self.cert.clone().unwrap_or(default.cert),
            key: self.key.clone().unwrap_or(default.key),
            ca: self.ca.clone().unwrap_or(default.ca),
        };
        if !files.exist() {
            return Err(format!(
                "--listen serves mutual TLS and needs {}, {} and {}; create them with \
                 `cairn pki init` and `cairn pki issue host --host` (see the README's SECURITY section)",
                files.cert.display(),
                files.key.display(),
                files.ca.display()
            ));
        }
        // Loaded here too, so a bad file stops cairnd, not just the front.
        cairn::tls::server_config(&files).map_err(|e| e.to_string())?;
        Ok(Some((files.cert, files.key, files.ca)))
    }
}

/// The Cinder listener, as configured.
struct CinderListener {
    addr: String,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    auth_name: &'static str,
    settings: cairn::api::cinder::CinderSettings,
}

fn cinder_settings(
    args: &Args,
    file: &FileConfig,
    data_dir: &std::path::Path,
    security: &TcpSecurity,
) -> Result<Option<CinderListener>, String> {
    use cairn::api::cinder::{CinderAuth, CinderSettings};
    let Some(addr) = args.cinder_listen.clone().or(file.cinder_listen.clone()) else {
        return Ok(None);
    };
    let loopback = addr
        .parse::<std::net::SocketAddr>()
        .map_err(|e| format!("cinder_listen {addr:?}: {e}"))?
        .ip()
        .is_loopback();
    let mode = args.cinder_auth.clone().or(file.cinder_auth.clone());
    if mode.as_deref() == Some("noauth") && !loopback {
        return Err(format!(
            "cinder_auth noauth serves anyone as an admin: it is allowed on a loopback address only, not {addr}"
        ));
    }
    let tls = if loopback {
        None
    } else {
        let mutual = TcpSecurity {
            insecure_plain: false,
            ..security.clone()
        };
        mutual.tls_files(&addr, data_dir)?
    };
    let (auth, auth_name) = match mode.as_deref() {
        None | Some("tokens") => {
            let path = args
                .cinder_tokens
                .clone()
                .or(file.cinder_tokens.clone())
                .unwrap_or_else(|| data_dir.join("cinder-tokens.toml"));
            (CinderAuth::from_file(&path)?, "tokens")
        }
        Some("noauth") => (CinderAuth::NoAuth, "noauth"),
        Some("keystone") => {
            let url = args
                .cinder_keystone_url
                .clone()
                .or(file.cinder_keystone_url.clone())
                .ok_or("cinder_auth keystone needs cinder_keystone_url")?;
            let ca = args
                .cinder_keystone_ca
                .clone()
                .or(file.cinder_keystone_ca.clone())
                .unwrap_or_else(|| std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
            let k = cairn::api::cinder::Keystone::new(&url, &ca)?;
            (CinderAuth::Keystone(std::sync::Arc::new(k)), "keystone")
        }
        Some(other) => {
            return Err(format!(
                "cinder_auth {other:?} is not tokens, keystone or noauth"
            ))
        }
    };
    Ok(Some(CinderListener {
        addr,
        tls,
        auth_name,
        settings: CinderSettings {
            auth,
            public_url: args
                .cinder_public_url
                .clone()
                .or(file.cinder_public_url.clone()),
        },
    }))
}

/// A repeatable flag's values if given, else the config file's list.
fn list_setting<T: Clone>(flags: &[T], file: &Option<Vec<T>>) -> Vec<T> {
    if flags.is_empty() {
        file.clone().unwrap_or_default()
    } else {
        flags.to_vec()
    }
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
    // First, while this is the only thread (capabilities are per thread).
    if let Err(e) = cairn::primitives::privileges::shed_unneeded_capabilities() {
        eprintln!("cairnd: cannot drop capabilities it never needs: {e}");
        return ExitCode::FAILURE;
    }
    if cairn::api::front::is_front() {
        // Logs go to cairnd's log, through the inherited standard error.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(cairn::logging::CappedStderr)
            .with_ansi(false)
            .init();
        return cairn::api::front::main();
    }
    cap_malloc_arenas();
    let args = Args::parse();
    let file = match args.config.as_deref().map(FileConfig::load).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("cairnd: {e}");
            return ExitCode::from(2);
        }
    };
    let security = TcpSecurity::new(&args, &file);
    let level = args
        .log_level
        .clone()
        .or(file.log_level.clone())
        .unwrap_or_else(|| "info".into());
    let json_logs = args.log_format.as_deref().or(file.log_format.as_deref()) == Some("json");
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
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(default_data_dir);
    let socket = args
        .socket
        .clone()
        .or(file.socket.clone())
        .unwrap_or_else(|| socket_in(&data_dir));
    let listen = args.listen.clone().or(file.listen.clone());
    let tls = match listen.as_deref().map(|a| security.tls_files(a, &data_dir)) {
        Some(Err(e)) => {
            eprintln!("cairnd: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(tls)) => tls,
        None => None,
    };
    let cinder = match cinder_settings(&args, &file, &data_dir, &security) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairnd: {e}");
            return ExitCode::from(2);
        }
    };
    let allowed_origins = list_setting(&args.allowed_origins, &file.allowed_origins);
    let front_user = args
        .front_user
        .clone()
        .or(file.front_user.clone())
        .unwrap_or_else(|| "nobody".into());
    if listen.is_some() || cinder.is_some() {
        if let Err(e) = cairn::api::front::lookup_user(&front_user) {
            eprintln!("cairnd: {e}");
            return ExitCode::from(2);
        }
    }
    let nofile = server::raise_file_limit();
    let mut tcp_limits = server::Limits::default();
    if let Some(n) = args.max_connections.or(file.max_connections) {
        tcp_limits.max_connections = n.max(1);
    }
    if let Some(t) = args.idle_timeout.or(file.idle_timeout) {
        if !(t.is_finite() && t > 0.0 && t <= 86400.0) {
            eprintln!("cairnd: idle_timeout must be more than 0 and at most 86400 seconds");
            return ExitCode::from(2);
        }
        tcp_limits.idle_timeout = std::time::Duration::from_secs_f64(t);
        tcp_limits.header_timeout = tcp_limits.header_timeout.min(tcp_limits.idle_timeout);
    }
    // The local socket keeps its own bound: a TCP flood cannot starve it.
    let unix_limits = server::Limits {
        max_connections: 128,
        ..tcp_limits.clone()
    };
    // Both bounds fit under the open-file limit with room for storage.
    let room = nofile.saturating_sub(unix_limits.max_connections as u64 + 1024);
    if (tcp_limits.max_connections as u64) > room {
        tracing::warn!(
            nofile,
            max_connections = room,
            "open-file limit too low; lowering the TCP connection bound"
        );
        tcp_limits.max_connections = room.max(1) as usize;
    }
    let embedded = !args.no_embedded_default && file.embedded_default.unwrap_or(true);
    let mut config = EngineConfig::new(&data_dir);
    config.local_roots = list_setting(&args.local_roots, &file.local_roots);
    config.block_devices = list_setting(&args.block_devices, &file.block_devices);
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
        let policy = &mut config.thin.policy;
        for (setting, value, name) in [
            (&mut policy.start, file.thin_start_mib, "thin_start_mib"),
            (&mut policy.step, file.thin_step_mib, "thin_step_mib"),
            (
                &mut policy.free_threshold,
                file.thin_free_threshold_mib,
                "thin_free_threshold_mib",
            ),
        ] {
            match value {
                Some(mib) if (1..=1 << 20).contains(&mib) => *setting = mib << 20,
                Some(_) => return Err(format!("{name} must be 1 to 1048576 (MiB)")),
                None => {}
            }
        }
        if let Some(on) = file.thin_adaptive {
            policy.adaptive = on;
        }
        if let Some(r) = args
            .cinder_over_subscription
            .or(file.cinder_over_subscription)
        {
            if !(1.0..=10_000.0).contains(&r) {
                return Err(format!(
                    "cinder_over_subscription must be 1 to 10000, not {r}"
                ));
            }
            config.catalog_over_subscription = r;
        }
        if let Some(t) = args
            .cinder_backup_target
            .as_ref()
            .or(file.cinder_backup_target.as_ref())
        {
            config.backup.target = cairn::engine::catalog::BackupTarget::parse(t)
                .map_err(|e| format!("cinder_backup_target: {e}"))?;
        }
        if let Some(p) = args
            .cinder_iscsi_portal
            .as_ref()
            .or(file.cinder_iscsi_portal.as_ref())
        {
            if p.parse::<std::net::SocketAddr>().is_err() && !p.contains(':') {
                return Err(format!(
                    "cinder_iscsi_portal must be address:port, not {p:?}"
                ));
            }
            config.iscsi_portal = Some(p.clone());
        }
        if let Some(c) = args
            .cinder_backup_compression
            .as_ref()
            .or(file.cinder_backup_compression.as_ref())
        {
            config.backup.compression = cairn::primitives::chunked_backup::Compression::parse(c)
                .ok_or_else(|| {
                    format!("cinder_backup_compression must be zlib or none, not {c:?}")
                })?;
        }
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
        let cinder_router = cinder
            .as_ref()
            .map(|c| cairn::api::cinder::router(engine.clone(), c.settings.clone()));
        let router = server::router(engine, allowed_origins);
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
        let unix = server::serve_unix(router.clone(), &socket, unix_limits, wait(&stop_tx));
        tracing::info!(data_dir = %data_dir.display(), "cairnd ready");
        let front = |tls| cairn::api::front::FrontConfig {
            tls,
            user: front_user.clone(),
            max_connections: tcp_limits.max_connections,
            header_timeout_ms: tcp_limits.header_timeout.as_millis() as u64,
            idle_timeout_ms: tcp_limits.idle_timeout.as_millis() as u64,
        };
        let tcp = async {
            let Some(addr) = listen else { return Ok(()) };
            let listener = std::net::TcpListener::bind(&addr)?;
            match &tls {
                Some(_) => tracing::info!(address = %addr, max_connections = tcp_limits.max_connections, user = %front_user,
                    "serving JSON-RPC on TCP with mutual TLS through an unprivileged network front (POST /jsonrpc, WebSocket GET /jsonrpc, /images)"),
                None => tracing::warn!(address = %addr,
                    "serving JSON-RPC on TCP WITHOUT TLS OR AUTHENTICATION (insecure_plain_tcp): anyone who reaches this address controls the host's storage"),
            }
            cairn::api::front::serve_tcp(listener, front(tls.clone()), router, wait(&stop_tx)).await
        };
        let cinder_tcp = async {
            let (Some(c), Some(router)) = (&cinder, cinder_router) else { return Ok(()) };
            let listener = std::net::TcpListener::bind(&c.addr)?;
            tracing::info!(address = %c.addr, tls = c.tls.is_some(), auth = c.auth_name,
                "serving the Cinder API v3 (OpenStack Block Storage) through an unprivileged network front");
            cairn::api::front::serve_tcp(listener, front(c.tls.clone()), router, wait(&stop_tx)).await
        };
        tokio::try_join!(unix, tcp, cinder_tcp).map(drop)
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
