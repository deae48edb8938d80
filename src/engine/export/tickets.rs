//! Image transfer tickets (`Host.add_image_ticket` and friends): the role
//! ovirt-imageio plays for VDSM. A ticket grants read and/or write access to
//! one volume's bytes over HTTP (see `api::transfer`) for a limited time.
//!
//! A ticket's URL must name a volume of a connected domain (directly or
//! through a prepared image's link); the file is opened when the ticket is
//! added, so a path changed later cannot redirect it. A ticket holds its
//! image's lock (exclusive for writing) until it is removed; tickets left
//! expired for [`ABANDONED_AFTER`] are dropped. Removing a ticket that wrote
//! a qcow2 volume checks the upload as untrusted input: a header that
//! names a backing file outside the chain, an external data file or the
//! wrong size, or a qcow2 structure `qemu-img check` (run under resource
//! limits) rejects, is reported, and such a chain cannot be prepared.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::resources::{Guard, Mode, Resource};
use crate::engine::volume::read_in_image;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::volume_md::header_disagreement;
use crate::primitives::nofollow;
use crate::primitives::{extents, qemu_img};
use crate::types::{Uuid, VolumeFormat, VolumeLegality};

/// How long adding a ticket waits for a busy image.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Expired tickets nobody removed are dropped after this long.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(600);
/// The longest timeout a ticket may have (a week).
const MAX_TIMEOUT: u64 = 7 * 24 * 3600;

/// `ImageTicket`, as added.
#[derive(Debug, Clone)]
pub struct TicketSpec {
    pub id: Uuid,
    pub size: u64,
    pub url: String,
    pub timeout: u64,
    pub read: bool,
    pub write: bool,
    pub filename: Option<String>,
}

/// `ImageTicketInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct TicketInfo {
    pub uuid: Uuid,
    pub size: u64,
    pub url: String,
    /// Seconds left; negative once expired.
    pub timeout: i64,
    pub ops: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    pub active: bool,
    pub transferred: u64,
}

/// What a client may do with a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Why a data request is refused (HTTP 403 or 416).
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("no such ticket")]
    Unknown,
    #[error("the ticket expired")]
    Expired,
    #[error("the ticket does not allow {0}")]
    NotAllowed(&'static str),
    #[error("range {offset}+{length} is past the ticket's size {size}")]
    OutOfRange { offset: u64, length: u64, size: u64 },
}

/// A range of a ticket's image: data, or zeros (a hole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    pub start: u64,
    pub length: u64,
    pub zero: bool,
    pub hole: bool,
}

pub struct Ticket {
    spec: TicketSpec,
    file: File,
    sd: Uuid,
    img: Uuid,
    vol: Uuid,
    expires: Mutex<Instant>,
    active: AtomicUsize,
    transferred: AtomicU64,
    wrote: AtomicBool,
    /// The volume's legality before the ticket made it ILLEGAL.
    was_legal: bool,
    _lock: Guard,
}

/// Counts a request as active while it lives.
pub struct ActiveRequest(Arc<Ticket>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::ops::Deref for ActiveRequest {
    type Target = Ticket;
    fn deref(&self) -> &Ticket {
        &self.0
    }
}

impl Ticket {
    pub fn size(&self) -> u64 {
        self.spec.size
    }

    pub fn filename(&self) -> Option<&str> {
        self.spec.filename.as_deref()
    }

    /// Checks a range before any byte moves.
    pub fn allow_range(&self, offset: u64, length: u64) -> std::result::Result<(), Denied> {
        match offset.checked_add(length) {
            Some(end) if end <= self.spec.size => Ok(()),
            _ => Err(Denied::OutOfRange {
                offset,
                length,
                size: self.spec.size,
            }),
        }
    }

    /// Reads `buf.len()` bytes at `offset`; past the end of the file (but
    /// within the ticket) reads zeros.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64)? {
                0 => {
                    buf[done..].fill(0);
                    break;
                }
                n => done += n,
            }
        }
        self.transferred
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.wrote.store(true, Ordering::Relaxed);
        self.file.write_all_at(data, offset)?;
        self.transferred
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Makes a range read as zeros, deallocating it where the file system
    /// can; beyond the end of the file it already reads as zeros.
    pub fn zero(&self, offset: u64, length: u64) -> io::Result<()> {
        self.wrote.store(true, Ordering::Relaxed);
        let len = self.file.metadata()?.len();
        let end = (offset + length).min(len);
        if offset < end {
            extents::zero_range(&self.file, offset, end - offset)?;
        }
        Ok(())
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The image's data and zero ranges, covering the ticket's size.
    pub fn extents(&self) -> io::Result<Vec<Extent>> {
        let size = self.spec.size;
        let mut out = Vec::new();
        let mut pos = 0;
        // The data path serves the volume's file as it is: an unallocated
        // range reads as zeros and is never a hole (imageio's "hole" means
        // "the backing file shows through", which would let a client
        // downloading onto a backing file skip it and corrupt the copy).
        let zeros = |start: u64, end: u64| Extent {
            start,
            length: end - start,
            zero: true,
            hole: false,
        };
        for (start, len) in extents::data_ranges(&self.file)? {
            if start >= size {
                break;
            }
            let end = (start + len).min(size);
            if start > pos {
                out.push(zeros(pos, start));
            }
            out.push(Extent {
                start,
                length: end - start,
                zero: false,
                hole: false,
            });
            pos = end;
        }
        if pos < size {
            out.push(zeros(pos, size));
        }
        Ok(out)
    }

    fn info(&self) -> TicketInfo {
        let now = Instant::now();
        let expires = *self.expires.lock().expect("ticket");
        let timeout = if expires >= now {
            (expires - now).as_secs_f64().ceil() as i64
        } else {
            -((now - expires).as_secs() as i64)
        };
        let mut ops = Vec::new();
        if self.spec.read {
            ops.push("read");
        }
        if self.spec.write {
            ops.push("write");
        }
        TicketInfo {
            uuid: self.spec.id,
            size: self.spec.size,
            url: self.spec.url.clone(),
            timeout,
            ops,
            filename: self.spec.filename.clone(),
            active: self.active.load(Ordering::Relaxed) > 0,
            transferred: self.transferred.load(Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
pub struct Tickets {
    tickets: Mutex<HashMap<Uuid, Arc<Ticket>>>,
}

impl Tickets {
    /// Takes out tickets expired long ago; the caller finishes them
    /// (outside the map's lock) as if they had been removed.
    fn sweep(map: &mut HashMap<Uuid, Arc<Ticket>>) -> Vec<Arc<Ticket>> {
        let now = Instant::now();
        let abandoned: Vec<Uuid> = map
            .iter()
            .filter(|(_, t)| *t.expires.lock().expect("ticket") + ABANDONED_AFTER <= now)
            .map(|(id, _)| *id)
            .collect();
        abandoned
            .into_iter()
            .filter_map(|id| {
                tracing::warn!(ticket = %id, "dropping a ticket abandoned after it expired");
                map.remove(&id)
            })
            .collect()
    }
}

/// The largest ticket a volume allows: its capacity for RAW; for a qcow2
/// file, VDSM's 1.1x cap on COW volumes plus room for a small image's
/// tables. A PUT can then never grow a RAW volume past its size.
fn max_ticket_size(md: &crate::format::volume_md::VolumeMetadata) -> u64 {
    match md.format {
        VolumeFormat::Raw => md.capacity,
        VolumeFormat::Cow => md
            .capacity
            .saturating_add(md.capacity / 10)
            .saturating_add(16 << 20),
    }
}

impl Engine {
    /// `Host.add_image_ticket`. Adding a ticket id again replaces it.
    pub fn add_image_ticket(&self, spec: TicketSpec) -> Result<()> {
        if !spec.read && !spec.write {
            return Err(Error::invalid("ticket.ops", "names neither read nor write"));
        }
        if spec.timeout == 0 || spec.timeout > MAX_TIMEOUT {
            return Err(Error::invalid(
                "ticket.timeout",
                format!("must be 1 to {MAX_TIMEOUT} seconds"),
            ));
        }
        if let Some(f) = &spec.filename {
            if f.is_empty() || f.contains(['/', '"', '\\']) || f.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "ticket.filename",
                    "must be a plain file name",
                ));
            }
        }
        // A replaced ticket is finished (its upload checked) and gives up
        // its lock before the new one takes it.
        let old = self
            .tickets
            .tickets
            .lock()
            .expect("tickets")
            .remove(&spec.id);
        if let Some(old) = old {
            if let Err(e) = self.finish_ticket(old) {
                tracing::warn!(ticket = %spec.id, error = %e, "the replaced ticket's upload was refused");
            }
        }
        let (sd, img, vol) = self.ticket_volume(&spec.url)?;
        let mode = if spec.write {
            Mode::Exclusive
        } else {
            Mode::Shared
        };
        // The image only: a transfer changes no domain structure, so it
        // never holds up attach or activate (those that would pull the
        // domain from under it check for it instead: `refuse_if_exported`).
        let lock = self
            .resources
            .acquire(&[(Resource::image(sd, img), mode)], LOCK_TIMEOUT)?;
        let access = if spec.write {
            nofollow::Access::READ_WRITE
        } else {
            nofollow::Access::READ
        };
        let dom = self.domain(sd)?;
        let mut md = read_in_image(&*dom, img, vol)?;
        let mut max = max_ticket_size(&md);
        // Reading may take all the volume's data holds: a qcow2 image on
        // an LV is followed by the rest of its extent.
        if !spec.write && md.format == VolumeFormat::Cow {
            max = max.max(dom.volume_sizes(img, vol)?.0);
        }
        if spec.size > max {
            return Err(Error::invalid(
                "ticket.size",
                format!(
                    "{} bytes is more than volume {vol} can hold ({max} bytes)",
                    spec.size
                ),
            ));
        }
        let file = dom.open_data(img, vol, access)?;
        // A volume being written through a ticket is ILLEGAL until the
        // ticket goes and its contents are checked: a crash mid-upload
        // leaves it ILLEGAL, never looking whole.
        let was_legal = md.legality == VolumeLegality::Legal;
        if spec.write && was_legal {
            md.legality = VolumeLegality::Illegal;
            dom.write_volume(img, vol, &md, dom.manifest()?.version)?;
        }
        tracing::info!(ticket = %spec.id, sd = %sd, img = %img, vol = %vol, size = spec.size,
            read = spec.read, write = spec.write, timeout = spec.timeout, "image ticket added");
        let ticket = Ticket {
            expires: Mutex::new(Instant::now() + Duration::from_secs(spec.timeout)),
            spec,
            file,
            sd,
            img,
            vol,
            active: AtomicUsize::new(0),
            transferred: AtomicU64::new(0),
            wrote: AtomicBool::new(false),
            was_legal,
            _lock: lock,
        };
        let abandoned = {
            let mut map = self.tickets.tickets.lock().expect("tickets");
            map.insert(ticket.spec.id, Arc::new(ticket));
            Tickets::sweep(&mut map)
        };
        self.finish_abandoned(abandoned);
        Ok(())
    }

    fn finish_abandoned(&self, abandoned: Vec<Arc<Ticket>>) {
        for t in abandoned {
            let id = t.spec.id;
            if let Err(e) = self.finish_ticket(t) {
                tracing::warn!(ticket = %id, error = %e, "the abandoned ticket's upload was refused");
            }
        }
    }

    /// Ends a ticket: a write ticket's volume is synced and, if written,
    /// checked as untrusted input; it is LEGAL again only if it passes
    /// (or, untouched, if it was LEGAL before).
    fn finish_ticket(&self, t: Arc<Ticket>) -> Result<()> {
        if !t.spec.write {
            return Ok(());
        }
        let wrote = t.wrote.load(Ordering::Relaxed);
        if wrote {
            if let Err(e) = t.file.sync_all() {
                tracing::warn!(ticket = %t.spec.id, error = %e, "cannot sync the uploaded volume");
            }
            self.verify_upload(&t)?;
        } else if !t.was_legal {
            return Ok(());
        }
        let dom = self.domain(t.sd)?;
        let mut md = read_in_image(&*dom, t.img, t.vol)?;
        if md.legality != VolumeLegality::Legal {
            md.legality = VolumeLegality::Legal;
            dom.write_volume(t.img, t.vol, &md, dom.manifest()?.version)?;
        }
        Ok(())
    }

    /// `Host.get_image_ticket`.
    pub fn get_image_ticket(&self, id: Uuid) -> Result<TicketInfo> {
        let (info, abandoned) = {
            let mut map = self.tickets.tickets.lock().expect("tickets");
            let abandoned = Tickets::sweep(&mut map);
            (map.get(&id).map(|t| t.info()), abandoned)
        };
        self.finish_abandoned(abandoned);
        info.ok_or_else(|| no_ticket(id))
    }

    /// `Host.extend_image_ticket`: the ticket expires `timeout` seconds
    /// from now.
    pub fn extend_image_ticket(&self, id: Uuid, timeout: u64) -> Result<()> {
        if timeout > MAX_TIMEOUT {
            return Err(Error::invalid(
                "timeout",
                format!("must be at most {MAX_TIMEOUT} seconds"),
            ));
        }
        let map = self.tickets.tickets.lock().expect("tickets");
        let t = map.get(&id).ok_or_else(|| no_ticket(id))?;
        *t.expires.lock().expect("ticket") = Instant::now() + Duration::from_secs(timeout);
        Ok(())
    }

    /// `Host.remove_image_ticket`: removing an unknown ticket succeeds.
    /// After an upload into a qcow2 volume, the upload is checked.
    pub fn remove_image_ticket(&self, id: Uuid) -> Result<()> {
        let Some(t) = self.tickets.tickets.lock().expect("tickets").remove(&id) else {
            return Ok(());
        };
        let info = t.info();
        tracing::info!(ticket = %id, transferred = info.transferred, "image ticket removed");
        self.finish_ticket(t)
    }

    /// Finishes tickets abandoned after they expired (their uploads are
    /// checked); run by the housekeeper, so none waits for another call.
    pub(crate) fn sweep_tickets(&self) {
        let abandoned = Tickets::sweep(&mut self.tickets.tickets.lock().expect("tickets"));
        self.finish_abandoned(abandoned);
    }

    /// Image tickets open on volumes of `sd`.
    pub(crate) fn tickets_on(&self, sd: Uuid) -> usize {
        let map = self.tickets.tickets.lock().expect("tickets");
        map.values().filter(|t| t.sd == sd).count()
    }

    /// Requests through the HTTP data path: the ticket, if it allows `access`.
    pub fn ticket_for(
        &self,
        id: Uuid,
        access: Access,
    ) -> std::result::Result<ActiveRequest, Denied> {
        let t = self
            .tickets
            .tickets
            .lock()
            .expect("tickets")
            .get(&id)
            .cloned()
            .ok_or(Denied::Unknown)?;
        if *t.expires.lock().expect("ticket") < Instant::now() {
            return Err(Denied::Expired);
        }
        match access {
            Access::Read if !t.spec.read => return Err(Denied::NotAllowed("reading")),
            Access::Write if !t.spec.write => return Err(Denied::NotAllowed("writing")),
            _ => {}
        }
        t.active.fetch_add(1, Ordering::Relaxed);
        Ok(ActiveRequest(t))
    }

    /// Resolves a ticket URL to the volume it names: `file://` and a path
    /// that, links resolved, is a volume's data (as the backend lays it out) of a domain
    /// under one of this host's storage connections.
    fn ticket_volume(&self, url: &str) -> Result<(Uuid, Uuid, Uuid)> {
        let bad = |why: &str| Error::invalid("ticket.url", format!("{url:?}: {why}"));
        let path = url
            .strip_prefix("file://")
            .ok_or_else(|| bad("only file:// URLs are supported"))?;
        let real = std::fs::canonicalize(path).map_err(|_| bad("no such file"))?;
        let (mounts, block) = (self.mount_dirs()?, self.block_env());
        let storage = crate::backend::Storage {
            mounts: &mounts,
            block: &block,
        };
        let (sd, img, vol) = crate::backend::volume_at(storage, &real)
            .ok_or_else(|| bad("is not a volume of a storage domain"))?;
        let dom = self.domain(sd)?;
        let expected = dom.data_path(img, vol)?;
        if expected.canonicalize().ok() != Some(real) {
            return Err(bad("is not a volume of a connected storage domain"));
        }
        read_in_image(&*dom, img, vol)?;
        Ok((sd, img, vol))
    }

    fn verify_upload(&self, t: &Ticket) -> Result<()> {
        let dom = self.domain(t.sd)?;
        let md = read_in_image(&*dom, t.img, t.vol)?;
        if md.format != VolumeFormat::Cow {
            return Ok(());
        }
        let refuse = |reason: String| {
            tracing::warn!(ticket = %t.spec.id, vol = %t.vol, %reason, "uploaded image refused");
            Error::Ticket {
                id: t.spec.id,
                reason: format!("the image uploaded to volume {} is unsafe: {reason}", t.vol),
            }
        };
        let header = dom
            .volume_header(t.img, t.vol, &md)
            .unwrap_or_else(|| Err(io::Error::other("no header")));
        if let Some(why) = header_disagreement(&md, &header) {
            return Err(refuse(why));
        }
        let path: &Path = &dom.data_path(t.img, t.vol)?;
        let check = qemu_img::check_untrusted(path, "qcow2").map_err(|e| refuse(e.to_string()))?;
        if !check.is_clean() {
            return Err(refuse(format!("qemu-img check found {check:?}")));
        }
        Ok(())
    }
}

fn no_ticket(id: Uuid) -> Error {
    Error::Ticket {
        id,
        reason: "no such ticket".into(),
    }
}
