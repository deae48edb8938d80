//! Moving bytes in large pieces with the producer and the consumer
//! overlapped: one thread fills the next piece while the caller drains the
//! previous one (disk and network, or two disks, busy at once). Buffers
//! are aligned for O_DIRECT.

use std::io;
use std::sync::mpsc::sync_channel;

/// Alignment of every buffer (and of O_DIRECT offsets and lengths).
pub const ALIGN: usize = 4096;
/// Buffers in circulation: one being filled, one queued, one being drained.
const BUFFERS: usize = 3;

/// A heap buffer whose start is aligned to [`ALIGN`].
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(capacity: usize) -> AlignedBuf {
        let raw = vec![0u8; capacity + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            raw,
            start,
            len: capacity,
        }
    }

    fn set_len(&mut self, len: usize) {
        assert!(self.start + len <= self.raw.len());
        self.len = len;
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Splits `[start, start + len)` into pieces of at most `max` bytes.
pub fn pieces(start: u64, len: u64, max: usize) -> impl Iterator<Item = (u64, usize)> {
    let max = max as u64;
    (0..len.div_ceil(max)).map(move |i| {
        let off = i * max;
        (start + off, (len - off).min(max) as usize)
    })
}

/// For each `(offset, length)` piece (each at most `max_piece` bytes),
/// `fill` produces the bytes on a helper thread and `drain` consumes them
/// here, in order. Stops at the first error of either.
pub fn pipelined(
    pieces: impl Iterator<Item = (u64, usize)> + Send,
    max_piece: usize,
    mut fill: impl FnMut(u64, &mut [u8]) -> io::Result<()> + Send,
    mut drain: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let (full_tx, full_rx) = sync_channel::<(u64, AlignedBuf)>(BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<AlignedBuf>(BUFFERS);
    for _ in 0..BUFFERS {
        empty_tx
            .send(AlignedBuf::new(max_piece))
            .expect("the channel holds every buffer");
    }
    std::thread::scope(|scope| {
        let filler = scope.spawn(move || -> io::Result<()> {
            for (off, len) in pieces {
                assert!(len <= max_piece, "a piece is larger than the buffers");
                let Ok(mut buf) = empty_rx.recv() else {
                    return Ok(());
                };
                buf.set_len(len);
                fill(off, buf.as_mut_slice())?;
                if full_tx.send((off, buf)).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        let mut drained = Ok(());
        for (off, buf) in full_rx.iter() {
            if let Err(e) = drain(off, buf.as_slice()) {
                drained = Err(e);
                break;
            }
            let _ = empty_tx.send(buf);
        }
        // Unblocks a filler waiting for a buffer or to hand one over.
        drop(empty_tx);
        drop(full_rx);
        let filled = filler.join().expect("the filler thread does not panic");
        drained.and(filled)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range() {
        let p: Vec<_> = pieces(10, 25, 10).collect();
        assert_eq!(p, [(10, 10), (20, 10), (30, 5)]);
        assert_eq!(pieces(0, 0, 10).count(), 0);
    }

    #[test]
    fn moves_every_piece_in_order_and_stops_at_errors() {
        let mut out = Vec::new();
        pipelined(
            pieces(0, 1000, 64),
            64,
            |off, buf| {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = ((off as usize + i) % 251) as u8;
                }
                Ok(())
            },
            |off, buf| {
                assert_eq!(off as usize, out.len());
                assert_eq!(buf.as_ptr() as usize % ALIGN, 0);
                out.extend_from_slice(buf);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(out.len(), 1000);
        assert!(out.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));

        let failed = pipelined(
            pieces(0, 1 << 20, 4096),
            4096,
            |off, _| {
                if off == 8192 {
                    Err(io::Error::other("read failed"))
                } else {
                    Ok(())
                }
            },
            |_, _| Ok(()),
        );
        assert!(failed.is_err());
        let failed = pipelined(
            pieces(0, 1 << 20, 4096),
            4096,
            |_, _| Ok(()),
            |_, _| Err(io::Error::other("write failed")),
        );
        assert!(failed.is_err());
    }
}
