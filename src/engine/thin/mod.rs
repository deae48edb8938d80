//! Thin volumes grow as their guests write.
//!
//! A thin (qcow2, sparse) volume on a block domain is an LV smaller than
//! its virtual size. Whoever runs the guest asks for more room before the
//! guest reaches the end: the SPM grows the LV, and the guest's host remaps
//! it. The SPM serves its own requests at once; other hosts ask through the
//! pool's mailbox on the master domain (VDSM's protocol and format), and
//! remap the LV when the reply comes.

pub mod monitor;
pub mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::mailbox::Extend;
use crate::format::volume_md::VolumeMetadata;
use crate::primitives::mailbox::{self, HostMailbox, Reply, SpmMailbox};
use crate::types::{Uuid, VolumeAllocation, VolumeFormat};

const MIB: u64 = 1 << 20;

/// How thin volumes are watched and grown.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: policy::Policy,
    pub mailbox: mailbox::Timing,
    /// How long a host waits for the SPM's reply before it says so (the
    /// request stays queued: a new SPM serves it).
    pub reply_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            policy: policy::Policy::default(),
            mailbox: mailbox::Timing::default(),
            reply_timeout: Duration::from_secs(60),
        }
    }
}

/// Events about thin volumes: (name, body); the faces forward them.
pub type Listener = Arc<dyn Fn(&str, serde_json::Value) + Send + Sync>;

/// The engine's thin-provisioning state: the mailbox sides this host runs,
/// the per-volume extend locks, the drives it watches.
pub struct Thin {
    pub settings: Settings,
    engine: Mutex<Weak<Engine>>,
    /// Extends of one volume run one at a time (VDSM: one per domain).
    volume_locks: Mutex<HashMap<Uuid, Arc<Mutex<()>>>>,
    host: Mutex<Option<(MailboxKey, Arc<HostMailbox>)>>,
    spm: Mutex<Option<(MailboxKey, SpmMailbox)>>,
    listener: Mutex<Option<Listener>>,
    pub(crate) drives: monitor::Drives,
}

/// Which pool, master and host id a mailbox side was started for.
type MailboxKey = (Uuid, Uuid, u32);

impl Thin {
    pub fn new(settings: Settings) -> Thin {
        Thin {
            settings,
            engine: Mutex::new(Weak::new()),
            volume_locks: Mutex::default(),
            host: Mutex::default(),
            spm: Mutex::default(),
            listener: Mutex::default(),
            drives: monitor::Drives::default(),
        }
    }

    pub(crate) fn bind(&self, engine: Weak<Engine>) {
        *self.engine.lock().expect("thin engine") = engine;
    }

    /// The engine, for what starts threads that outlive a call.
    pub(crate) fn engine(&self) -> Option<Arc<Engine>> {
        self.engine.lock().expect("thin engine").upgrade()
    }

    pub fn set_listener(&self, listener: impl Fn(&str, serde_json::Value) + Send + Sync + 'static) {
        *self.listener.lock().expect("thin listener") = Some(Arc::new(listener));
    }

    pub(crate) fn emit(&self, name: &str, body: serde_json::Value) {
        let listener = self.listener.lock().expect("thin listener").clone();
        if let Some(l) = listener {
            l(name, body);
        }
    }

    fn volume_lock(&self, vol: Uuid) -> Arc<Mutex<()>> {
        self.volume_locks
            .lock()
            .expect("volume locks")
            .entry(vol)
            .or_default()
            .clone()
    }

    /// The SPM side's counters, while this host serves the mailbox.
    pub fn spm_stats(&self) -> Option<serde_json::Value> {
        let spm = self.spm.lock().expect("spm mailbox");
        spm.as_ref().map(|(_, m)| {
            use std::sync::atomic::Ordering::Relaxed;
            let s = m.stats();
            serde_json::json!({
                "scans": s.scans.load(Relaxed),
                "event_reads": s.event_reads.load(Relaxed),
                "bytes_read": s.bytes_read.load(Relaxed),
                "requests": s.requests.load(Relaxed),
                "refused_blocks": s.refused_blocks.load(Relaxed),
            })
        })
    }
}

/// The most room a thin volume may have: 1.1 times its virtual size, in
/// whole MiB (VDSM's cap; lvm then rounds up to its extent).
pub fn max_room(capacity: u64) -> u64 {
    (capacity + capacity / 10).next_multiple_of(MIB)
}

/// What `Volume.getInfo` adds for a thin volume on an LV: its virtual size
/// is `capacity`, its room `apparentsize`.
#[derive(Debug, Clone, Serialize)]
pub struct ThinInfo {
    /// The most room it may get (1.1 times its virtual size).
    #[serde(rename = "maxRoom")]
    pub max_room: u64,
    /// What the guest has written, as qemu reports it (`wr_highest_offset`)
    /// while a drive monitor watches it on this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
    #[serde(rename = "monitorID", skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Uuid>,
}

impl Engine {
    pub(crate) fn thin_info(
        &self,
        dom: &dyn crate::backend::Domain,
        img: Uuid,
        vol: Uuid,
        md: &VolumeMetadata,
    ) -> Option<ThinInfo> {
        if refuse_thick(vol, md).is_err() || !matches!(dom.data_room(img, vol), Ok(Some(_))) {
            return None;
        }
        let watched = self
            .monitored_drives()
            .into_iter()
            .find(|(_, spec, _)| spec.vol == vol && spec.sd == dom.id());
        Some(ThinInfo {
            max_room: max_room(md.capacity),
            written: watched.as_ref().map(|(_, _, st)| st.allocation),
            monitor: watched.map(|(id, _, _)| id),
        })
    }
}

/// What `Volume.requestExtend` did.
#[derive(Debug, Clone, Serialize)]
pub struct Extended {
    /// Bytes the volume's storage holds for it on this host now.
    pub size: u64,
    /// Whether it grew (false: it was large enough already).
    pub extended: bool,
    /// Why nothing needed doing, when nothing did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    #[serde(flatten)]
    pub times: Timings,
}

/// How long an extend request took, in milliseconds, and its parts: the
/// lvextend on this host (the SPM), or the mailbox round trip (the SPM's
/// lvextend included) and the remap here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub elapsed_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lvextend_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_ms: Option<f64>,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn refuse_thick(vol: Uuid, md: &VolumeMetadata) -> Result<()> {
    if md.format != VolumeFormat::Cow {
        return Err(Error::NotThin {
            vol,
            reason: "it is RAW; a RAW volume on block storage has its whole size from the start",
        });
    }
    if md.allocation != VolumeAllocation::Sparse {
        return Err(Error::NotThin {
            vol,
            reason: "it is preallocated",
        });
    }
    Ok(())
}

fn refuse_beyond_cap(vol: Uuid, md: &VolumeMetadata, size: u64) -> Result<()> {
    let cap = max_room(md.capacity);
    if size > cap {
        return Err(Error::ExtendBeyondCap {
            vol,
            requested: size,
            cap,
        });
    }
    Ok(())
}

impl Engine {
    /// `Volume.requestExtend`: makes volume `vol` hold at least `size`
    /// bytes on this host (where its guest runs). The SPM grows it at
    /// once; another host asks the SPM through the mailbox, then remaps it.
    pub fn request_extend(
        &self,
        sp: Uuid,
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        size: u64,
    ) -> Result<Extended> {
        self.try_extend(sp, sd, img, vol, size).inspect_err(|e| {
            tracing::warn!(sd = %sd, vol = %vol, size, code = e.code(), error = %e, "extend refused");
            self.thin.emit(
                "extend_refused",
                serde_json::json!({
                    "sdUUID": sd, "imgUUID": img, "volUUID": vol, "requested": size,
                    "code": e.code(), "message": e.to_string(),
                }),
            );
        })
    }

    fn try_extend(&self, sp: Uuid, sd: Uuid, img: Uuid, vol: Uuid, size: u64) -> Result<Extended> {
        let started = Instant::now();
        let size = size.next_multiple_of(MIB);
        let pool = self.connected_pool(sp)?;
        let dom = self.pool_domain(&pool, sd)?;
        let done = |size, extended, note| Extended {
            size,
            extended,
            note,
            times: Timings {
                elapsed_ms: ms_since(started),
                ..Timings::default()
            },
        };
        const HOLDS: &str = "the volume holds that much already";
        let Some(room) = dom.data_room(img, vol)? else {
            return Ok(done(
                dom.volume_sizes(img, vol)?.0,
                false,
                Some(
                    "volumes of file domains grow as they are written; there is nothing to extend",
                ),
            ));
        };
        if pool.is_spm() {
            // extend_on_spm checks the volume itself: one metadata read on
            // the path a guest waits on.
            let t = Instant::now();
            let (mut room, grew) =
                self.extend_on_spm(sp, sd, Some(img), vol, size, pool.host_id)?;
            let lvextend_ms = ms_since(t);
            let mut refresh_ms = None;
            match dom.mapped_room(img, vol) {
                Some(here) if here < size => {
                    let t = Instant::now();
                    room = dom.refresh_room(img, vol)?;
                    refresh_ms = Some(ms_since(t));
                }
                here if !grew => return Ok(done(here.unwrap_or(room), false, Some(HOLDS))),
                _ => {}
            }
            let mut out = done(room, true, None);
            out.times.lvextend_ms = Some(lvextend_ms);
            out.times.refresh_ms = refresh_ms;
            return Ok(out);
        }
        let md = dom.read_volume(img, vol)?;
        refuse_thick(vol, &md)?;
        refuse_beyond_cap(vol, &md, size)?;
        // What this host maps counts: the lvm cache may lag the SPM's extend.
        let here = dom.mapped_room(img, vol).unwrap_or(room);
        if here >= size {
            return Ok(done(here, false, Some(HOLDS)));
        }
        let t = Instant::now();
        self.extend_through_mailbox(sd, vol, size)?;
        let mailbox_ms = ms_since(t);
        let t = Instant::now();
        let room = dom.refresh_room(img, vol)?;
        if room < size {
            return Err(Error::Extend {
                vol,
                reason: format!(
                    "the SPM replied, yet the LV maps {room} bytes here, less than {size}"
                ),
            });
        }
        let mut out = done(room, true, None);
        out.times.mailbox_ms = Some(mailbox_ms);
        out.times.refresh_ms = Some(ms_since(t));
        Ok(out)
    }

    fn extend_through_mailbox(&self, sd: Uuid, vol: Uuid, size: u64) -> Result<()> {
        let host = self.thin.host.lock().expect("host mailbox").clone();
        let Some((_, mailbox)) = host else {
            let reason = match self.pool.lock().expect("pool").as_ref() {
                Some(p) if !mailbox::serves_host(p.host_id) => format!(
                    "host id {} has no block in the pool's mailbox (hosts 1 to 249 do)",
                    p.host_id
                ),
                _ => "the pool's mailbox is not open on this host (see the log)".into(),
            };
            return Err(Error::Extend { vol, reason });
        };
        let msg = Extend {
            sd,
            vol,
            size_mib: size / MIB,
        };
        let rx = mailbox.send(msg).map_err(|e| Error::Extend {
            vol,
            reason: e.to_string(),
        })?;
        // Leaving the pool stops the mailbox and answers this waiter.
        drop(mailbox);
        let timeout = self.thin.settings.reply_timeout;
        match rx.recv_timeout(timeout) {
            Ok(Reply::Size(0)) => Err(Error::Extend {
                vol,
                reason: "the SPM could not extend it (its log and events say why)".into(),
            }),
            Ok(Reply::Size(_)) => Ok(()),
            Ok(Reply::Stopped) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::Extend {
                    vol,
                    reason: "this host left the pool's mailbox before the SPM replied".into(),
                })
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::Extend {
                vol,
                reason: format!(
                    "no reply from the SPM in {} s; the request stays queued for the SPM (or the next one)",
                    timeout.as_secs()
                ),
            }),
        }
    }

    /// The SPM's part: grows the LV of `vol` (of image `img` when the
    /// caller knows it) to at least `size` bytes; returns its room and
    /// whether it grew. `requester` is the host id of the guest's host;
    /// when it is not this host, this host's mapping is left alone (that
    /// host remaps first; VDSM BZ 1983882). Idempotent.
    pub(crate) fn extend_on_spm(
        &self,
        sp: Uuid,
        sd: Uuid,
        img: Option<Uuid>,
        vol: Uuid,
        size: u64,
        requester: u32,
    ) -> Result<(u64, bool)> {
        let pool = self.require_spm(sp)?;
        let dom = self.pool_domain(&pool, sd)?;
        // Extends come while guests write: no VG recheck per extend. The
        // end of the SPM role ends every ownership (`sync_mailboxes`), also
        // when it ended while this one began.
        dom.own_metadata();
        if !pool.is_spm() {
            self.lvm.disown_all();
            return Err(Error::NotSpm(sp));
        }
        let img = match img {
            Some(img) => img,
            None => dom.image_of(vol)?.ok_or(Error::VolumeNotFound(vol))?,
        };
        let md = dom.read_volume(img, vol)?;
        let Some(_) = dom.data_room(img, vol)? else {
            return Err(Error::NotThin {
                vol,
                reason:
                    "volumes of file domains grow as they are written; there is nothing to extend",
            });
        };
        refuse_thick(vol, &md)?;
        refuse_beyond_cap(vol, &md, size)?;
        let lock = self.thin.volume_lock(vol);
        let _serial = lock.lock().expect("volume extend lock");
        crate::failpoint::hit("thin.extend.planned")?;
        let before = dom.data_room(img, vol)?.unwrap_or(0);
        if before >= size {
            return Ok((before, false));
        }
        let started = Instant::now();
        let room = dom.grow_room(img, vol, size, requester == pool.host_id)?;
        crate::failpoint::hit("thin.extend.after_lvextend")?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(sd = %sd, img = %img, vol = %vol, from = before, to = room, requested = size, host = requester, ms, "thin volume extended");
        self.thin.emit(
            "volume_extended",
            serde_json::json!({
                "sdUUID": sd, "imgUUID": img, "volUUID": vol,
                "from": before, "to": room, "requested": size,
                "hostID": requester, "lvextend_ms": ms,
            }),
        );
        Ok((room, true))
    }

    /// Serves a mailbox request from host `host`: the size to reply with,
    /// 0 when it was refused (the reason goes to the log and an event:
    /// VDSM's reply format has no room for it).
    fn serve_mail(&self, sp: Uuid, host: u32, msg: Extend) -> u64 {
        match self.extend_on_spm(sp, msg.sd, None, msg.vol, msg.size_mib * MIB, host) {
            Ok(_) => msg.size_mib,
            Err(e) => {
                tracing::warn!(sd = %msg.sd, vol = %msg.vol, size_mib = msg.size_mib, host, code = e.code(), error = %e, "extend request refused");
                self.thin.emit(
                    "extend_refused",
                    serde_json::json!({
                        "sdUUID": msg.sd, "volUUID": msg.vol,
                        "requested": msg.size_mib * MIB, "hostID": host,
                        "code": e.code(), "message": e.to_string(),
                    }),
                );
                0
            }
        }
    }

    /// Starts and stops this host's mailbox sides to match the pool state:
    /// a host side while connected to a pool, an SPM side while SPM. Runs
    /// after every change of the pool, its master or the SPM role.
    pub(crate) fn sync_mailboxes(&self) {
        let pool = self.pool.lock().expect("pool").clone();
        if !pool.as_ref().is_some_and(|p| p.is_spm()) {
            // Not SPM: another host may change the domains' metadata.
            self.lvm.disown_all();
        }
        let want_host = pool
            .as_ref()
            .filter(|p| mailbox::serves_host(p.host_id))
            .map(|p| (p.id, p.master_sd, p.host_id));
        let want_spm = pool
            .as_ref()
            .filter(|p| p.is_spm())
            .map(|p| (p.id, p.master_sd, p.host_id));
        let timing = self.thin.settings.mailbox;
        {
            let mut spm = self.thin.spm.lock().expect("spm mailbox");
            if spm.as_ref().map(|(k, _)| *k) != want_spm {
                if let Some((key, old)) = spm.take() {
                    old.stop();
                    tracing::info!(pool = %key.0, "stopped serving the pool's mailbox");
                }
                if let Some(key) = want_spm {
                    let engine = self.thin.engine.lock().expect("thin engine").clone();
                    let handler: mailbox::Handler = Arc::new(move |host, msg| {
                        engine
                            .upgrade()
                            .map_or(0, |e| e.serve_mail(key.0, host, msg))
                    });
                    let started = self.domain(key.1).and_then(|m| m.open_mailbox()).and_then(
                        |(inbox, outbox)| {
                            SpmMailbox::start(inbox, outbox, handler, timing)
                                .map_err(|e| Error::io("cannot start the SPM mailbox", e))
                        },
                    );
                    match started {
                        Ok(m) => {
                            tracing::info!(pool = %key.0, master = %key.1, "serving the pool's mailbox");
                            *spm = Some((key, m));
                        }
                        Err(e) => {
                            tracing::error!(pool = %key.0, error = %e, "cannot serve the pool's mailbox: other hosts' thin volumes cannot grow")
                        }
                    }
                }
            }
        }
        let mut host = self.thin.host.lock().expect("host mailbox");
        if host.as_ref().map(|(k, _)| *k) != want_host {
            if let Some((key, old)) = host.take() {
                drop(old);
                tracing::info!(pool = %key.0, "left the pool's mailbox");
            }
            if let Some(key) = want_host {
                let started = self.domain(key.1).and_then(|m| m.open_mailbox()).and_then(
                    |(inbox, outbox)| {
                        HostMailbox::start(inbox, outbox, key.2, timing).map_err(|e| {
                            Error::io("cannot open the pool's mailbox", std::io::Error::other(e))
                        })
                    },
                );
                match started {
                    Ok(m) => *host = Some((key, Arc::new(m))),
                    Err(e) => {
                        tracing::error!(pool = %key.0, error = %e, "cannot open the pool's mailbox: this host's thin volumes grow only while it is SPM")
                    }
                }
            }
        } else if pool.is_some() && want_host.is_none() {
            tracing::debug!("this host's id has no mailbox block");
        }
    }
}
