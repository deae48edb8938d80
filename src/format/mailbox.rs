//! The SPM mailbox's on-disk format, as VDSM writes it (`vdsm-block.md`
//! 3.3): in the master domain's `inbox` (hosts to the SPM) and `outbox`
//! (the SPM to hosts), host id `h` owns the 4 KiB block at `h × 4096`.
//! A block holds 63 messages of 64 bytes, then a reserved slot whose last
//! 4 bytes are the checksum of everything before it. Block 0 of `inbox` is
//! the event block a host rewrites to wake the SPM.

use crate::types::Uuid;

pub const BLOCK_SIZE: usize = 4096;
pub const MESSAGE_SIZE: usize = 64;
/// Message slots per host block (the 64th is reserved for the checksum).
pub const SLOTS: usize = 63;
const CHECKSUM_AT: usize = BLOCK_SIZE - 4;
const VERSION: u8 = b'1';
const EXTEND: &[u8; 4] = b"xtnd";
/// The largest size a message can ask for, in MiB.
pub const MAX_SIZE_MIB: u64 = 0xFFFF_FFFF;
/// What a host writes over a slot whose reply it has taken.
const CLEAN: [u8; MESSAGE_SIZE] = [1; MESSAGE_SIZE];
const EVENT_MAGIC: &[u8; 4] = b"\0evt";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MailboxError {
    #[error("mailbox block checksum is {found:#x}, its bytes sum to {computed:#x}")]
    Checksum { found: u32, computed: u32 },
    #[error("mailbox message: {0}")]
    Message(String),
}

/// "Extend volume `vol` of domain `sd` to `size_mib` MiB": a request from a
/// host, or the SPM's reply (the same bytes; size 0 when it failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extend {
    pub sd: Uuid,
    pub vol: Uuid,
    pub size_mib: u64,
}

/// What a 64-byte slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Empty,
    /// A host took the reply to what this slot held.
    Clean,
    Extend(Extend),
}

/// A UUID as the mailbox stores it: its 128-bit value, little-endian.
fn uuid_bytes(id: Uuid) -> [u8; 16] {
    u128::from_be_bytes(*id.as_bytes()).to_le_bytes()
}

fn uuid_from(bytes: &[u8]) -> Uuid {
    let mut le = [0u8; 16];
    le.copy_from_slice(bytes);
    Uuid::from_bytes(u128::from_le_bytes(le).to_be_bytes())
}

impl Extend {
    pub fn encode(&self) -> Result<[u8; MESSAGE_SIZE], MailboxError> {
        if self.size_mib > MAX_SIZE_MIB {
            return Err(MailboxError::Message(format!(
                "{} MiB is more than a message can ask for",
                self.size_mib
            )));
        }
        let mut m = [b'0'; MESSAGE_SIZE];
        m[0] = VERSION;
        m[1..5].copy_from_slice(EXTEND);
        m[5..21].copy_from_slice(&uuid_bytes(self.sd));
        m[21..37].copy_from_slice(&uuid_bytes(self.vol));
        m[37..53].copy_from_slice(format!("{:016x}", self.size_mib).as_bytes());
        Ok(m)
    }
}

impl Slot {
    /// Reads one slot; storage content, so every field is checked.
    pub fn decode(m: &[u8]) -> Result<Slot, MailboxError> {
        let bad = |why: &str| Err(MailboxError::Message(why.to_string()));
        if m.len() != MESSAGE_SIZE {
            return bad("a message is 64 bytes");
        }
        if m[0] == 0 {
            return Ok(Slot::Empty);
        }
        if m == CLEAN {
            return Ok(Slot::Clean);
        }
        if m[0] != VERSION {
            return bad("unknown message version");
        }
        if &m[1..5] != EXTEND {
            return bad("unknown message type");
        }
        let hex = std::str::from_utf8(&m[37..53]).ok();
        let size_mib = match hex.and_then(|h| {
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                .then(|| u64::from_str_radix(h, 16).ok())
                .flatten()
        }) {
            Some(n) if n <= MAX_SIZE_MIB => n,
            _ => return bad("the size is not 16 lowercase hex digits within range"),
        };
        Ok(Slot::Extend(Extend {
            sd: uuid_from(&m[5..21]),
            vol: uuid_from(&m[21..37]),
            size_mib,
        }))
    }

    fn encode(&self) -> Result<[u8; MESSAGE_SIZE], MailboxError> {
        match self {
            Slot::Empty => Ok([0; MESSAGE_SIZE]),
            Slot::Clean => Ok(CLEAN),
            Slot::Extend(e) => e.encode(),
        }
    }
}

/// The checksum of a host block: the sum of its first 4092 bytes.
pub fn checksum(block: &[u8]) -> u32 {
    block[..CHECKSUM_AT]
        .iter()
        .fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b)))
}

/// A host's 4 KiB block with its checksum.
pub fn encode_block(slots: &[Slot; SLOTS]) -> Result<Vec<u8>, MailboxError> {
    let mut block = vec![0u8; BLOCK_SIZE];
    for (i, slot) in slots.iter().enumerate() {
        block[i * MESSAGE_SIZE..(i + 1) * MESSAGE_SIZE].copy_from_slice(&slot.encode()?);
    }
    let sum = checksum(&block);
    block[CHECKSUM_AT..].copy_from_slice(&sum.to_le_bytes());
    Ok(block)
}

/// Reads a host's `inbox` block: refused whole when its checksum is wrong.
/// A slot that does not decode is `Err` on its own, the others stand.
pub fn decode_block(block: &[u8]) -> Result<Vec<Result<Slot, MailboxError>>, MailboxError> {
    if block.len() != BLOCK_SIZE {
        return Err(MailboxError::Message("a block is 4096 bytes".into()));
    }
    let mut found = [0u8; 4];
    found.copy_from_slice(&block[CHECKSUM_AT..]);
    let (found, computed) = (u32::from_le_bytes(found), checksum(block));
    if found != computed {
        return Err(MailboxError::Checksum { found, computed });
    }
    Ok(block[..SLOTS * MESSAGE_SIZE]
        .chunks_exact(MESSAGE_SIZE)
        .map(Slot::decode)
        .collect())
}

/// The event block a host writes at `inbox` offset 0 to wake the SPM: a
/// new id each time. Its leading NUL reads as an empty slot.
pub fn event_block(id: Uuid) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_SIZE];
    block[..4].copy_from_slice(EVENT_MAGIC);
    block[4..20].copy_from_slice(id.as_bytes());
    block
}

/// The id of an event block, if it is one.
pub fn event_id(block: &[u8]) -> Option<Uuid> {
    (block.len() >= 20 && &block[..4] == EVENT_MAGIC).then(|| {
        let mut id = [0u8; 16];
        id.copy_from_slice(&block[4..20]);
        Uuid::from_bytes(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SD: &str = "5c4bd2a1-8b3e-4f6a-9d21-0e7f3c2b1a90";
    const VOL: &str = "e3f1a2b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b";

    /// The reference's table, byte by byte, written out by hand.
    fn fixture() -> Vec<u8> {
        let mut m = vec![b'1'];
        m.extend(b"xtnd");
        // The UUIDs' 128-bit values, little-endian: their bytes reversed.
        let rev = |s: &str| {
            let mut b = hex(&s.replace('-', ""));
            b.reverse();
            b
        };
        m.extend(rev(SD));
        m.extend(rev(VOL));
        m.extend(b"0000000000000a00"); // 2560 MiB
        m.extend([b'0'; 11]);
        m
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn request() -> Extend {
        Extend {
            sd: SD.parse().unwrap(),
            vol: VOL.parse().unwrap(),
            size_mib: 2560,
        }
    }

    #[test]
    fn an_extend_message_is_laid_out_as_the_reference_says() {
        let m = request().encode().unwrap();
        assert_eq!(m.to_vec(), fixture());
        assert_eq!(Slot::decode(&fixture()), Ok(Slot::Extend(request())));
    }

    #[test]
    fn a_block_carries_its_checksum_and_a_wrong_one_refuses_it() {
        let mut slots = [Slot::Empty; SLOTS];
        slots[0] = Slot::Extend(request());
        slots[5] = Slot::Clean;
        let block = encode_block(&slots).unwrap();
        let sum: u32 = block[..4092].iter().map(|&b| u32::from(b)).sum();
        assert_eq!(block[4092..], sum.to_le_bytes());
        let slots_back = decode_block(&block).unwrap();
        assert_eq!(slots_back[0], Ok(Slot::Extend(request())));
        assert_eq!(slots_back[5], Ok(Slot::Clean));
        assert_eq!(slots_back[1], Ok(Slot::Empty));
        let mut bad = block.clone();
        bad[70] ^= 1;
        assert!(matches!(
            decode_block(&bad),
            Err(MailboxError::Checksum { .. })
        ));
    }

    #[test]
    fn storage_content_that_is_not_a_message_is_refused() {
        let good = fixture();
        for (at, byte) in [(0, b'2'), (1, b'X'), (40, b'G'), (40, b'A')] {
            let mut m = good.clone();
            m[at] = byte;
            assert!(Slot::decode(&m).is_err(), "{at} {byte}");
        }
        assert!(Slot::decode(&good[..63]).is_err());
        let too_big = Extend {
            size_mib: MAX_SIZE_MIB + 1,
            ..request()
        };
        assert!(too_big.encode().is_err());
    }

    #[test]
    fn event_blocks_read_as_empty_slots_and_carry_their_id() {
        let id: Uuid = VOL.parse().unwrap();
        let block = event_block(id);
        assert_eq!(event_id(&block), Some(id));
        assert_eq!(Slot::decode(&block[..64]), Ok(Slot::Empty));
        assert_eq!(event_id(&[0u8; 4096]), None);
    }
}
