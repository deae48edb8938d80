//! Backups in OpenStack Cinder's chunked format, as its posix driver
//! writes them, so Cinder's restore tools can read Cairn's backups and
//! Cairn can read theirs:
//!
//! - `<prefix>-00001`, `-00002`, …: objects, each a run of the disk
//!   (compressed with zlib, or stored as is);
//! - `<prefix>_sha256file`: the SHA-256 of every 32 KiB block of the disk;
//! - `<prefix>_metadata`: the list of objects (offset, length, compression,
//!   MD5 of the data), written last: a backup without it is incomplete.
//!
//! Cinder reads and hashes the whole disk for every backup. Here the
//! caller says which ranges to read (the dirty ranges of a bitmap for an
//! incremental backup, the allocated ones for a full one); every other
//! block keeps the hash it had in the parent backup (or the hash of zeros),
//! and only blocks whose hash changed become objects.
//!
//! What is read back is untrusted (another host or a restored archive
//! wrote it): names, offsets, lengths and sizes are checked, objects are
//! opened without following links and decompressed no further than their
//! declared length, and each is verified by its MD5 and block hashes.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::durable;
use super::nbd::NbdClient;
use super::nofollow::{self, Access};

/// Cinder's `backup_sha_block_size_bytes`.
pub const SHA_BLOCK: u64 = 32 << 10;
/// The largest object written (a multiple of [`SHA_BLOCK`]).
pub const OBJECT_MAX: u64 = 32 << 20;
/// The largest object read back: Cinder's posix driver writes ~2 GB ones.
const OBJECT_READ_MAX: u64 = 2 << 30;
/// The largest metadata or hash file read back (a 16 TiB disk's hashes
/// take ~35 MB).
const INDEX_READ_MAX: u64 = 256 << 20;
const FILE_MODE: u32 = 0o660;
const DIR_MODE: u32 = 0o770;
const FORMAT_VERSION: &str = "1.0.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zlib,
}

impl Compression {
    pub fn parse(s: &str) -> Option<Compression> {
        match s {
            "none" | "off" | "no" => Some(Compression::None),
            "zlib" | "gzip" => Some(Compression::Zlib),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zlib => "zlib",
        }
    }
}

/// One object as the metadata lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub offset: u64,
    pub length: u64,
    pub compression: Option<String>,
    /// Of the data before compression.
    pub md5: String,
}

/// What both index files begin with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexHeader {
    pub version: String,
    pub backup_id: String,
    pub volume_id: String,
    pub backup_name: Option<String>,
    pub backup_description: Option<String>,
    pub created_at: String,
}

/// `<prefix>_metadata`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(flatten)]
    pub header: IndexHeader,
    /// Each entry maps one object name to its info.
    pub objects: Vec<std::collections::BTreeMap<String, ObjectInfo>>,
    pub parent_id: Option<String>,
    /// The volume's own metadata, a JSON document in a string.
    pub volume_meta: String,
}

/// `<prefix>_sha256file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HashFile {
    #[serde(flatten)]
    pub header: IndexHeader,
    pub chunk_size: u64,
    pub sha256s: Vec<String>,
}

/// Where one backup's files are: a container directory and a prefix.
#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
    pub prefix: String,
}

impl Container {
    fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", self.prefix))
    }

    pub fn metadata_path(&self) -> PathBuf {
        self.file("_metadata")
    }

    /// Whether the backup was completed (its metadata written).
    pub fn is_complete(&self) -> bool {
        nofollow::check_file(&self.metadata_path()).is_ok()
    }

    /// Removes the backup's files (and the container if that empties it).
    pub fn remove(&self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // The metadata first: a half-removed backup reads as incomplete.
        durable::remove_if_exists(&self.metadata_path())?;
        durable::fsync_dir(&self.dir)?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.starts_with(&self.prefix)) {
                durable::remove_if_exists(&entry.path())?;
            }
        }
        durable::fsync_dir(&self.dir)?;
        if std::fs::remove_dir(&self.dir).is_ok() {
            durable::fsync_parent(&self.dir)?;
        }
        Ok(())
    }
}

/// What one backup reads: ranges (aligned to [`SHA_BLOCK`]) to read and
/// hash, or known to hold zeros. Blocks in neither keep the baseline's
/// hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Read(u64, u64),
    Zero(u64, u64),
}

/// Who a backup is, for its files' headers.
#[derive(Debug, Clone)]
pub struct Header {
    pub backup_id: String,
    pub volume_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub created_at: String,
    pub parent_id: Option<String>,
    pub volume_meta: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub objects: u64,
    /// Bytes read from the disk.
    pub read: u64,
    /// Bytes of data the objects hold (before compression).
    pub stored: u64,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn blocks_of(size: u64) -> u64 {
    size.div_ceil(SHA_BLOCK)
}

/// The hashes of an all-zero disk of `size` bytes.
pub fn zero_hashes(size: u64) -> Vec<String> {
    let full = hex(&Sha256::digest(vec![0u8; SHA_BLOCK as usize]));
    let mut v = vec![full; blocks_of(size) as usize];
    if size % SHA_BLOCK != 0 {
        *v.last_mut().expect("a partial block") =
            hex(&Sha256::digest(vec![0u8; (size % SHA_BLOCK) as usize]));
    }
    v
}

/// Writes one backup of the disk `disk` serves into `container`.
/// `baseline`: the parent's hashes (an incremental backup), or None (a
/// full one: the baseline is zeros, so only data is stored). `cancelled`
/// is asked between objects.
pub fn write_backup(
    disk: &mut NbdClient,
    container: &Container,
    header: &Header,
    plan: &[Range],
    baseline: Option<Vec<String>>,
    compression: Compression,
    progress: impl FnMut(u64, u64),
    cancelled: impl Fn() -> bool,
) -> io::Result<Stats> {
    let size = disk.size();
    let mut hashes = match baseline {
        Some(b) if b.len() as u64 == blocks_of(size) => b,
        Some(_) => {
            return Err(invalid(
                "the volume's size changed since the parent backup; do a full backup",
            ))
        }
        None => zero_hashes(size),
    };
    match std::fs::create_dir_all(&container.dir) {
        Ok(()) => std::fs::set_permissions(
            &container.dir,
            std::os::unix::fs::PermissionsExt::from_mode(DIR_MODE),
        )?,
        Err(e) => return Err(e),
    }
    // Reading and hashing here, checksumming and writing objects on a
    // second thread: the two overlap.
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let (scanned, stored) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || store_objects(rx, container, compression));
        let runs = Runs { pending: None, tx };
        let scanned = scan(disk, plan, &mut hashes, runs, progress, cancelled);
        (scanned, writer.join().expect("the object writer panicked"))
    });
    // The writer's failure explains the reader's (its objects went nowhere).
    let (objects, mut stats) = stored?;
    stats.read = scanned?;
    let index = IndexHeader {
        version: FORMAT_VERSION.into(),
        backup_id: header.backup_id.clone(),
        volume_id: header.volume_id.clone(),
        backup_name: header.name.clone(),
        backup_description: header.description.clone(),
        created_at: header.created_at.clone(),
    };
    let hash_file = HashFile {
        header: index.clone(),
        chunk_size: SHA_BLOCK,
        sha256s: hashes,
    };
    let metadata = Metadata {
        header: index,
        objects,
        parent_id: header.parent_id.clone(),
        volume_meta: header.volume_meta.clone(),
    };
    durable::write_atomic(
        &container.file("_sha256file"),
        &serde_json::to_vec(&hash_file)?,
        FILE_MODE,
    )?;
    durable::write_atomic(
        &container.metadata_path(),
        &serde_json::to_vec(&metadata)?,
        FILE_MODE,
    )?;
    Ok(stats)
}

/// Reads and hashes what `plan` says; sends the runs of blocks whose hash
/// changed to the object writer. Returns the bytes read.
fn scan(
    disk: &mut NbdClient,
    plan: &[Range],
    hashes: &mut [String],
    mut out: Runs,
    mut progress: impl FnMut(u64, u64),
    cancelled: impl Fn() -> bool,
) -> io::Result<u64> {
    let size = disk.size();
    let zeros = zero_hashes(size);
    let mut read_bytes = 0;
    let total: u64 = plan
        .iter()
        .map(|r| match r {
            Range::Read(_, len) => *len,
            Range::Zero(..) => 0,
        })
        .sum();
    let mut buf = vec![0u8; OBJECT_MAX as usize];
    for range in plan {
        let (start, len, read) = match *range {
            Range::Read(s, l) => (s, l, true),
            Range::Zero(s, l) => (s, l, false),
        };
        if start % SHA_BLOCK != 0 || start.checked_add(len).is_none_or(|e| e > size) {
            return Err(invalid(format!(
                "range {start}+{len} is not aligned inside the disk"
            )));
        }
        let end = (start + len).min(size);
        let mut at = start;
        while at < end {
            if cancelled() {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the backup was cancelled",
                ));
            }
            let n = (end - at).min(OBJECT_MAX) as usize;
            let piece = &mut buf[..n];
            if read {
                disk.read_at(piece, at)?;
                read_bytes += n as u64;
            } else {
                piece.fill(0);
            }
            for (i, block) in piece.chunks(SHA_BLOCK as usize).enumerate() {
                let off = at + i as u64 * SHA_BLOCK;
                let idx = (off / SHA_BLOCK) as usize;
                let hash = if read {
                    hex(&Sha256::digest(block))
                } else {
                    zeros[idx].clone()
                };
                if hash != hashes[idx] {
                    hashes[idx] = hash;
                    out.add(off, block)?;
                } else {
                    out.flush()?;
                }
            }
            at += n as u64;
            if read {
                progress(read_bytes, total);
            }
        }
    }
    out.flush()?;
    Ok(read_bytes)
}

/// Gathers changed blocks into runs, each sent on as one object.
struct Runs {
    pending: Option<(u64, Vec<u8>)>,
    tx: std::sync::mpsc::SyncSender<(u64, Vec<u8>)>,
}

impl Runs {
    fn add(&mut self, offset: u64, block: &[u8]) -> io::Result<()> {
        if let Some((start, data)) = &self.pending {
            if start + data.len() as u64 != offset || data.len() as u64 >= OBJECT_MAX {
                self.flush()?;
            }
        }
        let (_, data) = self
            .pending
            .get_or_insert_with(|| (offset, Vec::with_capacity(OBJECT_MAX as usize)));
        data.extend_from_slice(block);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some(run) => self
                .tx
                .send(run)
                .map_err(|_| io::Error::other("the object writer stopped")),
            None => Ok(()),
        }
    }
}

type ObjectList = Vec<std::collections::BTreeMap<String, ObjectInfo>>;

/// Writes each run received as the next object: checksummed, compressed
/// when that pays, synced.
fn store_objects(
    runs: std::sync::mpsc::Receiver<(u64, Vec<u8>)>,
    container: &Container,
    compression: Compression,
) -> io::Result<(ObjectList, Stats)> {
    let mut objects: ObjectList = Vec::new();
    let mut stats = Stats::default();
    for (offset, data) in runs {
        let name = format!("{}-{:05}", container.prefix, objects.len() + 1);
        let md5 = hex(&Md5::digest(&data));
        let packed = match compression {
            Compression::Zlib if compresses(&data) => Some(zlib(&data)?),
            _ => None,
        };
        // As Cinder: kept as is when compressing does not help.
        let (used, stored) = match &packed {
            Some(p) if p.len() < data.len() => (Compression::Zlib, &p[..]),
            _ => (Compression::None, &data[..]),
        };
        let path = container.dir.join(&name);
        durable::remove_if_exists(&path)?;
        durable::create_new_synced(&path, stored, FILE_MODE)?;
        stats.objects += 1;
        stats.stored += data.len() as u64;
        let info = ObjectInfo {
            offset,
            length: data.len() as u64,
            compression: Some(used.name().into()),
            md5,
        };
        objects.push([(name, info)].into_iter().collect());
    }
    Ok((objects, stats))
}

fn zlib(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(data)?;
    z.finish()
}

/// Whether compressing is worth it, judged on a sample: zlib crawls
/// through data that does not shrink (encrypted or compressed already)
/// at a fraction of the disk's speed.
fn compresses(data: &[u8]) -> bool {
    const SAMPLE: usize = 64 << 10;
    if data.len() <= SAMPLE {
        return true;
    }
    let mid = data.len() / 2;
    let sample = &data[mid..mid + SAMPLE];
    zlib(sample).is_ok_and(|packed| packed.len() < SAMPLE * 9 / 10)
}

fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let f = nofollow::open(path, Access::READ)?;
    let len = f.metadata()?.len();
    if len > limit {
        return Err(invalid(format!(
            "{} is {len} bytes, more than a backup file may be",
            path.display()
        )));
    }
    let mut data = Vec::with_capacity(len as usize);
    f.take(limit + 1).read_to_end(&mut data)?;
    Ok(data)
}

/// Reads and checks a backup's metadata and hashes.
pub fn read_index(container: &Container) -> io::Result<(Metadata, HashFile)> {
    let metadata: Metadata =
        serde_json::from_slice(&read_bounded(&container.metadata_path(), INDEX_READ_MAX)?)
            .map_err(|e| invalid(format!("the backup's metadata is not Cinder's: {e}")))?;
    let hashes: HashFile = serde_json::from_slice(&read_bounded(
        &container.file("_sha256file"),
        INDEX_READ_MAX,
    )?)
    .map_err(|e| invalid(format!("the backup's hash file is not Cinder's: {e}")))?;
    if hashes.chunk_size == 0 || hashes.chunk_size % 512 != 0 {
        return Err(invalid(format!(
            "hash block size {} is not usable",
            hashes.chunk_size
        )));
    }
    for entry in &metadata.objects {
        for (name, info) in entry {
            let numbered = name
                .strip_prefix(&container.prefix)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !numbered {
                return Err(invalid(format!(
                    "object {name:?} is not one of this backup's"
                )));
            }
            if info.length == 0 || info.length > OBJECT_READ_MAX {
                return Err(invalid(format!("object {name} has length {}", info.length)));
            }
        }
    }
    Ok((metadata, hashes))
}

/// Writes one backup's objects onto the disk `disk` serves, checking each
/// against its MD5 and block hashes. Blocks of zeros are written as
/// zeroes (holes where the image can). Returns the bytes restored.
///
/// A second thread reads, decompresses and checks the next objects while
/// this one writes: a restore moves at the pace of the slower half.
pub fn restore_objects(
    disk: &mut NbdClient,
    container: &Container,
    metadata: &Metadata,
    hashes: &HashFile,
    mut progress: impl FnMut(u64, u64),
    cancelled: impl Fn() -> bool,
) -> io::Result<u64> {
    let total: u64 = metadata
        .objects
        .iter()
        .flat_map(|o| o.values())
        .map(|i| i.length)
        .sum();
    let disk_size = disk.size();
    std::thread::scope(|s| {
        // Two objects ahead at most: memory stays bounded.
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        s.spawn(move || {
            for (name, info) in metadata.objects.iter().flat_map(|o| o.iter()) {
                let object = load_object(container, name, info, hashes, disk_size);
                let failed = object.is_err();
                // A closed channel: the writer stopped.
                if tx.send(object).is_err() || failed {
                    return;
                }
            }
        });
        let mut done = 0;
        for object in rx {
            if cancelled() {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the restore was cancelled",
                ));
            }
            let (offset, data) = object?;
            write_sparse(disk, offset, &data)?;
            done += data.len() as u64;
            progress(done, total);
        }
        disk.flush()?;
        Ok(done)
    })
}

/// One object's data and where it goes, once it is found to be what the
/// metadata and the block hashes say.
fn load_object(
    container: &Container,
    name: &str,
    info: &ObjectInfo,
    hashes: &HashFile,
    disk_size: u64,
) -> io::Result<(u64, Vec<u8>)> {
    if info
        .offset
        .checked_add(info.length)
        .is_none_or(|e| e > disk_size)
    {
        return Err(invalid(format!(
            "object {name} ({}+{}) lies outside the {disk_size}-byte volume",
            info.offset, info.length,
        )));
    }
    let stored = read_bounded(&container.dir.join(name), OBJECT_READ_MAX)?;
    let data = match info.compression.as_deref().unwrap_or("none") {
        "none" => stored,
        "zlib" => {
            let mut data = Vec::with_capacity(info.length as usize);
            flate2::read::ZlibDecoder::new(&stored[..])
                .take(info.length + 1)
                .read_to_end(&mut data)
                .map_err(|e| invalid(format!("object {name} does not decompress: {e}")))?;
            data
        }
        other => {
            return Err(invalid(format!(
                "object {name} uses compression {other:?}, which Cairn does not read"
            )))
        }
    };
    if data.len() as u64 != info.length {
        return Err(invalid(format!(
            "object {name} holds {} bytes, not {}",
            data.len(),
            info.length
        )));
    }
    if hex(&Md5::digest(&data)) != info.md5.to_ascii_lowercase() {
        return Err(invalid(format!("object {name} does not match its MD5")));
    }
    check_block_hashes(name, info.offset, &data, hashes)?;
    Ok((info.offset, data))
}

fn check_block_hashes(name: &str, offset: u64, data: &[u8], hashes: &HashFile) -> io::Result<()> {
    let bs = hashes.chunk_size;
    if offset % bs != 0 {
        return Ok(());
    }
    for (i, block) in data.chunks(bs as usize).enumerate() {
        let idx = (offset / bs) as usize + i;
        match hashes.sha256s.get(idx) {
            Some(want) if *want == hex(&Sha256::digest(block)) => {}
            _ => {
                return Err(invalid(format!(
                    "object {name} does not match the backup's block hashes"
                )))
            }
        }
    }
    Ok(())
}

/// Writes `data` at `offset`, zeroing instead of writing its all-zero blocks.
fn write_sparse(disk: &mut NbdClient, offset: u64, data: &[u8]) -> io::Result<()> {
    let bs = SHA_BLOCK as usize;
    let zero_at = |i: usize| data[i..(i + bs).min(data.len())].iter().all(|&b| b == 0);
    let mut start = 0;
    while start < data.len() {
        let zero = zero_at(start);
        let mut end = (start + bs).min(data.len());
        while end < data.len() && zero_at(end) == zero {
            end = (end + bs).min(data.len());
        }
        let at = offset + start as u64;
        if zero {
            disk.write_zeroes(at, (end - start) as u64)?;
        } else {
            disk.write_at(&data[start..end], at)?;
        }
        start = end;
    }
    Ok(())
}

/// Checks that every object of a backup is there, before a restore
/// changes anything.
pub fn check_objects_exist(container: &Container, metadata: &Metadata) -> io::Result<()> {
    for entry in &metadata.objects {
        for name in entry.keys() {
            nofollow::check_file(&container.dir.join(name))
                .map_err(|e| invalid(format!("object {name} of the backup cannot be read: {e}")))?;
        }
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_hashes_cover_a_partial_last_block() {
        let h = zero_hashes(SHA_BLOCK * 2 + 512);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0], h[1]);
        assert_ne!(h[1], h[2]);
        assert_eq!(h[2], hex(&Sha256::digest([0u8; 512])));
    }

    #[test]
    fn objects_outside_the_prefix_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Container {
            dir: dir.path().into(),
            prefix: "volume_x_backup_y".into(),
        };
        let index = IndexHeader {
            version: FORMAT_VERSION.into(),
            backup_id: "y".into(),
            volume_id: "x".into(),
            backup_name: None,
            backup_description: None,
            created_at: String::new(),
        };
        let meta = |name: &str| Metadata {
            header: index.clone(),
            objects: vec![[(
                name.to_string(),
                ObjectInfo {
                    offset: 0,
                    length: 4096,
                    compression: None,
                    md5: String::new(),
                },
            )]
            .into_iter()
            .collect()],
            parent_id: None,
            volume_meta: "{}".into(),
        };
        let hashes = HashFile {
            header: index.clone(),
            chunk_size: SHA_BLOCK,
            sha256s: vec![],
        };
        std::fs::write(c.file("_sha256file"), serde_json::to_vec(&hashes).unwrap()).unwrap();
        for bad in [
            "../../etc/passwd",
            "volume_x_backup_y-1/x",
            "other-00001",
            "volume_x_backup_y_metadata",
        ] {
            std::fs::write(c.metadata_path(), serde_json::to_vec(&meta(bad)).unwrap()).unwrap();
            assert!(read_index(&c).is_err(), "{bad} accepted");
        }
        std::fs::write(
            c.metadata_path(),
            serde_json::to_vec(&meta("volume_x_backup_y-00001")).unwrap(),
        )
        .unwrap();
        read_index(&c).unwrap();
    }
}
