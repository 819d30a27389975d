//! gzip for streamed lists, compressed on the threads that write them.
//!
//! The HTTP layer compresses every other reply on the async workers, but
//! a list of every resource is tens of MiB: compressing it there took a
//! worker for tens of milliseconds at normal priority, in the way of the
//! requests that change the cluster. Lists are compressed by their
//! `SCHED_IDLE` writers instead, a piece at a time, and a list that
//! several threads write is compressed by all of them at once: each piece
//! is raw deflate that starts with an empty window and ends on a byte
//! boundary (a sync flush, never the last block), so pieces from
//! different compressors join into one deflate stream, as pigz joins its
//! blocks. The reply wraps them in one gzip member (RFC 1952): a header,
//! the pieces, an empty last block, then the CRC-32 and length of the
//! whole, combined from each piece's own.

use axum::http::HeaderMap;
use axum::http::header::ACCEPT_ENCODING;
use flate2::{Compress, Compression, FlushCompress, Status};

/// Whether a client takes gzip: a `gzip` coding in `Accept-Encoding` whose
/// `q` is not zero. Anything else is answered plain here (the HTTP layer
/// then decides, as it does for every reply).
pub fn accepted(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let q = parts.find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))).map(str::trim);
        name.eq_ignore_ascii_case("gzip") && q.is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0))
    })
}

/// A gzip member's header: deflate, no name or time, unknown system.
pub const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The CRC-32 and length of a run of uncompressed bytes.
#[derive(Clone, Default)]
pub struct Sum {
    crc: crc32fast::Hasher,
    len: u64,
}

impl Sum {
    pub fn of(raw: &[u8]) -> Sum {
        let mut s = Sum::default();
        s.crc.update(raw);
        s.len = raw.len() as u64;
        s
    }

    /// Appends the bytes that `next` sums (they follow this run).
    pub fn then(&mut self, next: &Sum) {
        self.crc.combine(&next.crc);
        self.len += next.len;
    }
}

/// Compresses the pieces of one writer.
pub struct Deflater {
    c: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater { c: Compress::new(Compression::fast(), false) }
    }
}

impl Deflater {
    /// Appends `raw` to `out` as deflate blocks that end on a byte
    /// boundary. With `alone` the piece refers to nothing before it and can
    /// be joined after any other; without, it goes on from this writer's
    /// previous piece (which must come right before it in the stream).
    pub fn piece(&mut self, raw: &[u8], alone: bool, out: &mut Vec<u8>) -> std::io::Result<()> {
        if alone {
            self.c.reset();
        }
        out.reserve(raw.len() / 4 + 64);
        let mut rest = raw;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.c.total_in();
            let status = self.c.compress_vec(rest, out, FlushCompress::Sync).map_err(std::io::Error::other)?;
            let took = usize::try_from(self.c.total_in() - before).map_err(std::io::Error::other)?;
            rest = &rest[took..];
            // The flush is complete once the compressor leaves room unused.
            if rest.is_empty() && out.len() < out.capacity() || status == Status::StreamEnd {
                return Ok(());
            }
        }
    }
}

/// One gzip member that a single writer makes, a run of bytes at a time.
#[derive(Default)]
pub struct Member {
    d: Deflater,
    sum: Sum,
    begun: bool,
}

impl Member {
    /// The member's next bytes, for `raw`: the header first, then `raw`
    /// compressed, and with `last` the member's end.
    pub fn next(&mut self, raw: &[u8], last: bool) -> std::io::Result<Vec<u8>> {
        let mut out = if std::mem::replace(&mut self.begun, true) { Vec::new() } else { HEADER.to_vec() };
        self.d.piece(raw, false, &mut out)?;
        self.sum.then(&Sum::of(raw));
        if last {
            out.extend(trailer(&self.sum));
        }
        Ok(out)
    }
}

/// `raw` as a stored block that is not the last. For the few bytes that
/// frame a list: a stored block holds at most 65535 bytes.
pub fn stored(raw: &'static [u8]) -> Vec<u8> {
    debug_assert!(raw.len() <= usize::from(u16::MAX));
    let len = u16::try_from(raw.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(raw.len() + 5);
    out.push(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&raw[..usize::from(len)]);
    out
}

/// The end of the member: an empty last block, then the CRC-32 and length
/// (modulo 2^32) of everything the member holds.
pub fn trailer(sum: &Sum) -> Vec<u8> {
    let mut out = vec![0x03, 0x00];
    out.extend_from_slice(&sum.crc.clone().finalize().to_le_bytes());
    out.extend_from_slice(&(sum.len as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(member: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut d = flate2::read::GzDecoder::new(member);
        d.read_to_end(&mut out).expect("a valid gzip member");
        // Nothing after the member.
        assert!(d.into_inner().is_empty());
        out
    }

    #[test]
    fn pieces_from_several_compressors_join_into_one_member() {
        let raw: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{{\"n\":{i},\"name\":\"rsc-{}\"}},", i % 977).into_bytes()).collect();
        let chunks: Vec<&[u8]> = raw.chunks(70_001).collect();
        let mut writers = [Deflater::default(), Deflater::default(), Deflater::default()];
        let mut member = HEADER.to_vec();
        member.extend(stored(b"["));
        let mut sum = Sum::of(b"[");
        for (i, c) in chunks.iter().enumerate() {
            writers[i % 3].piece(c, true, &mut member).expect("deflate");
            sum.then(&Sum::of(c));
        }
        member.extend(stored(b"]"));
        sum.then(&Sum::of(b"]"));
        member.extend(trailer(&sum));
        let mut expected = b"[".to_vec();
        expected.extend(&raw);
        expected.push(b']');
        assert_eq!(inflate(&member), expected);
        assert!(member.len() < raw.len() / 4, "{} of {}", member.len(), raw.len());
    }

    #[test]
    fn pieces_of_one_compressor_go_on_from_each_other() {
        let raw: Vec<u8> = (0..50_000u32).flat_map(|i| format!("[{i},\"x\"]").into_bytes()).collect();
        let mut w = Member::default();
        let mut member = Vec::new();
        for c in raw.chunks(4096) {
            member.extend(w.next(c, false).expect("deflate"));
        }
        // An empty last piece, and a member with nothing in it, are fine.
        member.extend(w.next(b"", true).expect("deflate"));
        assert_eq!(inflate(&member), raw);
        assert_eq!(inflate(&Member::default().next(b"", true).expect("deflate")), b"");
    }

    #[test]
    fn gzip_is_taken_when_the_client_names_it_with_a_q_above_zero() {
        let accepts = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT_ENCODING, v.parse().expect("header"));
            accepted(&h)
        };
        assert!(accepts("gzip, deflate"));
        assert!(accepts("identity, GZIP;q=0.5"));
        assert!(accepts("br;q=1.0, gzip ; q=0.1"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip;q=0.000"));
        assert!(!accepts("identity"));
        assert!(!accepts("x-gzip2, deflate"));
        assert!(!accepted(&HeaderMap::new()));
    }
}
