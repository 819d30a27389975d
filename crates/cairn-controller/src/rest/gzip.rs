//! gzip for streamed lists, compressed on the threads that write them.
//!
//! The HTTP layer compresses every other reply on the async workers, but
//! a list of every resource is tens of MiB (27 MiB into 2.6 MiB at 30,000
//! resources): compressing it there kept a worker busy at normal
//! priority, in the way of the requests that change the cluster. Lists are compressed by their
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
use flate2::{Compress, Compression, FlushCompress};

/// Whether a client takes gzip: a `gzip` (or `x-gzip`) coding in
/// `Accept-Encoding` whose weight is above 0, each weight read as
/// tower-http reads it (a `*` is not taken, by either). Unlike the layer,
/// a list goes gzip even when `identity` has a higher weight: the client
/// accepts both. Anything else is answered plain here, and the HTTP layer
/// then decides, as it does for every reply.
pub fn accepted(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|coding| {
        let mut parts = coding.splitn(2, ';');
        let name = parts.next().unwrap_or_default().trim();
        (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip"))
            && parts.next().is_none_or(|q| weight(q.trim()).is_some_and(|w| w > 0))
    })
}

/// A coding's weight (`q=`) in thousandths, as RFC 9110 writes it and
/// tower-http reads it: 0 or 1, at most three decimals, at most 1. Anything
/// else is no weight (the coding is ignored).
fn weight(s: &str) -> Option<u16> {
    let v = s.strip_prefix("q=").or_else(|| s.strip_prefix("Q="))?;
    let (whole, decimals) = v.split_once('.').unwrap_or((v, ""));
    let whole = match whole {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    if decimals.len() > 3 || !decimals.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let w = whole + decimals.bytes().zip([100u16, 10, 1]).map(|(d, f)| u16::from(d - b'0') * f).sum::<u16>();
    (w <= 1000).then_some(w)
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
        // Room for all of it: deflate adds a few bytes per block to data it
        // cannot compress, and the compressor may hold up to about 83 KiB
        // of output of its own.
        self.piece_within(raw, alone, out, raw.len() + raw.len() / 8 + (128 << 10))
    }

    /// [`Deflater::piece`], with `room` bytes free in `out` for each call
    /// to the compressor.
    fn piece_within(&mut self, raw: &[u8], alone: bool, out: &mut Vec<u8>, room: usize) -> std::io::Result<()> {
        // Each flush asked again writes a 5-byte block: with no more room
        // than that, it would fill `out` again and again.
        debug_assert!(room > 5, "room for more than a flush");
        if alone {
            self.c.reset();
        }
        let mut rest = raw;
        // A call that filled `out` may have left output in the compressor.
        // The next call only hands that over (miniz_oxide returns as soon
        // as it has, with room to spare and the flush not done), so after
        // a full `out` the flush is asked for once more. When the first
        // flush did happen, that adds an empty stored block: valid, and
        // 5 bytes.
        let mut filled = false;
        loop {
            out.reserve_exact(room);
            let before = self.c.total_in();
            self.c.compress_vec(rest, out, FlushCompress::Sync).map_err(std::io::Error::other)?;
            let took = usize::try_from(self.c.total_in() - before).map_err(std::io::Error::other)?;
            rest = &rest[took..];
            if out.len() == out.capacity() {
                filled = true;
            } else if rest.is_empty() && !std::mem::take(&mut filled) {
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
        // The room the compressor had is not kept while the chunk waits.
        out.shrink_to_fit();
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

    /// Bytes a compressor cannot shrink (xorshift).
    fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn a_piece_is_whole_when_the_output_fills_on_the_way() {
        // Little room per call: the compressor fills `out` again and
        // again and keeps output of its own in between; every byte of
        // every piece must still come out, and the flush with it.
        for (n, room) in [(60_000, 1024), (300_000, 4096), (70_000, 70_000), (5, 64), (200_000, 200_000)] {
            let raw = noise(n);
            let text: Vec<u8> = (0..n / 10).flat_map(|i| format!("{{\"n\":{i}}}").into_bytes()).collect();
            for alone in [true, false] {
                let mut d = Deflater::default();
                let mut member = HEADER.to_vec();
                d.piece_within(&raw, true, &mut member, room).expect("deflate");
                d.piece_within(&text, alone, &mut member, room).expect("deflate");
                d.piece_within(&raw, alone, &mut member, room).expect("deflate");
                let mut sum = Sum::of(&raw);
                sum.then(&Sum::of(&text));
                sum.then(&Sum::of(&raw));
                member.extend(trailer(&sum));
                assert_eq!(inflate(&member), [raw.as_slice(), &text, &raw].concat(), "{n} bytes, room {room}, alone {alone}");
            }
        }
        // With room for all of it, as `piece` makes it.
        let raw = noise(500_000);
        let mut member = HEADER.to_vec();
        Deflater::default().piece(&raw, true, &mut member).expect("deflate");
        member.extend(trailer(&Sum::of(&raw)));
        assert_eq!(inflate(&member), raw);
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
        assert!(accepts("x-gzip"));
        assert!(accepts("gzip;q=1."));
        assert!(accepts("gzip;Q=0.001"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip;q=0.000"));
        assert!(!accepts("gzip;q=0."));
        // What tower-http does not take either.
        assert!(!accepts("gzip;q=1e0"));
        assert!(!accepts("gzip;q=5"));
        assert!(!accepts("gzip;q=1.001"));
        assert!(!accepts("gzip;q=0.0001"));
        assert!(!accepts("gzip;q = 0.5"));
        assert!(!accepts("*"));
        assert!(!accepts("identity"));
        assert!(!accepts("x-gzip2, deflate"));
        assert!(!accepted(&HeaderMap::new()));
    }
}
