//! Raw-to-raw copy at disk speed: a reflink when source and target share a
//! file system that supports it; otherwise only the source's data ranges
//! (SEEK_DATA/SEEK_HOLE) are copied: large copies with O_DIRECT reads and
//! writes of large aligned buffers, a reader thread overlapping the writer
//! (no page cache churn), small ones or file systems without O_DIRECT in
//! the kernel with copy_file_range. Holes stay holes and are never written
//! as zeros.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use super::extents::data_ranges;
use super::pipeline::{pieces, pipelined, ALIGN};

/// Copies with less data than this skip O_DIRECT: starting threads and
/// buffers would cost more than the page cache does.
const DIRECT_MIN: u64 = 64 << 20;
/// Bytes per O_DIRECT read or write.
const DIRECT_PIECE: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// FICLONE: the target shares the source's blocks.
    Reflink,
    /// O_DIRECT reads and writes over the data ranges, overlapped.
    Direct,
    /// copy_file_range over the data ranges.
    CopyRange,
    /// read/write over the data ranges (file systems without the above).
    ReadWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub method: Method,
    /// Bytes of data copied (holes excluded).
    pub copied: u64,
}

/// Copies `src` over `dst` (both open; `dst` writable). The target ends
/// with the source's length, data where the source has data and holes
/// where it has holes, synced. `progress` gets (done, total) in bytes.
pub fn copy_raw(src: &File, dst: &File, progress: impl FnMut(u64, u64)) -> io::Result<CopyStats> {
    let len = src.metadata()?.len();
    copy_raw_len(src, dst, len, progress)
}

/// [`copy_raw`] of the first `len` bytes, where either side may be a block
/// device (an LV): a device has no holes to skip and no length to set, so
/// all of `[0, len)` is copied to it or from it.
pub fn copy_raw_len(
    src: &File,
    dst: &File,
    len: u64,
    mut progress: impl FnMut(u64, u64),
) -> io::Result<CopyStats> {
    let regular = |f: &File| f.metadata().map(|m| m.file_type().is_file());
    let (src_file, dst_file) = (regular(src)?, regular(dst)?);
    if src_file
        && dst_file
        && src.metadata()?.len() == len
        && rustix::fs::ioctl_ficlone(dst, src).is_ok()
    {
        dst.sync_all()?;
        progress(len, len);
        return Ok(CopyStats {
            method: Method::Reflink,
            copied: len,
        });
    }
    if dst_file {
        // Start from an all-hole target of the right size.
        dst.set_len(0)?;
        dst.set_len(len)?;
    }
    // A device tells no holes: its zero blocks stay holes in a file.
    let holes = dst_file && !src_file;
    let ranges = if src_file {
        data_ranges(src)?
            .into_iter()
            .filter(|&(start, _)| start < len)
            .map(|(start, n)| (start, n.min(len - start)))
            .collect()
    } else {
        vec![(0, len)]
    };
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    if total >= DIRECT_MIN {
        if let Some(direct) = open_direct(src, dst) {
            let copied = copy_direct(&direct, src, dst, &ranges, holes, &mut progress)?;
            dst.sync_all()?;
            return Ok(CopyStats {
                method: Method::Direct,
                copied,
            });
        }
    }
    let mut done = 0;
    let mut method = Method::CopyRange;
    // The read/write fallback's buffer, allocated once when first needed.
    let mut buf = Vec::new();
    for (start, length) in ranges {
        let mut off = start;
        let end = start + length;
        while off < end {
            let n = match method {
                Method::CopyRange => {
                    let (mut in_off, mut out_off) = (off, off);
                    match rustix::fs::copy_file_range(
                        src,
                        Some(&mut in_off),
                        dst,
                        Some(&mut out_off),
                        (end - off) as usize,
                    ) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "source shrank while copying",
                            ))
                        }
                        Ok(n) => n as u64,
                        // Across file systems on older kernels, or unsupported.
                        Err(
                            rustix::io::Errno::XDEV
                            | rustix::io::Errno::NOSYS
                            | rustix::io::Errno::INVAL
                            | rustix::io::Errno::OPNOTSUPP,
                        ) => {
                            method = Method::ReadWrite;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Method::ReadWrite | Method::Reflink | Method::Direct => {
                    read_write(src, dst, off, end - off, &mut buf, holes)?
                }
            };
            off += n;
            done += n;
            progress(done, total);
        }
    }
    dst.sync_all()?;
    Ok(CopyStats {
        method,
        copied: done,
    })
}

/// The source and the target opened again with O_DIRECT, if their file
/// system allows it.
fn open_direct(src: &File, dst: &File) -> Option<(File, File)> {
    let reopen = |f: &File, write: bool| {
        OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(format!("/proc/self/fd/{}", f.as_raw_fd()))
    };
    Some((reopen(src, false).ok()?, reopen(dst, true).ok()?))
}

/// Copies the aligned part of each data range with O_DIRECT, the reader
/// overlapping the writer; unaligned ends (a file length that is not a
/// multiple of the alignment) go through the page cache.
fn copy_direct(
    (dsrc, ddst): &(File, File),
    src: &File,
    dst: &File,
    ranges: &[(u64, u64)],
    holes: bool,
    progress: &mut impl FnMut(u64, u64),
) -> io::Result<u64> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let align = ALIGN as u64;
    let mut tails = Vec::new();
    let mut direct = Vec::new();
    for &(start, len) in ranges {
        let end = start + len;
        let aligned_end = end / align * align;
        if start % align != 0 || aligned_end <= start {
            tails.push((start, len));
            continue;
        }
        direct.push((start, aligned_end - start));
        if aligned_end < end {
            tails.push((aligned_end, end - aligned_end));
        }
    }
    let mut done = 0;
    pipelined(
        direct
            .into_iter()
            .flat_map(|(start, len)| pieces(start, len, DIRECT_PIECE)),
        DIRECT_PIECE,
        |off, buf| dsrc.read_exact_at(buf, off),
        |off, buf| {
            write_keeping_holes(ddst, buf, off, holes)?;
            done += buf.len() as u64;
            progress(done, total);
            Ok(())
        },
    )?;
    let mut buf = Vec::new();
    for (start, len) in tails {
        let mut off = start;
        while off < start + len {
            off += read_write(src, dst, off, start + len - off, &mut buf, holes)?;
        }
        done += len;
        progress(done, total);
    }
    Ok(done)
}

/// Copies up to 8 MiB at `off`; with `holes`, a chunk of zeros is not
/// written (the target reads as zeros there already).
fn read_write(
    src: &File,
    dst: &File,
    off: u64,
    len: u64,
    buf: &mut Vec<u8>,
    holes: bool,
) -> io::Result<u64> {
    const CHUNK: usize = 8 << 20;
    buf.resize(CHUNK, 0);
    let n = len.min(CHUNK as u64) as usize;
    src.read_exact_at(&mut buf[..n], off)?;
    write_keeping_holes(dst, &buf[..n], off, holes)?;
    Ok(n as u64)
}

/// Writes `buf` at `off`; with `holes`, only its runs of 64 KiB blocks
/// that are not all zeros (the target reads as zeros elsewhere already).
/// Block boundaries keep an O_DIRECT write aligned.
fn write_keeping_holes(dst: &File, buf: &[u8], off: u64, holes: bool) -> io::Result<()> {
    if !holes {
        return dst.write_all_at(buf, off);
    }
    const BLOCK: usize = 64 << 10;
    let mut run: Option<usize> = None;
    let mut at = 0;
    while at < buf.len() {
        let end = (at + BLOCK).min(buf.len());
        let zero = buf[at..end].iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(at),
            (true, Some(start)) => {
                dst.write_all_at(&buf[start..at], off + start as u64)?;
                run = None;
            }
            _ => {}
        }
        at = end;
    }
    if let Some(start) = run {
        dst.write_all_at(&buf[start..], off + start as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitives::scratch_file as file;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_are_left_as_holes_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let dst = file(dir.path(), "dst");
        dst.set_len(4 << 20).unwrap();
        let mut buf = vec![0u8; 4 << 20];
        buf[(1 << 20) + 5] = 7;
        buf[(3 << 20)..(3 << 20) + 100].fill(9);
        write_keeping_holes(&dst, &buf, 0, true).unwrap();
        let mut back = vec![0u8; 4 << 20];
        dst.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, buf);
        // Two 64 KiB blocks written, the rest holes.
        assert_eq!(dst.metadata().unwrap().blocks() * 512, 128 << 10);
    }

    #[test]
    fn copies_data_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = file(dir.path(), "src");
        src.set_len(64 << 20).unwrap();
        src.write_all_at(&[0x11; 1 << 20], 0).unwrap();
        src.write_all_at(&[0x22; 1 << 20], 40 << 20).unwrap();
        // The target has old data everywhere; it must not survive.
        let dst = file(dir.path(), "dst");
        dst.write_all_at(&vec![0x77; 64 << 20], 0).unwrap();
        let mut last = (0, 0);
        let stats = copy_raw(&src, &dst, |d, t| last = (d, t)).unwrap();
        assert_eq!(last.0, last.1);
        assert_eq!(
            std::fs::read(dir.path().join("src")).unwrap(),
            std::fs::read(dir.path().join("dst")).unwrap()
        );
        let blocks = dst.metadata().unwrap().blocks() * 512;
        if stats.method != Method::Reflink {
            assert_eq!(stats.copied, 2 << 20);
            assert!(
                blocks < 4 << 20,
                "holes stay holes: {blocks} bytes allocated"
            );
        }
    }

    #[test]
    fn large_copies_go_direct_with_unaligned_tails() {
        let dir = tempfile::tempdir().unwrap();
        let src = file(dir.path(), "src");
        let data: Vec<u8> = (0..(72u32 << 20) + 1000).map(|i| (i % 253) as u8).collect();
        src.write_all_at(&data, 4 << 20).unwrap();
        let dst = file(dir.path(), "dst");
        dst.write_all_at(&[0x77; 1 << 20], 0).unwrap();
        let stats = copy_raw(&src, &dst, |_, _| {}).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("src")).unwrap(),
            std::fs::read(dir.path().join("dst")).unwrap()
        );
        if stats.method != Method::Reflink {
            // tmpfs has no O_DIRECT; the copy then goes through the kernel.
            assert!(matches!(stats.method, Method::Direct | Method::CopyRange));
            assert_eq!(stats.copied, data.len() as u64);
        }
    }

    #[test]
    fn read_write_fallback_copies_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let src = file(dir.path(), "src");
        let data: Vec<u8> = (0..(10u32 << 20)).map(|i| (i % 251) as u8).collect();
        src.write_all_at(&data, 0).unwrap();
        let dst = file(dir.path(), "dst");
        let (mut off, mut buf) = (0, Vec::new());
        while off < data.len() as u64 {
            off += read_write(&src, &dst, off, data.len() as u64 - off, &mut buf, false).unwrap();
        }
        assert_eq!(std::fs::read(dir.path().join("dst")).unwrap(), data);
    }
}
