//! `NBD.start_server` / `NBD.stop_server`: export a volume, or its chain,
//! over NBD on a Unix socket through qemu-nbd.
//!
//! A writable export of a thin volume on storage grown on demand (an LV)
//! is served by qemu-storage-daemon instead, the same block layer with a
//! QMP socket, and its drive is watched (`engine::thin::monitor`) without
//! a registration: the LV grows as the client writes.
//!
//! The qemu block specification handed to qemu-nbd is built from volume
//! metadata (never from image headers), so an export cannot be steered to
//! a file outside the image's chain. While a server runs it holds the
//! image's lock (shared when read-only, exclusive when writable), so
//! nothing deletes or rewrites the volume under a client. qemu-nbd dies
//! with cairnd (parent-death signal): an export never outlives its owner.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::image::chain_of;
use crate::engine::jobs::volume::validate_bitmap_name;
use crate::engine::resources::{Guard, Mode, Resource};
use crate::engine::volume::children_of;
use crate::engine::volume::ops::chain_spec;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::types::{Uuid, VolumeFormat, VolumeLegality, VolumeRole};

/// How long qemu-nbd gets to open the image and listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server waits for a busy image before giving up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients a server accepts at once (as VDSM).
const MAX_CLIENTS: u32 = 8;
const SOCKET_MODE: u32 = 0o660;

/// `NBDServerConfig`.
#[derive(Debug, Clone)]
pub struct NbdConfig {
    pub sd: Uuid,
    pub img: Uuid,
    pub vol: Uuid,
    pub readonly: bool,
    pub discard: bool,
    pub detect_zeroes: bool,
    pub backing_chain: bool,
    pub bitmap: Option<String>,
}

struct Server {
    sd: Uuid,
    child: Child,
    socket: PathBuf,
    /// qemu-nbd's stderr.
    log: PathBuf,
    /// qemu-storage-daemon's QMP socket and the drive monitor watching it.
    qmp: Option<(PathBuf, Uuid)>,
    _lock: Guard,
}

/// How long qemu-nbd gets to exit on SIGTERM before it is killed: it
/// ignores a SIGTERM that arrives while it is still starting up.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM lets a writable export flush its qcow2 tables; it is
        // sent again until handled, since one that comes too early is lost.
        let pid = rustix::process::Pid::from_child(&self.child);
        let deadline = Instant::now() + STOP_GRACE;
        let mut next_term = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            if Instant::now() >= next_term {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                next_term = Instant::now() + Duration::from_millis(100);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            tracing::warn!(
                pid = self.child.id(),
                "qemu-nbd ignored SIGTERM; killing it"
            );
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.log);
        if let Some((qmp, _)) = &self.qmp {
            let _ = std::fs::remove_file(qmp);
        }
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The running NBD servers of this host.
#[derive(Default)]
pub struct NbdServers {
    servers: Mutex<HashMap<Uuid, Server>>,
    spawner: Mutex<Option<mpsc::Sender<SpawnRequest>>>,
}

impl NbdServers {
    /// Spawns `cmd` from one thread that lives as long as cairnd: the
    /// parent-death signal fires when the spawning *thread* exits, and the
    /// API's worker threads come and go.
    fn spawn(&self, cmd: Command) -> std::io::Result<Child> {
        let mut spawner = self.spawner.lock().expect("nbd spawner");
        let tx = spawner.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("nbd-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .expect("spawn the NBD spawner thread");
            tx
        });
        let (reply_tx, reply_rx) = mpsc::channel();
        tx.send((cmd, reply_tx))
            .map_err(|_| std::io::Error::other("the NBD spawner thread is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| std::io::Error::other("the NBD spawner thread is gone"))?
    }
}

impl Engine {
    /// `NBD.start_server`; returns the server's URL.
    pub fn start_nbd_server(&self, id: Uuid, cfg: NbdConfig) -> Result<String> {
        if self.nbd.servers.lock().expect("nbd").contains_key(&id) {
            return Err(Error::invalid(
                "server_id",
                format!("NBD server {id} is already running"),
            ));
        }
        if let Some(b) = &cfg.bitmap {
            validate_bitmap_name(b)?;
            if !cfg.readonly || !cfg.backing_chain {
                return Err(Error::invalid(
                    "config.bitmap",
                    "a bitmap is exported only read-only with its backing chain",
                ));
            }
        }
        let dom = self.domain(cfg.sd)?;
        let mode = if cfg.readonly {
            Mode::Shared
        } else {
            Mode::Exclusive
        };
        // The image only, as image tickets do (see `refuse_if_exported`).
        let lock = self
            .resources
            .acquire(&[(Resource::image(cfg.sd, cfg.img), mode)], LOCK_TIMEOUT)?;
        // Validates the whole chain (parents, headers, cycles) from metadata.
        let chain = chain_of(&*dom, cfg.img, cfg.vol)?;
        let md = &chain[0].1;
        // What may not be prepared for a VM is not exported either: an
        // interrupted copy or an unchecked upload.
        if let Some((id, _)) = chain[..if cfg.backing_chain { chain.len() } else { 1 }]
            .iter()
            .find(|(_, md)| md.legality != VolumeLegality::Legal)
        {
            return Err(Error::PrepareIllegal(*id));
        }
        if !cfg.readonly {
            if md.role == VolumeRole::Shared {
                return Err(Error::invalid(
                    "config.readonly",
                    format!("volume {} is a template; export it read-only", cfg.vol),
                ));
            }
            if !children_of(&*dom, cfg.img, cfg.vol)?.is_empty() {
                return Err(Error::VolumeBusy {
                    vol: cfg.vol,
                    reason: "other volumes are built on it; export it read-only".into(),
                });
            }
        }
        if cfg.bitmap.is_some() && md.format != VolumeFormat::Cow {
            return Err(Error::invalid(
                "config.bitmap",
                "a RAW volume has no bitmaps",
            ));
        }
        let depth = if cfg.backing_chain { chain.len() } else { 1 };
        let spec = chain_spec(&*dom, cfg.img, &chain[..depth])?;

        let dir = self.paths.run.parent().expect("run dir").join("nbd");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("cannot create", &dir, e))?;
        let socket = dir.join(format!("{id}.sock"));
        let _ = std::fs::remove_file(&socket);
        // A writable thin volume on an LV, in the connected pool: watched.
        let watched_pool = self
            .connected_pool_id()
            .filter(|_| !cfg.readonly && self.thin_info(&*dom, cfg.img, cfg.vol, md).is_some());
        let qmp = watched_pool.map(|_| dir.join(format!("{id}.qmp")));
        let mut cmd = match &qmp {
            Some(qmp) => storage_daemon(&cfg, spec, &socket, qmp),
            None => qemu_nbd(&cfg, spec, &socket),
        };
        let program = if qmp.is_some() {
            "qemu-storage-daemon"
        } else {
            "qemu-nbd"
        };
        let log = dir.join(format!("{id}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| Error::io_path("cannot create", &log, e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        // SAFETY: the closure only makes one async-signal-safe system call.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = self
            .nbd
            .spawn(cmd)
            .map_err(|e| Error::io_path("cannot run", std::path::Path::new(program), e))?;
        let mut server = Server {
            sd: cfg.sd,
            child,
            socket: socket.clone(),
            log,
            qmp: None,
            _lock: lock,
        };
        wait_listening(&mut server, cfg.vol)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(|e| Error::io_path("cannot set mode of", &socket, e))?;
        if let (Some(sp), Some(qmp)) = (watched_pool, qmp) {
            let engine = self.thin.engine().ok_or_else(|| {
                Error::io("cairnd is stopping", std::io::ErrorKind::Interrupted.into())
            })?;
            let monitor = engine.monitor_drive(crate::engine::thin::monitor::DriveSpec {
                qmp_socket: qmp.clone(),
                node_name: THIN_NODE.into(),
                sp,
                sd: cfg.sd,
                img: cfg.img,
                vol: cfg.vol,
            })?;
            server.qmp = Some((qmp, monitor));
        }
        tracing::info!(server = %id, sd = %cfg.sd, img = %cfg.img, vol = %cfg.vol,
            readonly = cfg.readonly, backing_chain = cfg.backing_chain, socket = %socket.display(),
            program, "NBD server started");
        self.nbd.servers.lock().expect("nbd").insert(id, server);
        Ok(format!("nbd:unix:{}", socket.display()))
    }
}

/// The node of a watched export's volume that writes its LV.
const THIN_NODE: &str = "thin-file";

fn qemu_nbd(cfg: &NbdConfig, spec: serde_json::Value, socket: &std::path::Path) -> Command {
    let mut cmd = Command::new("qemu-nbd");
    cmd.arg("--socket")
        .arg(socket)
        .arg("--persistent")
        .arg(format!("--shared={MAX_CLIENTS}"))
        .arg("--export-name=")
        .arg("--cache=none")
        .arg("--aio=native");
    if cfg.readonly {
        cmd.arg("--read-only");
    } else if cfg.discard {
        cmd.arg("--discard=unmap");
    }
    if cfg.detect_zeroes && !cfg.readonly {
        let dz = if cfg.discard { "unmap" } else { "on" };
        cmd.arg(format!("--detect-zeroes={dz}"));
    }
    if let Some(b) = &cfg.bitmap {
        cmd.arg(format!("--bitmap={b}"));
    }
    // The spec names every driver, so qemu-nbd probes nothing.
    cmd.arg(format!("json:{spec}"));
    cmd
}

/// qemu-storage-daemon serving what `qemu_nbd` would (writable, one
/// export named "", the same clients), with a QMP socket for the drive
/// monitor; the top volume's protocol node is [`THIN_NODE`].
fn storage_daemon(
    cfg: &NbdConfig,
    mut spec: serde_json::Value,
    socket: &std::path::Path,
    qmp: &std::path::Path,
) -> Command {
    // qemu-nbd's --cache=none --aio=native, on every node that does I/O.
    fn direct(node: &mut serde_json::Value) {
        if let Some(file) = node.get_mut("file") {
            file["cache"] = serde_json::json!({"direct": true});
            file["aio"] = "native".into();
        }
        if let Some(backing) = node.get_mut("backing").filter(|b| b.is_object()) {
            direct(backing);
        }
    }
    direct(&mut spec);
    spec["node-name"] = "export".into();
    spec["file"]["node-name"] = THIN_NODE.into();
    if cfg.discard {
        spec["discard"] = "unmap".into();
    }
    if cfg.detect_zeroes {
        spec["detect-zeroes"] = if cfg.discard { "unmap" } else { "on" }.into();
    }
    let mut cmd = Command::new("qemu-storage-daemon");
    cmd.arg("--blockdev")
        .arg(spec.to_string())
        .arg("--nbd-server")
        .arg(format!(
            "addr.type=unix,addr.path={},max-connections={MAX_CLIENTS}",
            socket.display()
        ))
        .arg("--export")
        .arg("type=nbd,id=export,node-name=export,name=,writable=on")
        .arg("--chardev")
        .arg(format!(
            "socket,id=qmp,path={},server=on,wait=off",
            qmp.display()
        ))
        .arg("--monitor")
        .arg("chardev=qmp");
    cmd
}

impl Engine {
    /// Refuses at once to pull `sd` from under open image tickets or NBD
    /// exports (they may stay for days; waiting on them helps nobody).
    pub(crate) fn refuse_if_exported(&self, sd: Uuid) -> Result<()> {
        let tickets = self.tickets_on(sd);
        let exports = self
            .nbd
            .servers
            .lock()
            .expect("nbd")
            .values()
            .filter(|s| s.sd == sd)
            .count();
        if tickets + exports > 0 {
            return Err(Error::DomainBusy {
                sd,
                reason: format!(
                    "{tickets} image ticket(s) and {exports} NBD export(s) use it; remove them first"
                ),
            });
        }
        Ok(())
    }

    /// `NBD.stop_server`: stopping a server that is not running succeeds.
    pub fn stop_nbd_server(&self, id: Uuid) {
        // Stopped outside the lock: other NBD calls never wait on it.
        let server = self.nbd.servers.lock().expect("nbd").remove(&id);
        if let Some(server) = server {
            if let Some((_, monitor)) = &server.qmp {
                let _ = self.unmonitor_drive(*monitor);
            }
            drop(server);
            tracing::info!(server = %id, "NBD server stopped");
        }
    }
}

/// Waits until qemu-nbd listens on its socket, or reports why it exited.
fn wait_listening(server: &mut Server, vol: Uuid) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = server
            .child
            .try_wait()
            .map_err(|e| Error::io_path("cannot wait for", std::path::Path::new("qemu-nbd"), e))?
        {
            let stderr = std::fs::read_to_string(&server.log).unwrap_or_default();
            return Err(Error::VolumeBusy {
                vol,
                reason: format!("qemu-nbd exited ({status}): {}", stderr.trim()),
            });
        }
        if std::os::unix::net::UnixStream::connect(&server.socket).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::VolumeBusy {
                vol,
                reason: "qemu-nbd did not start listening".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
