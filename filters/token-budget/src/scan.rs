//! Incremental readers of provider responses: a JSON scanner that finds the `usage` object
//! without holding the document, and an SSE framer that feeds each event's `data:` lines to it.
//!
//! Memory per response is fixed (a few hundred bytes plus at most [`MAX_CAPTURE`] for a usage
//! object), whatever the response's size and however it is split into chunks: a chunk may end
//! anywhere, inside a UTF-8 character, a `data:` field name, a JSON string or a CRLF pair.
//!
//! Where usage lives:
//! - `usage` at the top of a JSON body or of an SSE event: OpenAI Chat Completions (body and
//!   final stream chunk), Anthropic Messages (body and `message_delta`), OpenAI Responses body;
//! - `response.usage`: OpenAI Responses `response.completed` / `incomplete` / `failed` events;
//! - `message.usage`: Anthropic `message_start`, whose counts are provisional (output 1).
//!
//! The scanner also notices events that carry generated text (a non-empty string under a
//! `delta` key), one output token each, for estimating an interrupted stream.

use crate::usage::UsageAcc;

/// Deepest nesting whose path is tracked; deeper levels are counted, not followed.
const MAX_DEPTH: usize = 32;
/// Longest key kept for classification (longer keys are none of the interesting ones).
const MAX_KEY: usize = 16;
/// Largest usage object accepted; a real one is a few hundred bytes.
pub const MAX_CAPTURE: usize = 4096;
/// Longest SSE field name kept (`data`, `event`, `id`, `retry`).
const MAX_FIELD: usize = 8;

/// What a response has told us so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Findings {
    pub usage: UsageAcc,
    /// A usage object that is the response's final count was seen (anything but Anthropic's
    /// `message_start`).
    pub final_usage: bool,
    /// SSE events (or JSON bodies) that carried generated text.
    pub content_events: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Other,
    Usage,
    Response,
    Message,
    Delta,
    /// A key whose string value is generated text inside a delta.
    Content,
}

fn classify(key: &[u8]) -> Key {
    match key {
        b"usage" => Key::Usage,
        b"response" => Key::Response,
        b"message" => Key::Message,
        b"delta" => Key::Delta,
        b"content" | b"text" | b"arguments" | b"partial_json" | b"refusal" | b"thinking" => Key::Content,
        _ => Key::Other,
    }
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    object: bool,
    /// The key of the member being read (objects only).
    key: Key,
    in_delta: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Final,
    Provisional,
}

/// Finds `usage` in one JSON document fed in pieces.
#[derive(Debug)]
pub struct JsonScanner {
    frames: Vec<Frame>,
    depth: usize,
    in_string: bool,
    escape: bool,
    string_is_key: bool,
    string_len: usize,
    key: [u8; MAX_KEY],
    key_len: usize,
    key_too_long: bool,
    expect_key: bool,
    capture: Vec<u8>,
    /// Depth at which the capture started (the usage object's own depth), and its place.
    capturing: Option<(usize, Place)>,
    capture_overflow: bool,
    content: bool,
}

impl Default for JsonScanner {
    fn default() -> Self {
        JsonScanner {
            frames: Vec::new(),
            depth: 0,
            in_string: false,
            escape: false,
            string_is_key: false,
            string_len: 0,
            key: [0; MAX_KEY],
            key_len: 0,
            key_too_long: false,
            expect_key: false,
            capture: Vec::new(),
            capturing: None,
            capture_overflow: false,
            content: false,
        }
    }
}

impl JsonScanner {
    /// Starts a new document (the next SSE event).
    pub fn reset(&mut self) {
        let mut capture = std::mem::take(&mut self.capture);
        capture.clear();
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        *self = JsonScanner { capture, frames, ..JsonScanner::default() };
    }

    /// True when the document so far carried generated text.
    pub fn had_content(&self) -> bool {
        self.content
    }

    fn top(&self) -> Option<&Frame> {
        if self.depth <= MAX_DEPTH {
            self.frames.last()
        } else {
            None
        }
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Findings) {
        let mut i = 0;
        while i < bytes.len() {
            if self.in_string {
                // Fast path: run to the next quote or backslash.
                let start = i;
                if !self.escape {
                    while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\\' {
                        i += 1;
                    }
                    self.string_run(&bytes[start..i]);
                    if i == bytes.len() {
                        self.copy(&bytes[start..i]);
                        break;
                    }
                }
                let b = bytes[i];
                i += 1;
                self.copy(&bytes[start..i]);
                if self.escape {
                    self.escape = false;
                    self.string_run(&[b]);
                } else if b == b'\\' {
                    self.escape = true;
                    self.string_run(&[b]);
                } else {
                    self.end_string();
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.structural(b, out);
        }
    }

    fn copy(&mut self, bytes: &[u8]) {
        if self.capturing.is_some() && !bytes.is_empty() {
            if self.capture.len() + bytes.len() > MAX_CAPTURE {
                self.capture_overflow = true;
            } else {
                self.capture.extend_from_slice(bytes);
            }
        }
    }

    fn string_run(&mut self, run: &[u8]) {
        if run.is_empty() {
            return;
        }
        self.string_len += run.len();
        if self.string_is_key && !self.key_too_long {
            if self.key_len + run.len() <= MAX_KEY {
                self.key[self.key_len..self.key_len + run.len()].copy_from_slice(run);
                self.key_len += run.len();
            } else {
                self.key_too_long = true;
            }
        }
    }

    fn end_string(&mut self) {
        self.in_string = false;
        if self.depth > MAX_DEPTH {
            return;
        }
        if self.string_is_key {
            // Only keys are classified: most strings are values.
            let key = if self.key_too_long { Key::Other } else { classify(&self.key[..self.key_len]) };
            if let Some(top) = self.frames.last_mut() {
                top.key = key;
            }
        } else if self.string_len > 0 && !self.content {
            if let Some(top) = self.frames.last() {
                self.content = top.key == Key::Delta || (top.in_delta && top.key == Key::Content);
            }
        }
    }

    fn structural(&mut self, b: u8, out: &mut Findings) {
        match b {
            b'"' => {
                self.copy(&[b]);
                self.in_string = true;
                self.escape = false;
                self.string_len = 0;
                self.key_len = 0;
                self.key_too_long = false;
                self.string_is_key = self.expect_key && self.top().is_some_and(|f| f.object);
            }
            b':' => {
                self.copy(&[b]);
                self.expect_key = false;
            }
            b',' => {
                self.copy(&[b]);
                let depth = self.depth;
                if let Some(top) = (depth <= MAX_DEPTH).then(|| self.frames.last_mut()).flatten() {
                    if top.object {
                        top.key = Key::Other;
                        self.expect_key = true;
                    }
                }
            }
            b'{' | b'[' => {
                let object = b == b'{';
                let parent = self.top().copied();
                if object && self.capturing.is_none() {
                    if let Some(place) = self.usage_place(parent) {
                        self.capturing = Some((self.depth + 1, place));
                        self.capture.clear();
                        self.capture_overflow = false;
                    }
                }
                self.copy(&[b]);
                self.depth += 1;
                if self.depth <= MAX_DEPTH {
                    let in_delta = parent.is_some_and(|p| p.in_delta || p.key == Key::Delta);
                    self.frames.push(Frame { object, key: Key::Other, in_delta });
                }
                self.expect_key = object;
            }
            b'}' | b']' => {
                self.copy(&[b]);
                if self.depth <= MAX_DEPTH {
                    self.frames.pop();
                }
                self.depth = self.depth.saturating_sub(1);
                self.expect_key = false;
                if let Some((depth, place)) = self.capturing {
                    if self.depth < depth {
                        self.capturing = None;
                        if self.capture_overflow {
                            out.usage.mark_malformed();
                        } else {
                            out.usage.merge_json(&self.capture);
                        }
                        if place == Place::Final {
                            out.final_usage = true;
                        }
                    }
                }
            }
            _ => self.copy(&[b]),
        }
    }

    /// Whether an object opening under `parent` is a usage object we read.
    fn usage_place(&self, parent: Option<Frame>) -> Option<Place> {
        let parent = parent?;
        if !parent.object || parent.key != Key::Usage {
            return None;
        }
        match self.depth {
            1 => Some(Place::Final),
            2 => match self.frames.first().map(|f| f.key) {
                Some(Key::Response) => Some(Place::Final),
                Some(Key::Message) => Some(Place::Provisional),
                _ => None,
            },
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Reading the field name.
    Field,
    /// In a `data:` value.
    Data,
    /// In a field we ignore, or a comment.
    Skip,
}

/// Splits a `text/event-stream` body into events and scans each event's data.
#[derive(Debug)]
pub struct SseReader {
    line: Line,
    field: [u8; MAX_FIELD],
    field_len: usize,
    after_cr: bool,
    skip_space: bool,
    data_lines: u32,
    json: JsonScanner,
}

impl Default for SseReader {
    fn default() -> Self {
        SseReader {
            line: Line::Field,
            field: [0; MAX_FIELD],
            field_len: 0,
            after_cr: false,
            skip_space: false,
            data_lines: 0,
            json: JsonScanner::default(),
        }
    }
}

impl SseReader {
    pub fn feed(&mut self, bytes: &[u8], out: &mut Findings) {
        let mut i = 0;
        while i < bytes.len() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            if self.line == Line::Data {
                if self.skip_space {
                    self.skip_space = false;
                    if bytes[i] == b' ' {
                        i += 1;
                        continue;
                    }
                }
                let start = i;
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                self.json.feed(&bytes[start..i], out);
                if i == bytes.len() {
                    break;
                }
            }
            let b = bytes[i];
            i += 1;
            if b == b'\n' || b == b'\r' {
                self.after_cr = b == b'\r';
                self.end_line(out);
                continue;
            }
            match self.line {
                Line::Field if b == b':' => {
                    if &self.field[..self.field_len] == b"data" && self.field_len == 4 {
                        if self.data_lines > 0 {
                            // Data lines of one event join with a newline.
                            self.json.feed(b"\n", out);
                        }
                        self.line = Line::Data;
                        self.skip_space = true;
                    } else {
                        self.line = Line::Skip;
                    }
                }
                Line::Field => {
                    if self.field_len < MAX_FIELD {
                        self.field[self.field_len] = b;
                        self.field_len += 1;
                    } else {
                        self.line = Line::Skip;
                    }
                }
                Line::Data | Line::Skip => {}
            }
        }
    }

    fn end_line(&mut self, out: &mut Findings) {
        match self.line {
            Line::Field if self.field_len == 0 => self.dispatch(out),
            Line::Data => self.data_lines += 1,
            _ => {}
        }
        self.line = Line::Field;
        self.field_len = 0;
        self.skip_space = false;
    }

    fn dispatch(&mut self, out: &mut Findings) {
        if self.data_lines > 0 && self.json.had_content() {
            out.content_events += 1;
        }
        self.data_lines = 0;
        self.json.reset();
    }

    /// The body ended: an event without its closing blank line still counts.
    pub fn finish(&mut self, out: &mut Findings) {
        if self.line == Line::Data {
            self.data_lines += 1;
        }
        self.dispatch(out);
        self.line = Line::Field;
    }
}

/// A response body reader: SSE or one JSON document.
#[derive(Debug)]
pub enum BodyReader {
    Json(JsonScanner),
    Sse(SseReader),
}

impl BodyReader {
    pub fn for_content_type(content_type: &[u8]) -> BodyReader {
        let is_sse = content_type
            .split(|&b| b == b';')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"));
        if is_sse {
            BodyReader::Sse(SseReader::default())
        } else {
            BodyReader::Json(JsonScanner::default())
        }
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Findings) {
        match self {
            BodyReader::Json(j) => j.feed(bytes, out),
            BodyReader::Sse(s) => s.feed(bytes, out),
        }
    }

    pub fn finish(&mut self, out: &mut Findings) {
        match self {
            BodyReader::Json(j) => {
                if j.had_content() {
                    out.content_events += 1;
                }
            }
            BodyReader::Sse(s) => s.finish(out),
        }
    }
}

/// Bytes at the start of a body that are read in full: where Anthropic's `message_start`
/// (input and cache counts) is.
pub const HEAD: usize = 4096;
/// Bytes at the end of a body that are kept: where the final usage is (OpenAI's last chunk,
/// Anthropic's `message_delta`, the end of a Responses `response.completed` event, the end of a
/// JSON body).
pub const WINDOW: usize = 4096;

/// Reads a response body for its usage touching as few bytes as it can: the first [`HEAD`]
/// bytes are scanned in full and the last [`WINDOW`] bytes kept for the end; of every chunk in
/// between, only the last [`WINDOW`] bytes are fetched ([`ResponseReader::wanted`]). At the
/// end, events that lie whole in the window are read exactly; an event cut by the window's
/// start (a large `response.completed`, or a large JSON body) is searched for its last `usage`
/// object. Content events in the skipped middle are estimated from the rate seen in the
/// scanned parts.
#[derive(Debug)]
pub struct ResponseReader {
    sse: bool,
    head: BodyReader,
    /// Body bytes seen so far.
    offset: u64,
    /// Where the head scan stopped.
    head_end: u64,
    window: Vec<u8>,
    window_start: u64,
}

impl ResponseReader {
    pub fn for_content_type(content_type: &[u8]) -> ResponseReader {
        let head = BodyReader::for_content_type(content_type);
        ResponseReader { sse: matches!(head, BodyReader::Sse(_)), head, offset: 0, head_end: 0, window: Vec::new(), window_start: 0 }
    }

    fn in_head(&self) -> bool {
        self.head_end == self.offset && (self.head_end as usize) < HEAD
    }

    /// Which part of the next chunk (of `len` bytes) to fetch: `(start, length)`.
    pub fn wanted(&self, len: usize) -> (usize, usize) {
        if self.in_head() {
            (0, len)
        } else {
            let n = len.min(WINDOW);
            (len - n, n)
        }
    }

    /// Feeds the end of a chunk of `chunk_len` bytes: `part` is its last `part.len()` bytes,
    /// normally what [`ResponseReader::wanted`] asked for (all of it while in the head).
    pub fn feed(&mut self, part: &[u8], chunk_len: usize, out: &mut Findings) {
        let chunk_len = chunk_len.max(part.len());
        let skipped = chunk_len - part.len();
        let mut bytes = part;
        if skipped == 0 && self.in_head() {
            let h = bytes.len().min(HEAD - self.head_end as usize);
            self.head.feed(&bytes[..h], out);
            self.head_end += h as u64;
            bytes = &bytes[h..];
        }
        if !bytes.is_empty() {
            let at = self.offset + (chunk_len - bytes.len()) as u64;
            if at != self.window_start + self.window.len() as u64 || self.window.is_empty() {
                self.window.clear();
                self.window_start = at;
            }
            if bytes.len() >= WINDOW {
                self.window.clear();
                self.window.extend_from_slice(&bytes[bytes.len() - WINDOW..]);
                self.window_start = at + (bytes.len() - WINDOW) as u64;
            } else {
                let excess = (self.window.len() + bytes.len()).saturating_sub(WINDOW);
                if excess > 0 {
                    self.window.drain(..excess);
                    self.window_start += excess as u64;
                }
                self.window.extend_from_slice(bytes);
            }
        }
        self.offset += chunk_len as u64;
    }

    /// The body ended (or was cut): reads what the window holds and estimates the rest.
    pub fn finish(&mut self, out: &mut Findings) {
        let window = std::mem::take(&mut self.window);
        let mut scanned = self.head_end;
        if window.is_empty() || self.window_start == self.head_end {
            // Nothing was skipped: one exact pass.
            self.head.feed(&window, out);
            self.head.finish(out);
            return;
        }
        self.head.finish(out);
        let head_events = out.content_events;
        let mut tail = Findings { usage: out.usage, final_usage: out.final_usage, content_events: 0 };
        let whole_from = if self.sse { event_boundary(&window) } else { window.len() };
        if let Some(object) = last_usage_object(&window[..whole_from]) {
            tail.usage.merge_json(object);
            tail.final_usage = true;
        }
        if whole_from < window.len() {
            let mut reader = SseReader::default();
            reader.feed(&window[whole_from..], &mut tail);
            reader.finish(&mut tail);
            scanned += (window.len() - whole_from) as u64;
        }
        let skipped = self.offset.saturating_sub(scanned);
        let seen_events = head_events + tail.content_events;
        let estimated = if scanned > 0 { (u128::from(skipped) * u128::from(seen_events) / u128::from(scanned)) as u64 } else { 0 };
        *out = Findings { usage: tail.usage, final_usage: tail.final_usage, content_events: seen_events + estimated };
    }
}

/// Where the first whole SSE event in `bytes` starts (after the first blank line), or the end.
fn event_boundary(bytes: &[u8]) -> usize {
    let mut i = 0;
    let mut line_start = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' || b == b'\r' {
            let end = if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') { i + 2 } else { i + 1 };
            if i == line_start && i > 0 {
                return end;
            }
            line_start = end;
            i = end;
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// The last `"usage": {...}` object in a piece of JSON whose beginning is missing. Inside a
/// JSON string every quote is escaped, so an unescaped `"usage"` followed by `:` is a key.
fn last_usage_object(bytes: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"usage\"";
    let mut end = bytes.len();
    while let Some(at) = bytes[..end].windows(KEY.len()).rposition(|w| w == KEY) {
        end = at;
        let backslashes = bytes[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            continue;
        }
        let rest = &bytes[at + KEY.len()..];
        let mut i = rest.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(rest.len());
        if rest.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        i += rest[i..].iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(rest.len() - i);
        if rest.get(i) != Some(&b'{') {
            continue;
        }
        if let Some(len) = object_len(&rest[i..]) {
            return Some(&rest[i..i + len]);
        }
    }
    None
}

/// The length of the JSON object at the start of `bytes`, if it closes within [`MAX_CAPTURE`].
fn object_len(bytes: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escape) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate().take(MAX_CAPTURE) {
        if in_string {
            match b {
                _ if escape => escape = false,
                b'\\' => escape = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{Unreadable, Usage};

    fn u(input: u64, cached: u64, output: u64) -> Result<Usage, Unreadable> {
        Ok(Usage { input, cached, output })
    }

    /// Feeds `body` to a fresh reader split at every cut in `cuts`, then finishes.
    fn read_split(content_type: &str, body: &[u8], cuts: &[usize]) -> Findings {
        let mut reader = BodyReader::for_content_type(content_type.as_bytes());
        let mut out = Findings::default();
        let mut last = 0;
        for &cut in cuts.iter().filter(|&&c| c > 0 && c < body.len()) {
            if cut > last {
                reader.feed(&body[last..cut], &mut out);
                last = cut;
            }
        }
        reader.feed(&body[last..], &mut out);
        reader.finish(&mut out);
        out
    }

    /// Every split into two pieces, every split into single bytes, and a few three-way splits
    /// must all find the same thing as reading the body whole.
    fn read_all_ways(content_type: &str, body: &[u8]) -> Findings {
        let whole = read_split(content_type, body, &[]);
        let key = |f: &Findings| (f.usage.usage(), f.final_usage, f.content_events);
        for cut in 1..body.len() {
            assert_eq!(key(&read_split(content_type, body, &[cut])), key(&whole), "split at {cut} of {:?}", String::from_utf8_lossy(body));
        }
        let bytes: Vec<usize> = (1..body.len()).collect();
        assert_eq!(key(&read_split(content_type, body, &bytes)), key(&whole), "byte by byte");
        for step in [3, 7, 13] {
            let cuts: Vec<usize> = (1..body.len()).filter(|c| c % step == 0).collect();
            assert_eq!(key(&read_split(content_type, body, &cuts)), key(&whole), "every {step} bytes");
        }
        whole
    }

    const OPENAI_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hé \"usage\": {\"prompt_tokens\": 999} ☃","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":"fp"}"#;

    const OPENAI_SSE: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé☃\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    const RESPONSES_SSE: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"usage\":null},\"sequence_number\":0}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"m\",\"delta\":\"word1\",\"sequence_number\":1}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"m\",\"delta\":\" word2\",\"sequence_number\":2}\n\n",
        "event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"text\":\"word1 word2\",\"sequence_number\":3}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\",\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"word1 word2\"}]}],\"usage\":{\"input_tokens\":36,\"input_tokens_details\":{\"cached_tokens\":6},\"output_tokens\":2,\"total_tokens\":38}},\"sequence_number\":4}\n\n",
    );

    const ANTHROPIC_SSE: &str = concat!(
        "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude\",\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\r\n\r\n",
        "event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n",
        "event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n",
        ": a comment line\r\n",
        "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Héllo\"}}\r\n\r\n",
        "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\": 1}\"}}\r\n\r\n",
        "event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n",
        "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\r\n\r\n",
        "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
    );

    /// name, content type, body, usage, final usage seen, content events
    type Case<'a> = (&'a str, &'a str, &'a str, Result<Usage, Unreadable>, bool, u64);
    type LongCase<'a> = (&'a str, &'a str, &'a [u8], Result<Usage, Unreadable>);

    #[test]
    fn provider_bodies_split_every_way() {
        let cases: Vec<Case> = vec![
            ("openai chat json", "application/json", OPENAI_JSON, u(15, 4, 10), true, 0),
            ("openai chat sse", "text/event-stream; charset=utf-8", OPENAI_SSE, u(7, 0, 2), true, 2),
            ("openai responses sse", "text/event-stream", RESPONSES_SSE, u(30, 6, 2), true, 2),
            ("anthropic sse, CRLF", "text/event-stream", ANTHROPIC_SSE, u(25, 10, 15), true, 2),
            (
                "anthropic json",
                "application/json",
                r#"{"id":"msg","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":1,"output_tokens":5}}"#,
                u(3, 1, 5),
                true,
                0,
            ),
            (
                "responses json",
                "application/json",
                r#"{"id":"resp","object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"usage"}]}],"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":2,"total_tokens":5}}"#,
                u(3, 0, 2),
                true,
                0,
            ),
        ];
        for (name, ct, body, want, final_usage, content) in cases {
            let f = read_all_ways(ct, body.as_bytes());
            assert_eq!(f.usage.usage(), want, "{name}");
            assert_eq!(f.final_usage, final_usage, "{name}");
            assert_eq!(f.content_events, content, "{name}");
        }
    }

    #[test]
    fn usage_in_the_wrong_place_is_ignored() {
        let cases = [
            // Inside a string (escaped quotes), nested under other keys, or not an object.
            r#"{"choices":[{"message":{"content":"{\"usage\":{\"prompt_tokens\":5}}"}}]}"#,
            r#"{"data":{"usage":{"prompt_tokens":5,"completion_tokens":1}}}"#,
            r#"{"metadata":{"note":"x"},"usage":null}"#,
            r#"{"usage":"5 tokens"}"#,
            r#"[{"usage":{"prompt_tokens":5}}]"#,
            r#"{"response":{"output":{"usage":{"prompt_tokens":5}}}}"#,
        ];
        for body in cases {
            let f = read_all_ways("application/json", body.as_bytes());
            assert_eq!(f.usage.usage(), Err(Unreadable::Missing), "{body}");
            assert!(!f.final_usage, "{body}");
        }
    }

    #[test]
    fn an_anthropic_stream_cut_before_message_delta_has_only_provisional_usage() {
        let cut = ANTHROPIC_SSE.find("event: message_delta").unwrap();
        let f = read_all_ways("text/event-stream", &ANTHROPIC_SSE.as_bytes()[..cut]);
        assert!(!f.final_usage);
        assert_eq!(f.usage.input_so_far(), Some((25, 10)));
        assert_eq!(f.usage.output_so_far(), Some(1));
        assert_eq!(f.content_events, 2);
    }

    #[test]
    fn multi_line_data_and_odd_framing() {
        // Two data lines joined by a newline form one JSON document; `data:` without a space;
        // LF, CR and CRLF line ends mixed; an unknown field; an event without a final blank line.
        let body = "id: 1\ndata:{\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":4,\r\ndata: \"completion_tokens\":6}}\rretry: 10\n\n";
        let f = read_all_ways("text/event-stream", body.as_bytes());
        assert_eq!(f.usage.usage(), u(4, 0, 6));
        let body = "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}";
        let f = read_all_ways("text/event-stream", body.as_bytes());
        assert_eq!(f.usage.usage(), u(1, 0, 2), "an event cut before its blank line still counts");
        // A field name that is only a prefix of `data`, or longer than any real one.
        let body = "dat: {\"usage\":{\"prompt_tokens\":1}}\n\ndataaaaaaaaa: {\"usage\":{\"prompt_tokens\":1}}\n\n";
        let f = read_all_ways("text/event-stream", body.as_bytes());
        assert_eq!(f.usage.usage(), Err(Unreadable::Missing));
    }

    #[test]
    fn malformed_and_hostile_bodies_never_panic_and_stay_bounded() {
        let huge_usage = format!("{{\"usage\":{{\"prompt_tokens\":1,\"pad\":\"{}\"}}}}", "x".repeat(MAX_CAPTURE));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_objects = format!("{}\"usage\":{{\"prompt_tokens\":1}}{}", "{\"a\":".repeat(100), "}".repeat(100));
        let cases: Vec<(String, Result<Usage, Unreadable>)> = vec![
            (OPENAI_JSON[..OPENAI_JSON.len() / 2].to_string(), Err(Unreadable::Missing)),
            (OPENAI_JSON[..OPENAI_JSON.len() - 40].to_string(), Err(Unreadable::Missing)),
            (huge_usage, Err(Unreadable::Malformed)),
            (deep, Err(Unreadable::Missing)),
            (deep_objects, Err(Unreadable::Missing)),
            ("}}}]]]{{{\"usage\":{\"prompt_tokens\":2}".to_string(), Err(Unreadable::Missing)),
            ("\u{0}\u{ff}garbage\"\\".to_string(), Err(Unreadable::Missing)),
            (r#"{"usage":{"prompt_tokens":-1,"completion_tokens":2}}"#.to_string(), Err(Unreadable::Malformed)),
            (r#"{"usage":{"prompt_tokens":1e3,"completion_tokens":2}}"#.to_string(), Err(Unreadable::Malformed)),
        ];
        for (body, want) in cases {
            let mut reader = BodyReader::for_content_type(b"application/json");
            let mut out = Findings::default();
            reader.feed(body.as_bytes(), &mut out);
            reader.finish(&mut out);
            assert_eq!(out.usage.usage(), want, "{}", &body[..body.len().min(80)]);
            if let BodyReader::Json(j) = &reader {
                assert!(j.frames.capacity() <= 64 && j.capture.capacity() <= 2 * MAX_CAPTURE, "memory stays bounded");
            }
        }
        // The same garbage as SSE.
        let mut sse = SseReader::default();
        let mut out = Findings::default();
        sse.feed(b"data: {\"usage\": {\"prompt_tokens\": \xff\xfe}}\n\ndata: \n\n\n\n:\r\r\r\n", &mut out);
        sse.finish(&mut out);
        assert_eq!(out.usage.usage(), Err(Unreadable::Malformed));
    }

    /// Feeds `body` as Envoy would deliver it in chunks of `chunk` bytes, fetching only what the
    /// reader asks for, as the filter does.
    fn read_fetching(content_type: &str, body: &[u8], chunk: usize) -> Findings {
        let mut reader = ResponseReader::for_content_type(content_type.as_bytes());
        let mut out = Findings::default();
        let mut fetched = 0;
        for c in body.chunks(chunk.max(1)) {
            let (start, len) = reader.wanted(c.len());
            fetched += len;
            reader.feed(&c[start..start + len], c.len(), &mut out);
        }
        reader.finish(&mut out);
        if body.len() > 8 * (HEAD + WINDOW) && chunk >= 4 * WINDOW && chunk * 8 < body.len() {
            assert!(fetched < body.len() / 2, "fetched {fetched} of {}", body.len());
        }
        out
    }

    fn long_openai_stream(events: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for i in 0..events {
            body.extend_from_slice(format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" wörd{i}\"}}}}],\"usage\":null}}\n\n").as_bytes());
        }
        body.extend_from_slice(format!("data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":{events}}}}}\n\ndata: [DONE]\n\n").as_bytes());
        body
    }

    #[test]
    fn head_and_tail_reading_finds_usage_in_long_bodies() {
        let events = 20_000;
        let openai = long_openai_stream(events);
        // Responses: a completed event holding the whole output, larger than the window.
        let text = "x\\\"usage\\\":{\\\"input_tokens\\\":999} ".repeat(2000);
        let responses = format!(
            "event: response.created\ndata: {{\"type\":\"response.created\",\"response\":{{\"usage\":null}}}}\n\n{}event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"output\":[{{\"content\":[{{\"text\":\"{text}\"}}]}}],\"tools\":[{{\"parameters\":{{\"properties\":{{\"usage\":{{\"type\":\"integer\"}}}}}}}}],\"usage\":{{\"input_tokens\":36,\"input_tokens_details\":{{\"cached_tokens\":6}},\"output_tokens\":500}},\"user\":null,\"metadata\":{{}}}}}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"word \"}\n\n".repeat(500)
        );
        let mut anthropic = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n");
        for _ in 0..3000 {
            anthropic.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hé\"}}\n\n");
        }
        anthropic.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3000}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        let json = format!(r#"{{"id":"c","choices":[{{"message":{{"content":"{}"}}}}],"usage":{{"prompt_tokens":4,"completion_tokens":7000}}}}"#, "y".repeat(50_000));
        let cases: Vec<LongCase> = vec![
            ("openai", "text/event-stream", &openai, u(9, 0, events as u64)),
            ("responses", "text/event-stream", responses.as_bytes(), u(30, 6, 500)),
            ("anthropic", "text/event-stream", anthropic.as_bytes(), u(25, 10, 3000)),
            ("json", "application/json", json.as_bytes(), u(4, 0, 7000)),
        ];
        for (name, ct, body, want) in cases {
            for chunk in [1, 100, 4095, 4096, 4097, 16 * 1024, 65536, body.len()] {
                let f = read_fetching(ct, body, chunk);
                assert_eq!(f.usage.usage(), want, "{name} in chunks of {chunk}");
                assert!(f.final_usage, "{name} {chunk}");
            }
        }
        // The content estimate for the skipped middle is close to the real count.
        for chunk in [1, 1000, 16 * 1024] {
            let est = read_fetching("text/event-stream", &openai, chunk).content_events as f64;
            assert!((est - events as f64).abs() / (events as f64) < 0.01, "{est} in chunks of {chunk}");
        }
        // A body that fits in head and window is read exactly.
        let short = long_openai_stream(30);
        assert!(short.len() < HEAD + WINDOW);
        assert_eq!(read_fetching("text/event-stream", &short, 7).content_events, 30);
    }

    #[test]
    fn a_cut_long_stream_has_no_final_usage() {
        let openai = long_openai_stream(5000);
        let cut = &openai[..openai.len() - 200];
        let f = read_fetching("text/event-stream", cut, 16 * 1024);
        assert!(!f.final_usage);
        assert!(f.content_events > 4000 && f.content_events < 5100, "{}", f.content_events);
        assert_eq!(last_usage_object(br#"x", "usage": 5, "y": {"usage": {"a": 1}}, "z": "\"usage\":{}"#), Some(&br#"{"a": 1}"#[..]));
        assert_eq!(last_usage_object(br#"\\"usage":{"a":{"b":[1,"}"]}}"#), Some(&br#"{"a":{"b":[1,"}"]}}"#[..]));
        assert_eq!(last_usage_object(br#""usage":{"a":1"#), None);
        assert_eq!(event_boundary(b"abc\r\n\r\ndata: x"), 7);
        assert_eq!(event_boundary(b"abc\n\ndata"), 5);
        assert_eq!(event_boundary(b"\ndata: x\n\n"), 10, "a line end first ends the cut line");
        assert_eq!(event_boundary(b"no boundary"), 11);
    }

    #[test]
    fn a_long_stream_is_read_in_constant_memory() {
        let mut sse = SseReader::default();
        let mut out = Findings::default();
        let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"}}],\"usage\":null}\n\n";
        for _ in 0..20_000 {
            sse.feed(event.as_bytes(), &mut out);
        }
        sse.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":20000}}\n\ndata: [DONE]\n\n", &mut out);
        sse.finish(&mut out);
        assert_eq!(out.usage.usage(), u(3, 0, 20_000));
        assert_eq!(out.content_events, 20_000);
        assert!(sse.json.capture.capacity() <= MAX_CAPTURE && sse.json.frames.capacity() <= MAX_DEPTH * 2);
    }
}
