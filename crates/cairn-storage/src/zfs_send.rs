//! What changed in a zvol between two snapshots, from `zfs send -i
//! <base> <snap>` (the stream LINSTOR ships incrementals with): its DMU
//! replay records are read as they come and only the byte ranges of the
//! zvol's data object that WRITE and FREE records touch are kept; the
//! payloads (the changed data itself) are skipped, nothing is stored.
//! Freed ranges stay apart from written ones: ZFS sends a FREE for the
//! whole object past its last block and for the holes of every indirect
//! block it sends, whether or not they held data before (seen in the
//! captured stream), so a reader checks them against what it knows of
//! the base.
//!
//! The record layout is OpenZFS's `dmu_replay_record_t`
//! (include/sys/zfs_ioctl.h, OpenZFS 2.1): 312 bytes, `drr_type` and
//! `drr_payloadlen` (u32 each), then a union of the per-type structs, in
//! the sending host's byte order (the BEGIN record's magic tells which).
//! A record's payload follows it; its length is in `drr_payloadlen` for
//! BEGIN only and follows from the type's fields for the others (as
//! `dmu_send.c` writes them). Why no crate: none parses send streams in
//! Rust; `zstream dump` prints them for people, not in a stable form.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::provider::Delta;

/// `sizeof (dmu_replay_record_t)`.
pub const RECORD_LEN: usize = 312;
/// `DMU_BACKUP_MAGIC`.
const MAGIC: u64 = 0x2_F5BA_CBAC;
/// `ZVOL_OBJ`: the object holding a zvol's data.
const ZVOL_OBJ: u64 = 1;
/// `DMU_SUBSTREAM`: one dataset's stream (a compound one, `-R`/`-I`, holds
/// several).
const SUBSTREAM: u64 = 1;
/// Larger than any payload ZFS writes (blocks are at most 16 MiB).
const MAX_PAYLOAD: u64 = 64 << 20;

// drr_type values.
const BEGIN: u32 = 0;
const OBJECT: u32 = 1;
const FREEOBJECTS: u32 = 2;
const WRITE: u32 = 3;
const FREE: u32 = 4;
const END: u32 = 5;
const WRITE_BYREF: u32 = 6;
const SPILL: u32 = 7;
const WRITE_EMBEDDED: u32 = 8;
const OBJECT_RANGE: u32 = 9;

/// Why a stream could not be read for its changes.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading the send stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("the send stream ended before its END record")]
    Truncated,
    #[error("unexpected send stream: {0}")]
    Unexpected(String),
}

/// One record, with the byte order of its stream.
struct Record<'a> {
    raw: &'a [u8; RECORD_LEN],
    big_endian: bool,
}

impl Record<'_> {
    fn u32_at(&self, off: usize) -> u32 {
        let b = [self.raw[off], self.raw[off + 1], self.raw[off + 2], self.raw[off + 3]];
        if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
    }

    fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.raw[off..off + 8]);
        if self.big_endian { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) }
    }

    fn kind(&self) -> u32 {
        self.u32_at(0)
    }
}

/// Changed byte ranges `(offset, length)`, merged where they touch.
#[derive(Debug, Default)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn add(&mut self, offset: u64, length: u64) {
        // A FREE to the end of the object has length u64::MAX.
        let length = length.min(u64::MAX - offset);
        if length == 0 {
            return;
        }
        match self.0.last_mut() {
            Some((o, l)) if offset >= *o && offset <= *o + *l => *l = (*l).max(offset - *o + length),
            _ => self.0.push((offset, length)),
        }
    }

    /// Sorted and merged (records come in offset order, but WRITE and
    /// FREE records of one object may interleave).
    fn finish(mut self) -> Vec<(u64, u64)> {
        self.0.sort_unstable();
        let mut out = Ranges::default();
        for (o, l) in self.0 {
            out.add(o, l);
        }
        out.0
    }
}

async fn read_record<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8; RECORD_LEN]) -> Result<(), StreamError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(StreamError::Truncated),
        Err(e) => Err(e.into()),
    }
}

async fn skip<R: AsyncRead + Unpin>(r: &mut R, n: u64) -> Result<(), StreamError> {
    if n > MAX_PAYLOAD {
        return Err(StreamError::Unexpected(format!("a payload of {n} bytes")));
    }
    let copied = tokio::io::copy(&mut r.take(n), &mut tokio::io::sink()).await?;
    if copied < n {
        return Err(StreamError::Truncated);
    }
    Ok(())
}

fn roundup8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// Reads one dataset's send stream (BEGIN … END) up to its END record:
/// the byte ranges of the zvol's data that its WRITE, WRITE_BYREF and
/// WRITE_EMBEDDED records write and those its FREE records free, each
/// sorted and merged. Anything it
/// does not know (a compound stream, a record type of a later OpenZFS, a
/// record freeing the zvol's object) is an error, so that the caller reads
/// the whole volume instead of missing a change.
pub async fn changed_ranges<R: AsyncRead + Unpin>(r: &mut R) -> Result<Delta, StreamError> {
    let mut buf = [0u8; RECORD_LEN];
    read_record(r, &mut buf).await?;
    // BEGIN is type 0 in either byte order; the magic tells which.
    let magic = Record { raw: &buf, big_endian: false }.u64_at(8);
    let big_endian = match (buf[0..4] == [0; 4], magic) {
        (true, MAGIC) => false,
        (true, m) if m.swap_bytes() == MAGIC => true,
        _ => return Err(StreamError::Unexpected("no BEGIN record with ZFS's magic".into())),
    };
    let begin = Record { raw: &buf, big_endian };
    let header_type = begin.u64_at(16) & 0x3;
    if header_type != SUBSTREAM {
        return Err(StreamError::Unexpected(format!("header type {header_type}, not a single dataset's stream")));
    }
    let payload = u64::from(begin.u32_at(4));
    skip(r, payload).await?;
    let (mut written, mut freed) = (Ranges::default(), Ranges::default());
    loop {
        read_record(r, &mut buf).await?;
        let rec = Record { raw: &buf, big_endian };
        let payload = match rec.kind() {
            END => return Ok(Delta { written: written.finish(), freed: freed.finish() }),
            OBJECT => {
                // drr_bonuslen at 28, drr_raw_bonuslen at 36.
                let raw = u64::from(rec.u32_at(36));
                if raw != 0 { raw } else { roundup8(u64::from(rec.u32_at(28))) }
            }
            FREEOBJECTS => {
                // drr_firstobj, drr_numobjs.
                let (first, n) = (rec.u64_at(8), rec.u64_at(16));
                if first <= ZVOL_OBJ && ZVOL_OBJ - first < n {
                    return Err(StreamError::Unexpected("a FREEOBJECTS record frees the zvol's data object".into()));
                }
                0
            }
            WRITE => {
                // drr_object, drr_offset at 24, drr_logical_size at 32,
                // drr_compressiontype at 50, drr_compressed_size at 96.
                if rec.u64_at(8) == ZVOL_OBJ {
                    written.add(rec.u64_at(24), rec.u64_at(32));
                }
                if rec.raw[50] != 0 { rec.u64_at(96) } else { rec.u64_at(32) }
            }
            FREE | WRITE_BYREF => {
                // drr_object, drr_offset, drr_length.
                if rec.u64_at(8) == ZVOL_OBJ {
                    let into = if rec.kind() == FREE { &mut freed } else { &mut written };
                    into.add(rec.u64_at(16), rec.u64_at(24));
                }
                0
            }
            WRITE_EMBEDDED => {
                // drr_object, drr_offset, drr_length; drr_psize at 52.
                if rec.u64_at(8) == ZVOL_OBJ {
                    written.add(rec.u64_at(16), rec.u64_at(24));
                }
                roundup8(u64::from(rec.u32_at(52)))
            }
            SPILL => {
                // drr_length at 16, drr_compressed_size at 40.
                let compressed = rec.u64_at(40);
                if compressed != 0 { compressed } else { rec.u64_at(16) }
            }
            OBJECT_RANGE => 0,
            BEGIN => return Err(StreamError::Unexpected("a BEGIN record inside the stream".into())),
            other => return Err(StreamError::Unexpected(format!("record type {other}"))),
        };
        skip(r, payload).await?;
    }
}

impl crate::zfs::Zfs {
    /// The byte ranges where snapshot `snap` of volume `nr` of `rsc`
    /// differs from snapshot `base` (written, and freed), from `zfs send -i
    /// <base> <snap>` read as it comes ([`changed_ranges`]). None (the caller reads every
    /// chunk) when the stream cannot be read or `zfs send` fails; the
    /// log says why.
    pub async fn snapshot_changes(
        &self,
        pool: &crate::zfs::ZfsPool,
        rsc: &str,
        nr: u32,
        base: &str,
        snap: &str,
    ) -> Result<Option<Delta>, crate::StorageError> {
        let fallback = |why: String| -> Result<Option<Delta>, crate::StorageError> {
            tracing::warn!(pool = %pool.name, resource = rsc, volume = nr, "cannot tell what changed since snapshot '{base}' from `zfs send -i` ({why}); reading the whole volume");
            Ok(None)
        };
        let mut send = match self.send_stream(pool, rsc, nr, snap, Some(base)).await {
            Ok(s) => s,
            Err(e) => return fallback(e.to_string()),
        };
        let Some(mut out) = send.stdout.take() else { return fallback("no stdout".into()) };
        let ranges = match changed_ranges(&mut out).await {
            Ok(r) => r,
            // Dropping `send` kills `zfs send`.
            Err(e) => return fallback(e.to_string()),
        };
        // Nothing follows END in a one-dataset stream; what does is drained
        // so that `zfs send` ends, and it must have succeeded.
        if let Err(e) = tokio::io::copy(&mut out, &mut tokio::io::sink()).await {
            return fallback(e.to_string());
        }
        drop(out);
        match send.finish().await {
            Ok(_) => Ok(Some(ranges)),
            Err(e) => fallback(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime")
    }

    /// A record of `kind` with u64 fields at the given offsets (little
    /// endian) and its payload.
    fn rec(kind: u32, fields: &[(usize, u64)], payload: usize) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_LEN];
        r[0..4].copy_from_slice(&kind.to_le_bytes());
        for (off, v) in fields {
            r[*off..*off + 8].copy_from_slice(&v.to_le_bytes());
        }
        r.extend(std::iter::repeat_n(0xAB, payload));
        r
    }

    fn begin() -> Vec<u8> {
        rec(BEGIN, &[(8, MAGIC), (16, SUBSTREAM | (1 << 2))], 0)
    }

    fn parse(bytes: &[u8]) -> Result<Delta, StreamError> {
        rt().block_on(changed_ranges(&mut &bytes[..]))
    }

    #[test]
    fn writes_and_frees_of_the_zvol_object_are_collected_and_payloads_skipped() {
        let mut s = begin();
        // The zvol's dnode (bonus 4 bytes: a payload of 8).
        let mut obj = rec(OBJECT, &[(8, 1)], 8);
        obj[28..32].copy_from_slice(&4u32.to_le_bytes());
        s.extend(obj);
        s.extend(rec(WRITE, &[(8, 1), (24, 8192), (32, 8192)], 8192));
        s.extend(rec(WRITE, &[(8, 1), (24, 16384), (32, 8192)], 8192));
        // Object 2 (the zvol's properties) is not data.
        s.extend(rec(WRITE, &[(8, 2), (24, 0), (32, 512)], 512));
        s.extend(rec(FREE, &[(8, 1), (16, 1 << 20), (24, 65536)], 0));
        s.extend(rec(FREE, &[(8, 1), (16, 64 << 20), (24, u64::MAX)], 0));
        s.extend(rec(FREEOBJECTS, &[(8, 3), (16, 29)], 0));
        s.extend(rec(END, &[], 0));
        let got = parse(&s).unwrap();
        assert_eq!(got.written, vec![(8192, 16384)]);
        assert_eq!(got.freed, vec![(1 << 20, 65536), (64 << 20, u64::MAX - (64 << 20))]);
    }

    /// The stream of testdata/zfs/send_incremental.* (README there):
    /// captured from OpenZFS 2.1.11, `zstream dump -v` beside it.
    #[test]
    fn a_stream_captured_from_openzfs() {
        let path = format!("{}/testdata/zfs/send_incremental.zstream", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let got = parse(&bytes).unwrap();
        // Written: 16 KiB at 128 KiB, 8 KiB at 3 MiB.
        assert_eq!(got.written, vec![(128 << 10, 16 << 10), (3 << 20, 8 << 10)]);
        // Freed: the 64 KiB discarded at 256 KiB, but also what was never
        // written (512 KiB to 3 MiB: holes of the indirect block the write
        // at 3 MiB rewrote) and everything past the last block.
        let tail = (3 << 20) + (8 << 10);
        assert_eq!(got.freed, vec![(256 << 10, 64 << 10), (512 << 10, (3 << 20) - (512 << 10)), (tail, u64::MAX - tail)]);
        // Cut anywhere before its END, it is refused.
        for cut in [100, RECORD_LEN, RECORD_LEN * 3 + 4096, bytes.len() - RECORD_LEN] {
            assert!(matches!(parse(&bytes[..cut]), Err(StreamError::Truncated)), "{cut}");
        }
    }

    #[test]
    fn compressed_payloads_count_their_compressed_size() {
        let mut s = begin();
        let mut w = rec(WRITE, &[(8, 1), (24, 0), (32, 131072), (96, 4096)], 4096);
        w[50] = 15; // ZIO_COMPRESS_LZ4... any non-zero type
        s.extend(w);
        s.extend(rec(END, &[], 0));
        assert_eq!(parse(&s).unwrap(), Delta { written: vec![(0, 131072)], freed: vec![] });
    }

    #[test]
    fn anything_unknown_is_refused() {
        // Not a stream.
        assert!(matches!(parse(&[0u8; 400]), Err(StreamError::Unexpected(_))));
        // Cut short.
        let mut s = begin();
        s.extend(rec(WRITE, &[(8, 1), (24, 0), (32, 8192)], 100));
        assert!(matches!(parse(&s), Err(StreamError::Truncated)));
        // A compound stream (`zfs send -R`).
        let compound = rec(BEGIN, &[(8, MAGIC), (16, 2)], 0);
        assert!(matches!(parse(&compound), Err(StreamError::Unexpected(_))));
        // A record type of a later OpenZFS.
        let mut s = begin();
        s.extend(rec(42, &[], 0));
        assert!(matches!(parse(&s), Err(StreamError::Unexpected(_))));
        // The zvol's data object freed.
        let mut s = begin();
        s.extend(rec(FREEOBJECTS, &[(8, 0), (16, 2)], 0));
        s.extend(rec(END, &[], 0));
        assert!(matches!(parse(&s), Err(StreamError::Unexpected(_))));
    }
}
