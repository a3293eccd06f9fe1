//! Strict base64url without padding (RFC 7515 §2), the only encoding a compact JWS uses.
//!
//! Strict means: no `=` padding, no characters outside the URL-safe alphabet, no length that
//! cannot come from an encoder (4n+1), and no stray bits in the last character. A token has
//! exactly one encoding, so two strings never stand for the same signed bytes.

fn value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Decodes base64url without padding; `None` for anything but the canonical encoding.
pub fn decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut chunks = input.chunks_exact(4);
    for chunk in &mut chunks {
        let mut n = 0u32;
        for &c in chunk {
            n = n << 6 | value(c)?;
        }
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    let rest = chunks.remainder();
    let mut n = 0u32;
    for &c in rest {
        n = n << 6 | value(c)?;
    }
    match rest.len() {
        0 => {}
        2 => {
            if n & 0xf != 0 {
                return None;
            }
            out.push((n >> 4) as u8);
        }
        3 => {
            if n & 0x3 != 0 {
                return None;
            }
            out.extend_from_slice(&[(n >> 10) as u8, (n >> 2) as u8]);
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_in_url_alphabet() {
        let cases: [(&str, &[u8]); 8] = [
            ("", b""),
            ("Zg", b"f"),
            ("Zm8", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("Zm9vYmE", b"fooba"),
            ("Zm9vYmFy", b"foobar"),
            ("-_8", &[0xfb, 0xff]),
        ];
        for (text, bytes) in cases {
            assert_eq!(decode(text.as_bytes()).as_deref(), Some(bytes), "{text}");
        }
    }

    #[test]
    fn rejects_what_an_encoder_never_writes() {
        for bad in ["Zg==", "Zm9v+g", "Zm9v/g", "Z", "Zm9vY", "Zh", "Zm9", "Zm-", "Zm9 v", "Zm\u{e9}9"] {
            // "Zh", "Zm9" and "Zm-" leave stray bits in their last character ("f" is "Zg",
            // "fo" is "Zm8").
            assert_eq!(decode(bad.as_bytes()), None, "{bad}");
        }
    }
}
