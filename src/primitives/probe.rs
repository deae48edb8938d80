//! Native probe of image headers (qcow2 and raw), for listings and getInfo
//! without spawning qemu-img.
//!
//! Input is untrusted: every offset and length is bounds-checked, nothing is
//! allocated from a size the header states beyond small fixed caps, and the
//! probe reads at most one cluster (≤ 2 MiB) plus the backing file name.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const QCOW2_MAGIC: u32 = 0x5146_49fb; // "QFI\xfb"
/// qemu refuses longer backing file names.
pub const MAX_BACKING_NAME: usize = 1023;
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
const V2_HEADER_LEN: usize = 72;
const V3_MIN_HEADER_LEN: usize = 104;
/// First read; enough for nearly every image.
const INITIAL_READ: usize = 4096;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_DATA_FILE: u32 = 0x4441_5441;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageHeader {
    pub format: ImageFormat,
    pub virtual_size: u64,
    /// qcow2 version (2 or 3); 0 for raw.
    pub version: u32,
    pub cluster_size: u64,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    /// External data file name (qcow2 v3 `data-file`).
    pub data_file: Option<String>,
    pub incompatible_features: u64,
    pub has_bitmaps: bool,
    pub encrypted: bool,
}

impl ImageHeader {
    /// "1.1" for qcow2 v3, "0.10" for v2.
    pub fn compat(&self) -> Option<&'static str> {
        match (self.format == ImageFormat::Qcow2, self.version) {
            (true, 3) => Some("1.1"),
            (true, 2) => Some("0.10"),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("invalid qcow2 header: {0}")]
    Invalid(&'static str),
    /// The parser needs the first `0` bytes of the file.
    #[error("need {0} bytes")]
    NeedMore(usize),
}

/// Parses the start of a file. `file_len` is the file's length. Returns
/// `NeedMore(n)` when the header, its extensions or the backing name reach
/// past `buf`; the caller retries with (up to) `n` bytes.
pub fn parse(buf: &[u8], file_len: u64) -> Result<ImageHeader, ProbeError> {
    if buf.len() < 4 || be32(buf, 0) != QCOW2_MAGIC {
        if (buf.len() as u64) < file_len.min(4) {
            return Err(ProbeError::NeedMore(4));
        }
        return Ok(ImageHeader {
            format: ImageFormat::Raw,
            virtual_size: file_len,
            version: 0,
            cluster_size: 0,
            backing_file: None,
            backing_format: None,
            data_file: None,
            incompatible_features: 0,
            has_bitmaps: false,
            encrypted: false,
        });
    }
    need(buf, V2_HEADER_LEN)?;
    let version = be32(buf, 4);
    if version != 2 && version != 3 {
        return Err(ProbeError::Invalid("unsupported version"));
    }
    let backing_offset = be64(buf, 8);
    let backing_size = be32(buf, 16) as usize;
    let cluster_bits = be32(buf, 20);
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(ProbeError::Invalid("cluster size out of range"));
    }
    let cluster_size = 1u64 << cluster_bits;
    let virtual_size = be64(buf, 24);
    let encrypted = be32(buf, 32) != 0;

    let (header_len, incompatible) = if version == 3 {
        need(buf, V3_MIN_HEADER_LEN)?;
        let incompat = be64(buf, 72);
        let header_len = be32(buf, 100) as usize;
        if header_len < V3_MIN_HEADER_LEN || header_len % 8 != 0 {
            return Err(ProbeError::Invalid("bad header length"));
        }
        (header_len, incompat)
    } else {
        (V2_HEADER_LEN, 0)
    };
    if header_len as u64 > cluster_size {
        return Err(ProbeError::Invalid("header larger than a cluster"));
    }

    // Header extensions: within the first cluster, before the backing name.
    let ext_limit = if backing_offset != 0 {
        backing_offset.min(cluster_size)
    } else {
        cluster_size
    } as usize;
    let mut backing_format = None;
    let mut data_file = None;
    let mut has_bitmaps = false;
    let mut off = header_len;
    loop {
        if off + 8 > ext_limit {
            break;
        }
        need(buf, off + 8)?;
        let kind = be32(buf, off);
        let len = be32(buf, off + 4) as usize;
        if kind == EXT_END {
            break;
        }
        let data_start = off + 8;
        let data_end = data_start
            .checked_add(len)
            .ok_or(ProbeError::Invalid("extension length"))?;
        if data_end > ext_limit {
            return Err(ProbeError::Invalid("extension past the first cluster"));
        }
        need(buf, data_end)?;
        let data = &buf[data_start..data_end];
        match kind {
            EXT_BACKING_FORMAT => backing_format = Some(text(data, "backing format")?),
            EXT_DATA_FILE => data_file = Some(text(data, "data file name")?),
            EXT_BITMAPS => has_bitmaps = true,
            _ => {}
        }
        off = data_end
            .checked_add(7)
            .ok_or(ProbeError::Invalid("extension length"))?
            & !7;
    }

    let backing_file = if backing_offset != 0 {
        if backing_size == 0 || backing_size > MAX_BACKING_NAME {
            return Err(ProbeError::Invalid("backing file name length"));
        }
        let end = backing_offset
            .checked_add(backing_size as u64)
            .filter(|&e| e <= cluster_size)
            .ok_or(ProbeError::Invalid(
                "backing file name past the first cluster",
            ))?;
        need(buf, end as usize)?;
        Some(text(
            &buf[backing_offset as usize..end as usize],
            "backing file name",
        )?)
    } else {
        None
    };

    Ok(ImageHeader {
        format: ImageFormat::Qcow2,
        virtual_size,
        version,
        cluster_size,
        backing_file,
        backing_format,
        data_file,
        incompatible_features: incompatible,
        has_bitmaps,
        encrypted,
    })
}

/// Probes a file: reads only what the header needs.
pub fn probe_file(path: &Path) -> io::Result<ImageHeader> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    probe_open(&f, len)
}

/// Probes an open file of length `len`.
pub fn probe_open(f: &File, len: u64) -> io::Result<ImageHeader> {
    let mut want = INITIAL_READ;
    loop {
        let mut buf = vec![0u8; want.min(len as usize)];
        let n = read_full_at(f, &mut buf)?;
        buf.truncate(n);
        match parse(&buf, len) {
            Ok(h) => return Ok(h),
            Err(ProbeError::NeedMore(more)) if more > want && (more as u64) <= len => want = more,
            Err(ProbeError::NeedMore(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "qcow2 header is truncated",
                ))
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

fn read_full_at(f: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn need(buf: &[u8], n: usize) -> Result<(), ProbeError> {
    if buf.len() < n {
        Err(ProbeError::NeedMore(n))
    } else {
        Ok(())
    }
}

fn text(data: &[u8], _what: &'static str) -> Result<String, ProbeError> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8(data[..end].to_vec()).map_err(|_| ProbeError::Invalid("name is not UTF-8"))
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().expect("bounds checked"))
}

fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().expect("bounds checked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_is_anything_without_magic() {
        let h = parse(b"hello world", 1 << 30).unwrap();
        assert_eq!(h.format, ImageFormat::Raw);
        assert_eq!(h.virtual_size, 1 << 30);
        assert_eq!(parse(b"", 0).unwrap().format, ImageFormat::Raw);
    }

    #[test]
    fn truncated_and_hostile_headers() {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(&QCOW2_MAGIC.to_be_bytes());
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        // Needs the end-of-extensions marker too.
        assert_eq!(parse(&h, 1 << 20), Err(ProbeError::NeedMore(112)));
        let mut full = h.clone();
        full.resize(112, 0);
        assert!(parse(&full, 1 << 20).is_ok());
        assert_eq!(parse(&h[..50], 1 << 20), Err(ProbeError::NeedMore(72)));
        // Cluster bits out of range.
        let mut bad = full.clone();
        bad[20..24].copy_from_slice(&40u32.to_be_bytes());
        assert!(matches!(parse(&bad, 1 << 20), Err(ProbeError::Invalid(_))));
        // Backing name far away.
        let mut bad = full.clone();
        bad[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        bad[16..20].copy_from_slice(&10u32.to_be_bytes());
        assert!(matches!(parse(&bad, 1 << 20), Err(ProbeError::Invalid(_))));
        // Extension claiming 4 GiB.
        let mut bad = h.clone();
        bad.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(parse(&bad, 1 << 20), Err(ProbeError::Invalid(_))));
    }
}
