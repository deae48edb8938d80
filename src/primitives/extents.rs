//! Allocated ranges of sparse files, and scrubbing them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::fs::{fallocate, seek, FallocateFlags, SeekFrom};

/// Bytes a file or block device holds (a device's metadata says 0).
pub fn length(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    seek(file, SeekFrom::End(0)).map_err(io::Error::from)
}

/// Allocated (data) ranges of a file as (offset, length), from
/// SEEK_DATA/SEEK_HOLE; holes are skipped. A block device has no holes to
/// tell: all of it is data.
pub fn data_ranges(file: &File) -> io::Result<Vec<(u64, u64)>> {
    let len = length(file)?;
    if !file.metadata()?.is_file() {
        return Ok(if len > 0 { vec![(0, len)] } else { Vec::new() });
    }
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            // No data after pos.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(file, SeekFrom::Hole(start))
            .map_err(io::Error::from)?
            .min(len);
        if end > start {
            out.push((start, end - start));
        }
        pos = end;
    }
    Ok(out)
}

/// Overwrites every allocated byte with zeros and syncs: what `postZero`
/// asks for. (On copy-on-write file systems the old blocks may survive
/// elsewhere; the file's contents are zero either way.)
pub fn zero_data(file: &File) -> io::Result<u64> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut written = 0;
    for (start, len) in data_ranges(file)? {
        let mut off = start;
        while off < start + len {
            let n = ((start + len - off) as usize).min(CHUNK);
            file.write_all_at(&zeros[..n], off)?;
            off += n as u64;
            written += n as u64;
        }
    }
    file.sync_data()?;
    Ok(written)
}

/// Gives the file's blocks back to the storage (`discard`): punches a hole
/// over all of it, keeping its size.
pub fn discard(file: &File) -> io::Result<()> {
    let len = length(file)?;
    if len == 0 {
        return Ok(());
    }
    fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        0,
        len,
    )
    .map_err(io::Error::from)?;
    file.sync_data()
}

/// Makes a range read as zeros: punched out where the file system can,
/// else zeroed in place by the file system, else written with zeros.
pub fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    let zero = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
    for flags in [punch, zero] {
        match fallocate(file, flags, offset, len) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut off = offset;
    while off < offset + len {
        let n = (offset + len - off).min(CHUNK);
        file.write_all_at(&zeros[..n as usize], off)?;
        off += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn ranges_zero_and_discard() {
        let dir = tempfile::tempdir().unwrap();
        let f = crate::primitives::scratch_file(dir.path(), "f");
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&[0x55; 65536], 1 << 20).unwrap();
        f.write_all_at(&[0x66; 65536], 8 << 20).unwrap();
        let ranges = data_ranges(&f).unwrap();
        assert_eq!(ranges.len(), 2, "{ranges:?}");
        assert!(ranges[0].0 <= 1 << 20 && ranges[1].0 <= 8 << 20);
        assert!(zero_data(&f).unwrap() >= 2 * 65536);
        let mut buf = vec![1u8; 65536];
        f.read_exact_at(&mut buf, 1 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        discard(&f).unwrap();
        assert_eq!(f.metadata().unwrap().blocks(), 0);
        assert_eq!(f.metadata().unwrap().len(), 16 << 20);
        assert!(data_ranges(&f).unwrap().is_empty());
    }
}
