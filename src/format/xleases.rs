//! The external-leases (`xleases`) volume index, domain version 4 and later.
//!
//! Slot 0 (one alignment unit) is the unused lockspace area; the index lives
//! in slot 1: a 512-byte metadata header (magic, version, lockspace, mtime,
//! updating flag) followed by 64-byte records mapping a lease name to an
//! offset. A freshly formatted index has every record empty.

pub const INDEX_MAGIC: i32 = 0x1215_2016;
pub const INDEX_VERSION: u32 = 1;
pub const INDEX_SIZE: usize = 62 * 4096;
pub const HEADER_SIZE: usize = 512;
pub const RECORD_SIZE: usize = 64;
pub const MAX_RECORDS: usize = (INDEX_SIZE - HEADER_SIZE) / RECORD_SIZE;

/// Returns the byte offset of the index in the volume and its formatted bytes.
pub fn format_index(lockspace: &str, mtime: u64, alignment: u64) -> (u64, Vec<u8>) {
    let mut buf = vec![0u8; INDEX_SIZE];
    let header = &mut buf[..HEADER_SIZE];
    header[0..4].copy_from_slice(&INDEX_MAGIC.to_be_bytes());
    // byte 4: padding
    header[5..9].copy_from_slice(format!("{INDEX_VERSION:04}").as_bytes());
    // byte 9: padding
    let ls = lockspace.as_bytes();
    let n = ls.len().min(48);
    header[10..10 + n].copy_from_slice(&ls[..n]);
    // byte 58: padding
    let mtime = format!("{:010}", mtime % 10_000_000_000);
    header[59..69].copy_from_slice(mtime.as_bytes());
    // byte 69: padding; byte 70: updating flag
    header[70] = b'-';
    // bytes 71..511: padding; the header ends with a newline
    header[HEADER_SIZE - 1] = b'\n';
    for rec in buf[HEADER_SIZE..].chunks_exact_mut(RECORD_SIZE) {
        // name (48 NULs) \0 offset (11 digits) \0 updating reserved \n
        rec[49..60].copy_from_slice(b"00000000000");
        rec[61] = b'-';
        rec[62] = b'-';
        rec[63] = b'\n';
    }
    (alignment, buf)
}

/// A lease the index names: its id, its offset in the volume and whether
/// an update of it was interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRecord {
    pub lease_id: String,
    pub offset: u64,
    pub updating: bool,
}

/// The leases an index (as [`format_index`] lays it out) names.
pub fn used_records(index: &[u8]) -> Result<Vec<IndexRecord>, String> {
    if index.len() < INDEX_SIZE {
        return Err(format!(
            "the index is {} bytes, not {INDEX_SIZE}",
            index.len()
        ));
    }
    if index[0..4] != INDEX_MAGIC.to_be_bytes() {
        return Err("the index has no xleases magic".into());
    }
    index[HEADER_SIZE..INDEX_SIZE]
        .chunks_exact(RECORD_SIZE)
        .filter(|rec| rec[0] != 0)
        .map(|rec| {
            let name = &rec[..48];
            let end = name.iter().position(|&b| b == 0).unwrap_or(48);
            let lease_id = std::str::from_utf8(&name[..end])
                .map_err(|_| "a lease id is not text".to_string())?
                .to_string();
            let offset = std::str::from_utf8(&rec[49..60])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("lease {lease_id} has a bad offset"))?;
            Ok(IndexRecord {
                lease_id,
                offset,
                updating: rec[61] == b'u',
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let (offset, buf) = format_index(
            "b9c4821e-e9c0-4dd4-8393-c59b82c9cd29",
            1_700_000_000,
            1 << 20,
        );
        assert_eq!(offset, 1 << 20);
        assert_eq!(buf.len(), INDEX_SIZE);
        assert_eq!(&buf[0..4], &[0x12, 0x15, 0x20, 0x16]);
        assert_eq!(&buf[5..9], b"0001");
        assert_eq!(&buf[10..46], b"b9c4821e-e9c0-4dd4-8393-c59b82c9cd29");
        assert_eq!(&buf[59..69], b"1700000000");
        assert_eq!(buf[70], b'-');
        assert_eq!(buf[511], b'\n');
        assert_eq!(MAX_RECORDS, 3960);
        let rec = &buf[512..576];
        assert!(rec[..49].iter().all(|&b| b == 0));
        assert_eq!(&rec[49..], b"00000000000\0--\n");
        assert_eq!(used_records(&buf).unwrap(), []);
    }

    #[test]
    fn records_in_use_are_read() {
        let (_, mut buf) = format_index("ls", 1, 1 << 20);
        let rec = &mut buf[HEADER_SIZE + RECORD_SIZE..HEADER_SIZE + 2 * RECORD_SIZE];
        rec[..4].copy_from_slice(b"vm-1");
        rec[49..60].copy_from_slice(b"00003145728");
        rec[61] = b'u';
        assert_eq!(
            used_records(&buf).unwrap(),
            [IndexRecord {
                lease_id: "vm-1".into(),
                offset: 3 << 20,
                updating: true
            }]
        );
        buf[0] = 0;
        assert!(used_records(&buf).is_err());
    }
}
