//! Content-Encoding for bodies the filter reads: gzip and deflate are inflated as they stream
//! (a 32 KB window and a 16 KB output buffer per body, nothing else kept); anything else is
//! reported as unreadable so the caller can charge the reservation instead of silently
//! counting nothing.

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZFlush, MZStatus};

/// A body's `content-encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    /// br, zstd, stacked codings, or anything unknown.
    Unsupported,
}

pub fn encoding_of(header: Option<&[u8]>) -> Encoding {
    let Some(value) = header else { return Encoding::Identity };
    let value = value.trim_ascii();
    if value.is_empty() || value.eq_ignore_ascii_case(b"identity") {
        Encoding::Identity
    } else if value.eq_ignore_ascii_case(b"gzip") || value.eq_ignore_ascii_case(b"x-gzip") {
        Encoding::Gzip
    } else if value.eq_ignore_ascii_case(b"deflate") {
        Encoding::Deflate
    } else {
        Encoding::Unsupported
    }
}

/// Why a body could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Corrupt,
    /// It inflated past the limit (a decompression bomb, or just too large to read).
    TooLarge,
}

/// Where the gzip header parser is (RFC 1952, section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// Reading the 10 fixed bytes; how many seen.
    Fixed(u8),
    /// Reading the 2-byte FEXTRA length.
    ExtraLen(u8, u16),
    Extra(u16),
    Name,
    Comment,
    Crc(u8),
    Body,
    /// The first member ended; trailing bytes (CRC, size, more members) are ignored.
    Done,
}

const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;
const OUT: usize = 16 * 1024;

/// A streaming inflater for one body.
pub struct Inflater {
    state: Box<InflateState>,
    header: Header,
    flags: u8,
    out: Vec<u8>,
    total: u64,
    limit: u64,
    failed: Option<DecodeError>,
}

impl Inflater {
    /// For gzip or deflate (zlib-wrapped, as HTTP's `deflate` is); `limit` bounds the inflated
    /// size.
    pub fn new(encoding: Encoding, limit: u64) -> Option<Inflater> {
        let (format, header) = match encoding {
            Encoding::Gzip => (DataFormat::Raw, Header::Fixed(0)),
            Encoding::Deflate => (DataFormat::ZLibIgnoreChecksum, Header::Body),
            _ => return None,
        };
        Some(Inflater {
            state: InflateState::new_boxed(format),
            header,
            flags: 0,
            out: vec![0; OUT],
            total: 0,
            limit,
            failed: None,
        })
    }

    /// Inflates `input`, handing each piece of output to `sink`.
    pub fn feed(&mut self, mut input: &[u8], mut sink: impl FnMut(&[u8])) -> Result<(), DecodeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        loop {
            if self.header != Header::Body {
                if self.header == Header::Done || input.is_empty() {
                    return Ok(());
                }
                let used = self.read_header(input).inspect_err(|e| self.failed = Some(*e))?;
                input = &input[used..];
                continue;
            }
            let r = inflate(&mut self.state, input, &mut self.out, MZFlush::None);
            input = &input[r.bytes_consumed..];
            if r.bytes_written > 0 {
                self.total += r.bytes_written as u64;
                if self.total > self.limit {
                    self.failed = Some(DecodeError::TooLarge);
                    return Err(DecodeError::TooLarge);
                }
                sink(&self.out[..r.bytes_written]);
            }
            let stalled = r.bytes_consumed == 0 && r.bytes_written == 0;
            match r.status {
                Ok(MZStatus::StreamEnd) => {
                    self.header = Header::Done;
                    return Ok(());
                }
                // A full output buffer may leave more output pending: go round again.
                Ok(_) if !stalled && (r.bytes_written == self.out.len() || !input.is_empty()) => {}
                Ok(_) => return Ok(()),
                Err(miniz_oxide::MZError::Buf) if stalled => return Ok(()),
                Err(_) => {
                    self.failed = Some(DecodeError::Corrupt);
                    return Err(DecodeError::Corrupt);
                }
            }
        }
    }

    /// True once the compressed stream's end was seen.
    pub fn finished(&self) -> bool {
        self.header == Header::Done
    }

    /// Consumes header bytes; returns how many.
    fn read_header(&mut self, input: &[u8]) -> Result<usize, DecodeError> {
        let mut used = 0;
        while used < input.len() {
            let b = input[used];
            match self.header {
                Header::Fixed(n) => {
                    match n {
                        0 if b != 0x1f => return Err(DecodeError::Corrupt),
                        1 if b != 0x8b => return Err(DecodeError::Corrupt),
                        2 if b != 8 => return Err(DecodeError::Corrupt),
                        3 => self.flags = b,
                        _ => {}
                    }
                    used += 1;
                    self.header = if n == 9 { self.after(FEXTRA - 1) } else { Header::Fixed(n + 1) };
                }
                Header::ExtraLen(n, len) => {
                    used += 1;
                    let len = len | (u16::from(b) << (8 * n));
                    self.header = if n == 1 { Header::Extra(len) } else { Header::ExtraLen(1, len) };
                    if self.header == Header::Extra(0) {
                        self.header = self.after(FEXTRA);
                    }
                }
                Header::Extra(left) => {
                    let take = (left as usize).min(input.len() - used);
                    used += take;
                    let left = left - take as u16;
                    self.header = if left == 0 { self.after(FEXTRA) } else { Header::Extra(left) };
                }
                Header::Name | Header::Comment => {
                    used += 1;
                    if b == 0 {
                        self.header = self.after(if self.header == Header::Name { FNAME } else { FCOMMENT });
                    }
                }
                Header::Crc(n) => {
                    used += 1;
                    self.header = if n == 1 { Header::Body } else { Header::Crc(1) };
                }
                Header::Body | Header::Done => break,
            }
            if self.header == Header::Body {
                break;
            }
        }
        Ok(used)
    }

    /// The header part that follows the one identified by flag `done` (in FEXTRA, FNAME,
    /// FCOMMENT, FHCRC order; `FEXTRA - 1` means the fixed part).
    fn after(&self, done: u8) -> Header {
        if done < FEXTRA && self.flags & FEXTRA != 0 {
            return Header::ExtraLen(0, 0);
        }
        if done < FNAME && self.flags & FNAME != 0 {
            return Header::Name;
        }
        if done < FCOMMENT && self.flags & FCOMMENT != 0 {
            return Header::Comment;
        }
        if self.flags & FHCRC != 0 {
            return Header::Crc(0);
        }
        Header::Body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::deflate::{compress_to_vec, compress_to_vec_zlib};

    /// A gzip member with the optional header fields `flags` asks for.
    fn gzip(data: &[u8], flags: u8) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3];
        if flags & FEXTRA != 0 {
            out.extend_from_slice(&[4, 0, b'a', b'b', b'c', b'd']);
        }
        if flags & FNAME != 0 {
            out.extend_from_slice(b"body.json\0");
        }
        if flags & FCOMMENT != 0 {
            out.extend_from_slice(b"a comment\0");
        }
        if flags & FHCRC != 0 {
            out.extend_from_slice(&[0x12, 0x34]);
        }
        out.extend_from_slice(&compress_to_vec(data, 6));
        out.extend_from_slice(&[0; 8]);
        out
    }

    fn inflate_split(encoding: Encoding, body: &[u8], piece: usize, limit: u64) -> Result<Vec<u8>, DecodeError> {
        let mut inf = Inflater::new(encoding, limit).unwrap();
        let mut out = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            inf.feed(chunk, |b| out.extend_from_slice(b))?;
        }
        Ok(out)
    }

    #[test]
    fn gzip_and_deflate_inflate_whatever_the_chunking() {
        let data: Vec<u8> = (0..50_000u32).flat_map(|i| format!("word{} ", i % 97).into_bytes()).collect();
        for flags in [0, FEXTRA, FNAME, FCOMMENT, FHCRC, FEXTRA | FNAME | FCOMMENT | FHCRC] {
            let body = gzip(&data, flags);
            for piece in [1, 2, 7, 100, 4096, body.len()] {
                assert!(inflate_split(Encoding::Gzip, &body, piece, u64::MAX).unwrap() == data, "flags {flags} piece {piece}");
            }
        }
        let z = compress_to_vec_zlib(&data, 6);
        for piece in [1, 13, z.len()] {
            assert!(inflate_split(Encoding::Deflate, &z, piece, u64::MAX).unwrap() == data, "piece {piece}");
        }
    }

    #[test]
    fn corrupt_and_oversized_bodies_are_errors() {
        let data = vec![b'a'; 100_000];
        let body = gzip(&data, 0);
        assert_eq!(inflate_split(Encoding::Gzip, &body, 1000, 50_000), Err(DecodeError::TooLarge));
        assert_eq!(inflate_split(Encoding::Gzip, b"{\"not\": \"gzip\"}", 5, u64::MAX), Err(DecodeError::Corrupt));
        let mut bad = body.clone();
        for b in &mut bad[12..40] {
            *b = 0xff;
        }
        assert!(inflate_split(Encoding::Gzip, &bad, 64, u64::MAX).is_err());
        // A truncated body is not an error by itself: the caller sees it never finished.
        let mut inf = Inflater::new(Encoding::Gzip, u64::MAX).unwrap();
        inf.feed(&body[..body.len() / 2], |_| {}).unwrap();
        assert!(!inf.finished());
        inf.feed(&body[body.len() / 2..], |_| {}).unwrap();
        assert!(inf.finished());
    }

    #[test]
    fn encodings() {
        let cases: [(Option<&[u8]>, Encoding); 8] = [
            (None, Encoding::Identity),
            (Some(b""), Encoding::Identity),
            (Some(b"identity"), Encoding::Identity),
            (Some(b"GZIP"), Encoding::Gzip),
            (Some(b" x-gzip "), Encoding::Gzip),
            (Some(b"deflate"), Encoding::Deflate),
            (Some(b"br"), Encoding::Unsupported),
            (Some(b"gzip, br"), Encoding::Unsupported),
        ];
        for (header, want) in cases {
            assert_eq!(encoding_of(header), want, "{header:?}");
        }
        assert!(Inflater::new(Encoding::Identity, 1).is_none());
    }
}
