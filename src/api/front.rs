//! The network front: the one process that touches bytes from the network
//! before anyone is authenticated, and it is not root.
//!
//! cairnd (root) binds the TCP listener and starts the front: the cairnd
//! binary again, with the listener and a control socket as file
//! descriptors. The front loads its TLS certificate, drops to an
//! unprivileged user (`front_user`, default `nobody`: no capabilities, no
//! supplementary groups, `no_new_privs`), and then accepts connections,
//! enforces the connection bound and timeouts, and does the TLS handshake,
//! client certificate checks included. Only a connection from an
//! authenticated client is handed to cairnd, as one end of a fresh socket
//! pair passed over the control socket; the front then relays the
//! decrypted bytes. So a flaw in TLS or certificate parsing is reachable by
//! anyone on the network but yields an unprivileged process that can do
//! nothing but what an authenticated client can. If the front dies, cairnd
//! starts another.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

use super::server::{serve_connection, IdleTimeout, Limits};

/// The first argument that makes the cairnd binary the front.
pub const FRONT_ARG: &str = "__network-front";
const CONFIG_ENV: &str = "CAIRN_FRONT_CONFIG";
const LISTENER_FD: RawFd = 3;
const CONTROL_FD: RawFd = 4;
/// Bytes relayed per read, each way.
const RELAY_BUFFER: usize = 1 << 20;
/// The longest client name passed with a connection.
const MAX_NAME: usize = 256;

/// What the front needs, passed in its environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrontConfig {
    /// Certificate, key and client CA; None serves plain TCP (the
    /// loopback-only opt-out).
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    pub user: String,
    pub max_connections: usize,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
}

impl FrontConfig {
    fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }
}

/// True when this process was started as the front.
pub fn is_front() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == FRONT_ARG)
}

/// In cairnd: keeps a front running for `listener` and serves the
/// connections it hands over with `router`, until `shutdown`.
pub async fn serve_tcp(
    listener: std::net::TcpListener,
    config: FrontConfig,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = config.limits();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let mut child = start(&listener, theirs, &config)?;
        tracing::info!(pid = child.id(), "network front started");
        let (tx, mut rx) = mpsc::channel(64);
        std::thread::Builder::new()
            .name("front-control".into())
            .spawn(move || receive(ours, tx))?;
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(());
                }
                handed = rx.recv() => match handed {
                    Some((stream, client)) => {
                        let stream = match stream.set_nonblocking(true).and_then(|()| tokio::net::UnixStream::from_std(stream)) {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot take a handed-over connection");
                                continue;
                            }
                        };
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            tracing::warn!("forwarded connection over the bound; closed");
                            continue;
                        };
                        tracing::debug!(%client, "connection from an authenticated client");
                        let (router, limits) = (router.clone(), limits.clone());
                        tokio::spawn(async move {
                            serve_connection(stream, router, &limits).await;
                            drop(slot);
                        });
                    }
                    None => break,
                },
            }
        }
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(io::Error::other)??;
        tracing::error!(%status, "the network front exited; starting another");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Starts the front with the listener and the control socket as fds 3, 4.
fn start(
    listener: &std::net::TcpListener,
    control: OwnedFd,
    config: &FrontConfig,
) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // The running binary itself, even if an upgrade replaced its file.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(FRONT_ARG)
        .env(
            CONFIG_ENV,
            serde_json::to_string(config).map_err(io::Error::other)?,
        )
        .stdin(std::process::Stdio::null());
    let sources = [listener.as_raw_fd(), control.as_raw_fd()];
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, so placing one cannot clobber the other.
            let high: Vec<OwnedFd> = sources
                .iter()
                .map(|&fd| {
                    rustix::io::fcntl_dupfd_cloexec(rustix::fd::BorrowedFd::borrow_raw(fd), 10)
                })
                .collect::<Result<_, _>>()?;
            for (fd, target) in high.iter().zip([LISTENER_FD, CONTROL_FD]) {
                let mut at = OwnedFd::from_raw_fd(target);
                let placed = rustix::io::dup2(fd, &mut at);
                std::mem::forget(at);
                placed?;
            }
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(control);
    child
}

/// Receives handed-over connections until the front closes its end.
fn receive(control: OwnedFd, tx: mpsc::Sender<(std::os::unix::net::UnixStream, String)>) {
    loop {
        let mut name = [0u8; MAX_NAME];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            &control,
            &mut [IoSliceMut::new(&mut name)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
        );
        let msg = match got {
            Ok(m) => m,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot read from the network front");
                return;
            }
        };
        let fd = cmsg.drain().find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        });
        let Some(fd) = fd else {
            // End of the stream: the front is gone.
            return;
        };
        let client = String::from_utf8_lossy(&name[..msg.bytes.min(MAX_NAME)]).into_owned();
        if tx
            .blocking_send((std::os::unix::net::UnixStream::from(fd), client))
            .is_err()
        {
            return;
        }
    }
}

/// The front's `main`.
pub fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "network front failed");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let config: FrontConfig = std::env::var(CONFIG_ENV)
        .map_err(|_| format!("{CONFIG_ENV} is not set: cairnd starts the front itself"))
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))?;
    // SAFETY: cairnd placed these descriptors for us (see `start`).
    let listener = unsafe { std::net::TcpListener::from_raw_fd(LISTENER_FD) };
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    // Read while still root: the key is not readable by the front's user.
    let tls = match &config.tls {
        Some((cert, key, ca)) => Some(
            crate::tls::server_config(&crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    drop_privileges(&config.user)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(accept(listener, control, tls, config.limits()))
}

/// Becomes `user`: its uid and primary group, no other groups, and no way
/// back (`no_new_privs`; capabilities go with uid 0). Not root already (a
/// test run as a user), the front stays as it is.
fn drop_privileges(user: &str) -> Result<(), String> {
    use rustix::process::{getppid, getuid, Gid, Uid};
    let parent = getppid();
    if getuid().is_root() {
        let (uid, gid) = lookup_user(user)?;
        let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
        rustix::thread::set_thread_groups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
        rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
        if getuid().is_root() || rustix::process::geteuid().is_root() {
            return Err(format!("still root after becoming {user}"));
        }
    } else {
        tracing::warn!("not started as root: the network front keeps the user it has");
    }
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("no_new_privs: {e}"))?;
    // A change of credentials clears the parent-death signal: set it again.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| e.to_string())?;
    if getppid() != parent {
        return Err("cairnd is gone".into());
    }
    Ok(())
}

/// `user`'s uid and gid from /etc/passwd, refusing root (cairnd checks
/// `front_user` with it at start, so a typo stops cairnd, not every front).
pub fn lookup_user(user: &str) -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == user)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .filter(|(uid, _)| *uid != 0)
        .ok_or_else(|| format!("front_user {user:?} is not an unprivileged user of this host"))
}

async fn accept(
    listener: std::net::TcpListener,
    control: OwnedFd,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
) -> Result<(), String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let control = Arc::new(Mutex::new(control));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                super::server::accept_failed(&e).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            super::server::refuse_full("tcp");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (control, limits, acceptor) = (control.clone(), limits.clone(), acceptor.clone());
        tokio::spawn(async move {
            match acceptor {
                None => relay(stream, "(no TLS)", &control, &limits).await,
                Some(acceptor) => {
                    let tls =
                        match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::info!(%peer, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let who = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(crate::tls::peer_name)
                        .unwrap_or_default();
                    relay(tls, &who, &control, &limits).await;
                }
            }
            drop(slot);
        });
    }
}

/// Hands cairnd one end of a new socket pair and relays between it and
/// the client until either side ends or the connection idles.
async fn relay<S>(io: S, client: &str, control: &Mutex<OwnedFd>, limits: &Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let pair = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    );
    let Ok((ours, theirs)) = pair else { return };
    if let Err(e) = hand_over(control, theirs, client) {
        tracing::error!(error = %e, "cannot hand a connection to cairnd");
        std::process::exit(1);
    }
    let ours = std::os::unix::net::UnixStream::from(ours);
    let Ok(mut ours) = ours
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(ours))
    else {
        return;
    };
    let mut io = IdleTimeout::new(io, limits.idle_timeout);
    // Large buffers: image transfers move gigabytes through here.
    let _ =
        tokio::io::copy_bidirectional_with_sizes(&mut io, &mut ours, RELAY_BUFFER, RELAY_BUFFER)
            .await;
}

fn hand_over(control: &Mutex<OwnedFd>, fd: OwnedFd, client: &str) -> io::Result<()> {
    let name = &client.as_bytes()[..client.len().min(MAX_NAME)];
    let fds = [fd.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    let control = control.lock().expect("control socket");
    // An empty name still carries a byte, so the message is never EOF.
    let payload: &[u8] = if name.is_empty() { b"?" } else { name };
    sendmsg(
        &*control,
        &[IoSlice::new(payload)],
        &mut cmsg,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}
