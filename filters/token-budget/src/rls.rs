//! The rate limit service's messages (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`),
//! encoded and decoded by hand: the filter needs two small messages, and a protobuf library
//! would cost more module size than all of this.
//!
//! Field numbers, from `envoy/service/ratelimit/v3/rls.proto` and
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`:
//!
//! ```text
//! RateLimitRequest     { string domain = 1; repeated RateLimitDescriptor descriptors = 2; uint32 hits_addend = 3; }
//! RateLimitDescriptor  { repeated Entry entries = 1; RateLimitOverride limit = 2; google.protobuf.UInt64Value hits_addend = 3; }
//! Entry                { string key = 1; string value = 2; }
//! UInt64Value          { uint64 value = 1; }
//! RateLimitResponse    { Code overall_code = 1; repeated DescriptorStatus statuses = 2; ... = 3..7; }
//! DescriptorStatus     { Code code = 1; RateLimit current_limit = 2; uint32 limit_remaining = 3;
//!                        google.protobuf.Duration duration_until_reset = 4; Quota quota = 5; }
//! RateLimit            { uint32 requests_per_unit = 1; Unit unit = 2; string name = 3; }
//! Duration             { int64 seconds = 1; int32 nanos = 2; }
//! Code                 { UNKNOWN = 0; OK = 1; OVER_LIMIT = 2; }
//! Unit                 { UNKNOWN = 0; SECOND = 1; MINUTE = 2; HOUR = 3; DAY = 4; MONTH = 5; YEAR = 6; WEEK = 7; }
//! ```
//!
//! Each descriptor carries its own `hits_addend` (a `UInt64Value`, so 0 is sent and means
//! "check without counting"; the request-level field cannot say 0: the service reads an
//! unset or zero request-level value as 1). Fields are written in field-number order and
//! empty strings are left out, as protobuf's own encoders do, so the bytes equal theirs.

/// The service's verdict for one descriptor, or for the whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn of(v: u64) -> Code {
        match v {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

/// A limit as the service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    pub requests_per_unit: u32,
    /// The `Unit` enum's number.
    pub unit: u32,
}

impl Limit {
    /// The unit's length in seconds, as the service divides time (a month is 30 days).
    pub fn unit_seconds(&self) -> Option<u64> {
        unit_seconds(self.unit)
    }
}

/// Seconds of a `Unit` number; `None` for UNKNOWN or numbers this filter does not know.
pub fn unit_seconds(unit: u32) -> Option<u64> {
    Some(match unit {
        1 => 1,
        2 => 60,
        3 => 3600,
        4 => 86_400,
        5 => 30 * 86_400,
        6 => 365 * 86_400,
        7 => 7 * 86_400,
        _ => return None,
    })
}

/// The `Unit` number of a window, if the service has one that long.
pub fn unit_of_window(seconds: u64) -> Option<u32> {
    (1..=7).find(|u| unit_seconds(*u) == Some(seconds) && *u != 6)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    /// `None` when the service has no limit for the descriptor (not in its configuration).
    pub current_limit: Option<Limit>,
    pub limit_remaining: u32,
    /// Whole seconds until the service's window ends (`None` when it did not say).
    pub reset_in_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub overall: Code,
    pub statuses: Vec<Status>,
}

/// Why a response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

// --- encoding

const LEN: u64 = 2;
const VARINT: u64 = 0;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A descriptor's entries, encoded once (the repeated field 1 of `RateLimitDescriptor`);
/// [`request`] adds each descriptor's `hits_addend`. Empty values are left out, as protobuf
/// encoders leave out empty strings.
pub fn entries(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = Vec::new();
    for (key, value) in pairs {
        entry.clear();
        if !key.is_empty() {
            put_bytes(&mut entry, 1, key.as_bytes());
        }
        if !value.is_empty() {
            put_bytes(&mut entry, 2, value.as_bytes());
        }
        put_bytes(&mut out, 1, &entry);
    }
    out
}

/// A `RateLimitRequest` for `domain` with one descriptor per `(entries, hits_addend)`.
pub fn request<'a>(domain: &str, descriptors: impl IntoIterator<Item = (&'a [u8], u64)>) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, domain.as_bytes());
    let mut descriptor = Vec::new();
    let mut addend = Vec::new();
    for (entries, hits) in descriptors {
        descriptor.clear();
        descriptor.extend_from_slice(entries);
        addend.clear();
        if hits != 0 {
            put_tag(&mut addend, 1, VARINT);
            put_varint(&mut addend, hits);
        }
        put_bytes(&mut descriptor, 3, &addend);
        put_bytes(&mut out, 2, &descriptor);
    }
    out
}

// --- decoding

/// A protobuf field as read from the wire.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed 32- and 64-bit values: read past, never used here.
    Fixed,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.bytes.get(self.at).ok_or(Malformed)?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).ok_or(Malformed)?;
        let out = self.bytes.get(self.at..end).ok_or(Malformed)?;
        self.at = end;
        Ok(out)
    }

    /// The next field, or `None` at the end. Groups (wire types 3 and 4) are not used by these
    /// messages and count as malformed.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, Malformed> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 {
            return Err(Malformed);
        }
        let field = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            _ => return Err(Malformed),
        };
        Ok(Some((number, field)))
    }
}

/// Whether `bytes` parse as a protobuf message (any fields, groups included). Envoy's
/// `dispatch_grpc_call` first tries to read its `upstream` argument as a serialized
/// `GrpcService`; a cluster name that happens to parse as one is not looked up as a cluster
/// (and the call fails in a way the SDK turns into a panic), so configuration refuses such names.
pub fn parses_as_message(bytes: &[u8]) -> bool {
    fn skim(r: &mut Reader, group: Option<u64>) -> Result<(), Malformed> {
        while r.at < r.bytes.len() {
            let tag = r.varint()?;
            let number = tag >> 3;
            if number == 0 {
                return Err(Malformed);
            }
            match tag & 7 {
                0 => {
                    r.varint()?;
                }
                1 => {
                    r.take(8)?;
                }
                2 => {
                    let n = usize::try_from(r.varint()?).map_err(|_| Malformed)?;
                    r.take(n)?;
                }
                3 => skim(r, Some(number))?,
                4 if group == Some(number) => return Ok(()),
                5 => {
                    r.take(4)?;
                }
                _ => return Err(Malformed),
            }
        }
        if group.is_some() {
            Err(Malformed)
        } else {
            Ok(())
        }
    }
    skim(&mut Reader::new(bytes), None).is_ok()
}

fn limit(bytes: &[u8]) -> Result<Limit, Malformed> {
    let mut r = Reader::new(bytes);
    let mut out = Limit::default();
    while let Some((number, field)) = r.field()? {
        match (number, field) {
            (1, Field::Varint(v)) => out.requests_per_unit = v as u32,
            (2, Field::Varint(v)) => out.unit = v as u32,
            _ => {}
        }
    }
    Ok(out)
}

fn duration_s(bytes: &[u8]) -> Result<u64, Malformed> {
    let mut r = Reader::new(bytes);
    let (mut seconds, mut nanos) = (0i64, 0i64);
    while let Some((number, field)) = r.field()? {
        match (number, field) {
            (1, Field::Varint(v)) => seconds = v as i64,
            (2, Field::Varint(v)) => nanos = i64::from(v as i32),
            _ => {}
        }
    }
    // Rounded up: a window that ends in 0.4 s has not ended.
    let s = seconds.saturating_add(i64::from(nanos > 0));
    Ok(u64::try_from(s).unwrap_or(0))
}

fn status(bytes: &[u8]) -> Result<Status, Malformed> {
    let mut r = Reader::new(bytes);
    let mut out = Status { code: Code::Unknown, current_limit: None, limit_remaining: 0, reset_in_s: None };
    while let Some((number, field)) = r.field()? {
        match (number, field) {
            (1, Field::Varint(v)) => out.code = Code::of(v),
            (2, Field::Bytes(b)) => out.current_limit = Some(limit(b)?),
            (3, Field::Varint(v)) => out.limit_remaining = v as u32,
            (4, Field::Bytes(b)) => out.reset_in_s = Some(duration_s(b)?),
            _ => {}
        }
    }
    Ok(out)
}

/// Reads a `RateLimitResponse`; fields this filter does not use are skipped.
pub fn response(bytes: &[u8]) -> Result<Response, Malformed> {
    let mut r = Reader::new(bytes);
    let mut out = Response { overall: Code::Unknown, statuses: Vec::new() };
    while let Some((number, field)) = r.field()? {
        match (number, field) {
            (1, Field::Varint(v)) => out.overall = Code::of(v),
            (2, Field::Bytes(b)) => {
                // A response never has more statuses than the request had descriptors (at
                // most a few dozen); a flood is not a response.
                if out.statuses.len() >= 1024 {
                    return Err(Malformed);
                }
                out.statuses.push(status(b)?);
            }
            _ => {}
        }
    }
    Ok(out)
}

// --- descriptor values

/// The longest descriptor value sent; longer values are sent as a hash.
pub const MAX_VALUE: usize = 128;

/// A header or model value as a descriptor value. The service builds its Redis keys as
/// `domain_key_value_key_value_..._window` and protobuf strings must be UTF-8, so bytes other
/// than printable ASCII, and `%`, `_` and `~`, are percent-encoded (two subjects can never
/// share a key, and no client byte can break the message); a value longer than [`MAX_VALUE`]
/// becomes `~` and 16 hex digits of its hash.
pub fn descriptor_value(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        if out.len() > MAX_VALUE {
            return format!("~{:016x}", filter_common::hash::stable_hash(&[raw]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Worked by hand from the wire format: tag = field << 3 | wire type, lengths as varints.
    #[test]
    fn a_check_request_matches_the_hand_encoded_bytes() {
        let e = entries(&[("budget", "b"), ("subject", "al")]);
        // Entry{key "budget", value "b"}: 0a 06 "budget" 12 01 "b" (11 bytes), as field 1: 0a 0b ...
        // Entry{key "subject", value "al"}: 0a 07 "subject" 12 02 "al" (13 bytes): 0a 0d ...
        let want_entries = hex("0a0b 0a06 627564676574 1201 62   0a0d 0a07 7375626a656374 1202 616c");
        assert_eq!(e, want_entries);
        let msg = request("d", [(&e[..], 0u64)]);
        // domain: 0a 01 "d"; descriptor: 12 <len> entries 1a 00 (UInt64Value{0}: present, empty).
        let mut want = hex("0a01 64 12");
        want.push((want_entries.len() + 2) as u8);
        want.extend_from_slice(&want_entries);
        want.extend_from_slice(&hex("1a00"));
        assert_eq!(msg, want);
        // hits_addend 300 = varint ac 02: UInt64Value is 08 ac 02, so 1a 03 08 ac 02.
        let msg = request("d", [(&e[..], 300u64)]);
        assert!(msg.ends_with(&hex("1a03 08ac02")), "{msg:02x?}");
        // An empty value is left out of its entry: Entry{key "model"} is 0a 05 "model".
        assert_eq!(entries(&[("model", "")]), hex("0a07 0a05 6d6f64656c"));
    }

    #[test]
    fn varints_of_every_size() {
        for (v, want) in [(0u64, "00"), (1, "01"), (127, "7f"), (128, "8001"), (16_384, "808001"), (u64::MAX, "ffffffffffffffffff01")] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, hex(want), "{v}");
            assert_eq!(Reader::new(&out).varint(), Ok(v));
        }
        assert_eq!(Reader::new(&hex("ffffffffffffffffffff01")).varint(), Err(Malformed), "11 bytes");
        assert_eq!(Reader::new(&hex("80")).varint(), Err(Malformed), "cut short");
    }

    /// A response as the service writes it, by hand: overall OVER_LIMIT, then an OK status with
    /// its limit (100 per MINUTE), 40 remaining and 59.5 s to reset, then an OVER_LIMIT one.
    #[test]
    fn a_response_is_read_and_unknown_fields_are_skipped() {
        let ok_status = hex("0801 1204 0864 1002 1828 2208 083b 1080cab5ee01");
        let over_status = hex("0802 1205 08e807 1004");
        let mut bytes = hex("0802");
        bytes.extend_from_slice(&hex("12"));
        bytes.push(ok_status.len() as u8);
        bytes.extend_from_slice(&ok_status);
        bytes.extend_from_slice(&hex("12"));
        bytes.push(over_status.len() as u8);
        bytes.extend_from_slice(&over_status);
        // Fields the filter does not read: response_headers_to_add (3), raw_body (5), a fixed64
        // and a fixed32 with unknown numbers.
        bytes.extend_from_slice(&hex("1a04 0a02 6b76  2a02 6869  4901020304050607 08  5d01020304"));
        let r = response(&bytes).unwrap();
        assert_eq!(r.overall, Code::OverLimit);
        assert_eq!(
            r.statuses,
            vec![
                Status { code: Code::Ok, current_limit: Some(Limit { requests_per_unit: 100, unit: 2 }), limit_remaining: 40, reset_in_s: Some(60) },
                Status { code: Code::OverLimit, current_limit: Some(Limit { requests_per_unit: 1000, unit: 4 }), limit_remaining: 0, reset_in_s: None },
            ]
        );
        // A status without a limit: the descriptor matched nothing in the service's config.
        let r = response(&hex("0801 1202 0801")).unwrap();
        assert_eq!(r.statuses[0].current_limit, None);
        assert_eq!(response(b"").unwrap(), Response { overall: Code::Unknown, statuses: vec![] });
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        for bad in ["12", "1205 0801", "0b", "0f00", "00", "12ffffffffffffffffff01", "1203 120108", "4901"] {
            assert_eq!(response(&hex(bad)), Err(Malformed), "{bad}");
        }
        // Every truncation of a valid response is either read or refused, never a panic.
        let full = hex("0802 1211 0801 1204 0864 1002 1828 2205 083b 1001");
        for n in 0..full.len() {
            let _ = response(&full[..n]);
        }
    }

    #[test]
    fn cluster_names_that_envoy_would_read_as_a_grpc_service() {
        for name in ["ratelimit", "rate-limit", "outbound|8081||ratelimit.default.svc.cluster.local", "rl", "s", "x"] {
            assert!(!parses_as_message(name.as_bytes()), "{name}");
        }
        // 'a' is field 12 as fixed64: "a" and 8 more bytes is a whole message.
        for name in ["a12345678", "\u{8}\u{1}", "\u{1a}\u{0}", "#$"] {
            assert!(parses_as_message(name.as_bytes()), "{name:?}");
        }
    }

    #[test]
    fn windows_map_to_the_services_units() {
        assert_eq!(unit_of_window(1), Some(1));
        assert_eq!(unit_of_window(60), Some(2));
        assert_eq!(unit_of_window(3600), Some(3));
        assert_eq!(unit_of_window(86_400), Some(4));
        assert_eq!(unit_of_window(7 * 86_400), Some(7));
        assert_eq!(unit_of_window(30 * 86_400), Some(5));
        assert_eq!(unit_of_window(120), None);
        assert_eq!(unit_of_window(365 * 86_400), None, "beyond the filter's 30-day windows");
    }

    #[test]
    fn descriptor_values_are_escaped_and_bounded() {
        assert_eq!(descriptor_value(b"alice"), "alice");
        assert_eq!(descriptor_value(b"gpt-4o"), "gpt-4o");
        assert_eq!(descriptor_value(b"a_b"), "a%5Fb", "underscores separate key parts in Redis");
        assert_eq!(descriptor_value(b"100%"), "100%25");
        assert_eq!(descriptor_value(b"a b"), "a%20b");
        assert_eq!(descriptor_value(b"~x"), "%7Ex");
        assert_eq!(descriptor_value("é".as_bytes()), "%C3%A9");
        assert_eq!(descriptor_value(&[0xff, 0x00]), "%FF%00");
        assert_eq!(descriptor_value(b""), "");
        let long = vec![b'x'; MAX_VALUE + 1];
        let v = descriptor_value(&long);
        assert!(v.starts_with('~') && v.len() == 17, "{v}");
        assert_ne!(descriptor_value(&[b'y'; MAX_VALUE + 1]), v);
        assert_eq!(descriptor_value(&[b'x'; MAX_VALUE]).len(), MAX_VALUE);
        // 43 bytes that escape to 129 characters are hashed too.
        assert!(descriptor_value(&[0u8; 43]).starts_with('~'));
    }
}
