//! Native writer of a fresh, empty qcow2 v3 image (compat 1.1), optionally
//! with a backing file.
//!
//! Only for brand-new images on the hot path of volume creation; every change
//! to an existing image goes through qemu-img. The layout is the one
//! `qemu-img create` produces: header in cluster 0, refcount table in
//! cluster 1, one refcount block in cluster 2, the L1 table from cluster 3.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::probe::QCOW2_MAGIC;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
const HEADER_LEN: usize = 112;
const REFCOUNT_ORDER: u32 = 4; // 16-bit refcounts
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// One refcount block of 16-bit entries covers this many clusters.
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
/// Bytes of guest data one L1 entry maps (an L2 table of 8-byte entries).
const BYTES_PER_L1_ENTRY: u64 = CLUSTER * (CLUSTER / 8);

/// Largest virtual size this writer handles (one refcount block must cover
/// the metadata clusters); larger images go through qemu-img.
pub const MAX_SIZE: u64 = 1 << 50;

pub fn write_empty(file: &File, size: u64, backing: Option<(&str, &str)>) -> io::Result<()> {
    let image = layout(size, backing)?;
    file.write_all_at(&image.cluster0, 0)?;
    file.write_all_at(&image.refcount_table, CLUSTER)?;
    file.write_all_at(&image.refcount_block, 2 * CLUSTER)?;
    file.set_len(image.file_len)
}

/// The same image written over a block device, whose stale bytes must not
/// be read as tables: every byte up to the image's end is written.
pub fn write_empty_on_device(
    file: &File,
    size: u64,
    backing: Option<(&str, &str)>,
) -> io::Result<()> {
    let image = layout(size, backing)?;
    let mut all = vec![0u8; image.file_len as usize];
    all[..image.cluster0.len()].copy_from_slice(&image.cluster0);
    let rt = CLUSTER as usize;
    all[rt..rt + image.refcount_table.len()].copy_from_slice(&image.refcount_table);
    let rb = 2 * CLUSTER as usize;
    all[rb..rb + image.refcount_block.len()].copy_from_slice(&image.refcount_block);
    file.write_all_at(&all, 0)
}

struct Layout {
    cluster0: Vec<u8>,
    refcount_table: Vec<u8>,
    refcount_block: Vec<u8>,
    file_len: u64,
}

fn layout(size: u64, backing: Option<(&str, &str)>) -> io::Result<Layout> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
    if size == 0 || size > MAX_SIZE || size % 512 != 0 {
        return Err(invalid(
            "qcow2 size must be a non-zero multiple of 512 up to 1 PiB",
        ));
    }
    let l1_entries = size.div_ceil(BYTES_PER_L1_ENTRY);
    let l1_bytes = l1_entries * 8;
    let l1_clusters = l1_bytes.div_ceil(CLUSTER);
    let used_clusters = 3 + l1_clusters;
    debug_assert!(used_clusters <= REFCOUNTS_PER_BLOCK);

    let mut h = vec![0u8; HEADER_LEN];
    put32(&mut h, 0, QCOW2_MAGIC);
    put32(&mut h, 4, 3);
    put32(&mut h, 20, CLUSTER_BITS);
    put64(&mut h, 24, size);
    put32(&mut h, 36, l1_entries as u32);
    put64(&mut h, 40, 3 * CLUSTER);
    put64(&mut h, 48, CLUSTER);
    put32(&mut h, 56, 1);
    put32(&mut h, 96, REFCOUNT_ORDER);
    put32(&mut h, 100, HEADER_LEN as u32);
    // byte 104: compression type zlib (0); 105..112 padding.

    if let Some((file, fmt)) = backing {
        if file.is_empty() || file.len() > super::probe::MAX_BACKING_NAME || file.contains('\0') {
            return Err(invalid("invalid backing file name"));
        }
        let fmt = fmt.as_bytes();
        h.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        h.extend_from_slice(&(fmt.len() as u32).to_be_bytes());
        h.extend_from_slice(fmt);
        h.resize(h.len().next_multiple_of(8), 0);
    }
    h.extend_from_slice(&[0u8; 8]); // end of extensions
    if let Some((file, _)) = backing {
        let offset = h.len() as u64;
        h.extend_from_slice(file.as_bytes());
        put64(&mut h, 8, offset);
        put32(&mut h, 16, file.len() as u32);
    }
    if h.len() as u64 > CLUSTER {
        return Err(invalid("qcow2 header does not fit one cluster"));
    }

    let mut refcount_table = vec![0u8; 8];
    put64(&mut refcount_table, 0, 2 * CLUSTER);
    let mut refcount_block = vec![0u8; used_clusters as usize * 2];
    for i in 0..used_clusters as usize {
        refcount_block[i * 2..i * 2 + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Ok(Layout {
        cluster0: h,
        refcount_table,
        refcount_block,
        file_len: 3 * CLUSTER + l1_bytes.next_multiple_of(512),
    })
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitives::{probe, qemu_img};

    fn make(
        dir: &std::path::Path,
        name: &str,
        size: u64,
        backing: Option<(&str, &str)>,
    ) -> std::path::PathBuf {
        let p = dir.join(name);
        let f = File::create(&p).unwrap();
        write_empty(&f, size, backing).unwrap();
        p
    }

    #[test]
    fn qemu_img_accepts_native_images() {
        let dir = tempfile::tempdir().unwrap();
        for size in [512, 1 << 20, 10 << 30, (1 << 40) + 4096, 64 << 40] {
            let p = make(dir.path(), "a.qcow2", size, None);
            let info = qemu_img::info(&p, qemu_img::InfoOptions::format("qcow2")).unwrap();
            assert_eq!(info.virtual_size, size);
            assert_eq!(info.compat(), Some("1.1"));
            assert!(
                qemu_img::check(&p, "qcow2").unwrap().is_clean(),
                "size {size}"
            );
            let h = probe::probe_file(&p).unwrap();
            assert_eq!(h.virtual_size, size);
            std::fs::remove_file(&p).unwrap();
        }
    }

    #[test]
    fn backing_file_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path(), "base", 1 << 30, None);
        let top = make(dir.path(), "top", 1 << 30, Some(("base", "qcow2")));
        let info = qemu_img::info(&top, qemu_img::InfoOptions::format("qcow2")).unwrap();
        assert_eq!(info.backing_filename.as_deref(), Some("base"));
        assert_eq!(info.backing_format.as_deref(), Some("qcow2"));
        assert!(qemu_img::check(&top, "qcow2").unwrap().is_clean());
        let chain = qemu_img::info_chain(&top, qemu_img::InfoOptions::format("qcow2")).unwrap();
        assert_eq!(chain.len(), 2);
    }

    #[test]
    fn refuses_bad_sizes() {
        assert!(layout(0, None).is_err());
        assert!(layout(1000, None).is_err());
        assert!(layout(MAX_SIZE + 512, None).is_err());
    }
}
