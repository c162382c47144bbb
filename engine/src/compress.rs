//! gzip (RFC 1952) for the answers, in steps: the dedicated server lives in the uWSGI master
//! and compresses a large exposition a slice per master cycle, as the socket drains, so that
//! one scrape never stalls the master for the whole body.
//!
//! The deflate stream comes from `flate2` (see the README for the backend and its figures);
//! the gzip framing around it (a 10-byte header, CRC-32 and length trailer) is written here
//! because the server needs the stream in pieces it controls.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

use crate::header::{self, parse_q};

/// Bodies shorter than this are sent as they are: gzip's 18 bytes of framing and the
/// compressor's setup cost more than they save.
pub const MIN_SIZE: usize = crate::defaults::GZIP_MIN_SIZE;

/// Compression level. Level 1 keeps about 90% of level 6's saving on expositions (long runs
/// of repeated family and label names) at several times the speed; see the README's figures.
pub const LEVEL: u32 = 1;

/// The fixed gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Output reserved per call to the compressor.
const OUT_STEP: usize = 32 << 10;

/// One gzip stream at a time, reusable: [`Gzip::begin`] starts a new stream without
/// allocating the compressor's state again.
pub struct Gzip {
    deflate: Compress,
    crc: Crc,
    /// A stream is open (begun and not finished).
    open: bool,
}

impl Default for Gzip {
    fn default() -> Self {
        Gzip::new()
    }
}

impl std::fmt::Debug for Gzip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gzip")
            .field("in", &self.deflate.total_in())
            .field("out", &self.deflate.total_out())
            .field("open", &self.open)
            .finish()
    }
}

impl Gzip {
    pub fn new() -> Gzip {
        Gzip {
            deflate: Compress::new(Compression::new(LEVEL), false),
            crc: Crc::new(),
            open: false,
        }
    }

    /// Starts a stream: appends the gzip header to `out`.
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        self.deflate.reset();
        self.crc.reset();
        self.open = true;
        out.extend_from_slice(&HEADER);
    }

    /// Compresses all of `input` into `out` (the compressor may hold some of it back until
    /// later input or [`Gzip::finish`]).
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        debug_assert!(self.open, "Gzip::write before begin");
        self.crc.update(input);
        let mut pos = 0;
        while pos < input.len() {
            out.reserve(OUT_STEP);
            let before = self.deflate.total_in();
            // Errors: only on a misused stream (never here: raw deflate, no dictionary).
            let _ = self
                .deflate
                .compress_vec(&input[pos..], out, FlushCompress::None);
            pos += (self.deflate.total_in() - before) as usize;
        }
    }

    /// Ends the stream: appends what the compressor held back and the trailer.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        debug_assert!(self.open, "Gzip::finish before begin");
        loop {
            out.reserve(OUT_STEP);
            match self.deflate.compress_vec(&[], out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) | Err(_) => break,
                Ok(_) => {}
            }
        }
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
        self.open = false;
    }

    /// Compresses `input` in one go: appends a whole gzip member to `out`.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.begin(out);
        self.write(input, out);
        self.finish(out);
    }
}

/// Whether an `Accept-Encoding` header value allows gzip (RFC 9110 §12.5.3): `gzip` or its
/// alias `x-gzip` with q > 0, or, when neither is listed, `*` with q > 0. No header, an empty
/// one or `gzip;q=0` means no. A coding with a malformed q is ignored.
pub fn accepts_gzip(accept_encoding: Option<&[u8]>) -> bool {
    let Some(list) = accept_encoding else {
        return false;
    };
    let (mut gzip, mut star) = (None::<u16>, None::<u16>);
    'codings: for (coding, params) in header::elements(list) {
        let mut q = 1000;
        for param in params {
            if let Some(v) = header::weight(param) {
                match parse_q(v) {
                    Some(v) => q = v,
                    None => continue 'codings,
                }
            }
        }
        let slot = if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip")
        {
            &mut gzip
        } else if coding == b"*" {
            &mut star
        } else {
            continue;
        };
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    gzip.or(star).is_some_and(|q| q > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("a valid gzip member");
        out
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut s = Vec::new();
        let mut i = 0u64;
        while s.len() < n {
            s.extend_from_slice(
                format!(
                    "uwsgi_worker_requests_total{{worker=\"{}\"}} {}\n",
                    i % 64,
                    i * 7919
                )
                .as_bytes(),
            );
            i += 1;
        }
        s.truncate(n);
        s
    }

    #[test]
    fn accept_encoding() {
        let yes: &[&[u8]] = &[
            b"gzip",
            b"GZIP",
            b"x-gzip",
            b"gzip, deflate, br",
            b"deflate, gzip;q=0.5",
            b"*",
            b"br;q=1, *;q=0.1",
            b"gzip;q=0.001",
            b" gzip ; q=1.0 ",
            b"identity;q=0, gzip",
            b"gzip;q=0, gzip;q=1",
        ];
        for h in yes {
            assert!(accepts_gzip(Some(h)), "{}", String::from_utf8_lossy(h));
        }
        let no: &[&[u8]] = &[
            b"",
            b"identity",
            b"deflate, br",
            b"gzip;q=0",
            b"gzip;q=0.000",
            b"gzip;q=0, *",
            b"*;q=0",
            b"gzip;q=2",
            b"gzip;q=abc",
            b"gzipx",
            b"zstd",
        ];
        for h in no {
            assert!(!accepts_gzip(Some(h)), "{}", String::from_utf8_lossy(h));
        }
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn one_shot_round_trip() {
        let mut gz = Gzip::new();
        for n in [0, 1, MIN_SIZE, 100_000] {
            let body = sample(n);
            let mut out = Vec::new();
            gz.compress(&body, &mut out);
            assert_eq!(&out[..2], &[0x1f, 0x8b]);
            assert_eq!(gunzip(&out), body, "{n} bytes");
        }
    }

    #[test]
    fn stepwise_equals_input_and_stream_is_reusable() {
        let body = sample(300_000);
        let mut gz = Gzip::new();
        for _ in 0..2 {
            let mut out = Vec::new();
            gz.begin(&mut out);
            for chunk in body.chunks(7_001) {
                gz.write(chunk, &mut out);
            }
            gz.finish(&mut out);
            assert_eq!(gunzip(&out), body);
            assert!(
                out.len() * 3 < body.len(),
                "{} -> {}",
                body.len(),
                out.len()
            );
        }
    }

    #[test]
    fn a_truncated_stream_is_detected() {
        let body = sample(50_000);
        let mut out = Vec::new();
        Gzip::new().compress(&body, &mut out);
        out.truncate(out.len() - 4);
        let mut sink = Vec::new();
        assert!(flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut sink)
            .is_err());
    }
}
