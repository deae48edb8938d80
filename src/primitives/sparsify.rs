//! Finding ranges that hold only zeros and giving their space back, in
//! place, without changing what the image reads.
//!
//! RAW files get their zero blocks punched out. A qcow2 layer's zero
//! clusters are found from `qemu-img map` (host offsets of its own data)
//! and zeroed with unmap through qemu-io, so qemu's block layer writes the
//! qcow2 metadata: with compat 1.1 the clusters become zero clusters that
//! still hide whatever a backing file holds there. (qemu-img cannot
//! deallocate a range; qemu-io is the same block layer driven by commands.)

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};

use super::extents::data_ranges;
use super::qemu_img::{self, MapEntry, QemuImgError};

/// Granularity of zero detection in RAW files (a file system block).
const RAW_BLOCK: u64 = 4096;
/// Bytes read at a time.
const READ_CHUNK: u64 = 4 << 20;

/// What sparsifying found and freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SparsifyStats {
    /// Allocated bytes examined.
    pub scanned: u64,
    /// Bytes found to hold only zeros and deallocated.
    pub freed: u64,
}

/// Zero runs in `[start, start + len)` of `file` at `offset_in_file`, in
/// `block` units: calls `found(guest_start, length)` for each run.
fn zero_runs(
    file: &File,
    host_offset: u64,
    guest_start: u64,
    len: u64,
    block: u64,
    found: &mut impl FnMut(u64, u64),
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK as usize];
    let mut run: Option<(u64, u64)> = None;
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(READ_CHUNK);
        file.read_exact_at(&mut buf[..n as usize], host_offset + pos)?;
        for (i, blk) in buf[..n as usize].chunks(block as usize).enumerate() {
            let at = guest_start + pos + i as u64 * block;
            if blk.len() as u64 == block && blk.iter().all(|&b| b == 0) {
                run = match run {
                    Some((s, l)) if s + l == at => Some((s, l + block)),
                    Some((s, l)) => {
                        found(s, l);
                        Some((at, block))
                    }
                    None => Some((at, block)),
                };
            }
        }
        pos += n;
    }
    if let Some((s, l)) = run {
        found(s, l);
    }
    Ok(())
}

/// Punches out the zero blocks of a RAW file.
pub fn sparsify_raw(file: &File, mut progress: impl FnMut(u64, u64)) -> io::Result<SparsifyStats> {
    let ranges = data_ranges(file)?;
    let total: u64 = ranges.iter().map(|(_, l)| l).sum();
    let mut stats = SparsifyStats::default();
    let mut zeros = Vec::new();
    for (start, len) in ranges {
        // Blocks are aligned to the file, so a run never splits a block.
        let aligned = start.div_ceil(RAW_BLOCK) * RAW_BLOCK;
        let end = start + len;
        if aligned < end {
            zero_runs(
                file,
                aligned,
                aligned,
                end - aligned,
                RAW_BLOCK,
                &mut |s, l| zeros.push((s, l)),
            )?;
        }
        stats.scanned += len;
        progress(stats.scanned, total);
    }
    for (s, l) in zeros {
        super::extents::zero_range(file, s, l)?;
        stats.freed += l;
    }
    file.sync_data()?;
    Ok(stats)
}

/// Zeroes with unmap the all-zero clusters of the top qcow2 layer of
/// `chain_spec` (a qemu json spec of the volume with its backing chain),
/// whose own file is `file`.
pub fn sparsify_qcow2(
    file: &File,
    chain_spec: &serde_json::Value,
    cluster_size: u64,
    mut progress: impl FnMut(u64, u64),
) -> Result<SparsifyStats, QemuImgError> {
    let io_err = |e: io::Error| QemuImgError::Spawn(e);
    // The layer alone: its own data and where it is in the file.
    let mut alone = chain_spec.clone();
    alone["backing"] = serde_json::Value::Null;
    let entries = qemu_img::map(&alone)?;
    let own: Vec<&MapEntry> = entries
        .iter()
        .filter(|e| e.depth == 0 && e.data && !e.compressed && e.offset.is_some())
        .collect();
    let total: u64 = own.iter().map(|e| e.length).sum();
    let mut stats = SparsifyStats::default();
    let mut zeros: Vec<(u64, u64)> = Vec::new();
    for e in own {
        let aligned = e.start.div_ceil(cluster_size) * cluster_size;
        let end = e.start + e.length;
        if aligned < end {
            let host = e.offset.expect("filtered") + (aligned - e.start);
            zero_runs(
                file,
                host,
                aligned,
                end - aligned,
                cluster_size,
                &mut |s, l| match zeros.last_mut() {
                    Some((ps, pl)) if *ps + *pl == s => *pl += l,
                    _ => zeros.push((s, l)),
                },
            )
            .map_err(io_err)?;
        }
        stats.scanned += e.length;
        progress(stats.scanned, total);
    }
    if zeros.is_empty() {
        return Ok(stats);
    }
    // Commands on stdin: there may be many ranges.
    let mut cmd = Command::new("qemu-io");
    super::child::die_with_parent(&mut cmd);
    cmd.arg(format!("json:{chain_spec}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(io_err)?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut script = String::new();
        for (s, l) in &zeros {
            script.push_str(&format!("write -z -u {s} {l}\n"));
            stats.freed += l;
        }
        script.push_str("flush\nquit\n");
        stdin.write_all(script.as_bytes()).map_err(io_err)?;
    }
    let out = child.wait_with_output().map_err(io_err)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        return Err(QemuImgError::Failed {
            command: "qemu-io write -z -u".into(),
            code: out.status.code(),
            stderr: stderr.trim().into(),
        });
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_zero_blocks_are_punched_and_data_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = crate::primitives::scratch_file(dir.path(), "f");
        f.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
        f.write_all_at(&[7u8; 100], 4096 * 10 + 5).unwrap();
        f.sync_all().unwrap();
        let before = std::fs::read(&p).unwrap();
        let stats = sparsify_raw(&f, |_, _| {}).unwrap();
        assert_eq!(stats.scanned, 1 << 20);
        assert_eq!(stats.freed, (1 << 20) - 4096);
        assert_eq!(std::fs::read(&p).unwrap(), before);
        let ranges = data_ranges(&f).unwrap();
        let allocated: u64 = ranges.iter().map(|(_, l)| l).sum();
        assert!(allocated <= 64 << 10, "{ranges:?}");
    }
}
