//! Server-sent events framing (the WHATWG `text/event-stream` format): bytes in, whole events
//! out, whatever the chunk boundaries (inside a field name, a CRLF pair or a UTF-8
//! character). Memory is bounded: an event larger than the limit is an error, not a buffer
//! that grows.

/// Largest event accepted (field lines of one event together). Anthropic's events are a few
/// hundred bytes; a `message_start` with a long model name or an error is still far below.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized;

/// Splits a byte stream into events; call [`SseParser::push`] with each chunk.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The line being read (without its terminator).
    line: Vec<u8>,
    /// A `\r` ended the last chunk: a `\n` starting the next one belongs to it.
    after_cr: bool,
    event: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    limit: usize,
}

impl SseParser {
    pub fn new(limit: usize) -> SseParser {
        SseParser { limit, ..SseParser::default() }
    }

    /// Feeds a chunk; `on_event(event_name, data)` runs for each complete event.
    pub fn push(&mut self, mut input: &[u8], on_event: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), Oversized> {
        if self.after_cr {
            if let [b'\n', rest @ ..] = input {
                input = rest;
            }
            self.after_cr = false;
        }
        while !input.is_empty() {
            match input.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.line.extend_from_slice(input);
                    if self.line.len() + self.data.len() > self.limit {
                        return Err(Oversized);
                    }
                    return Ok(());
                }
                Some(end) => {
                    let terminator = input[end];
                    let line_done = if self.line.is_empty() {
                        self.field(&input[..end], on_event)
                    } else {
                        self.line.extend_from_slice(&input[..end]);
                        let line = std::mem::take(&mut self.line);
                        let r = self.field(&line, on_event);
                        self.line = line;
                        self.line.clear();
                        r
                    };
                    line_done?;
                    input = &input[end + 1..];
                    if terminator == b'\r' {
                        match input {
                            [b'\n', rest @ ..] => input = rest,
                            [] => self.after_cr = true,
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// One line of the stream: a field, a comment, or the blank line that ends an event.
    fn field(&mut self, line: &[u8], on_event: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), Oversized> {
        if line.is_empty() {
            if self.has_data {
                on_event(&self.event, &self.data);
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                if self.data.len() > self.limit {
                    return Err(Oversized);
                }
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(&value[..value.len().min(64)]);
            }
            _ => {}
        }
        Ok(())
    }

    /// True when nothing of an unfinished event is held.
    pub fn is_idle(&self) -> bool {
        self.line.is_empty() && !self.has_data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut |e, d| out.push((String::from_utf8_lossy(e).into_owned(), String::from_utf8_lossy(d).into_owned()))).unwrap();
        }
        out
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let stream = "event: message_start\ndata: {\"a\":1}\n\n: comment\r\nevent: ping\r\ndata: {\"b\":\"é\"}\r\n\r\ndata: line1\ndata:line2\n\nevent: x\rdata: y\r\r".as_bytes();
        let want = vec![
            ("message_start".to_string(), "{\"a\":1}".to_string()),
            ("ping".to_string(), "{\"b\":\"é\"}".to_string()),
            (String::new(), "line1\nline2".to_string()),
            ("x".to_string(), "y".to_string()),
        ];
        assert_eq!(events(&[stream]), want);
        for cut in 0..stream.len() {
            assert_eq!(events(&[&stream[..cut], &stream[cut..]]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytes), want);
    }

    #[test]
    fn an_unfinished_event_is_held_and_reported() {
        let mut p = SseParser::new(1024);
        let mut n = 0;
        p.push(b"data: {\"half", &mut |_, _| n += 1).unwrap();
        assert_eq!(n, 0);
        assert!(!p.is_idle());
        p.push(b"\"}\n\n", &mut |_, _| n += 1).unwrap();
        assert_eq!(n, 1);
        assert!(p.is_idle());
    }

    #[test]
    fn oversized_events_are_refused_not_buffered() {
        let mut p = SseParser::new(100);
        let big = vec![b'x'; 200];
        assert_eq!(p.push(b"data: ", &mut |_, _| {}), Ok(()));
        assert_eq!(p.push(&big, &mut |_, _| {}), Err(Oversized));
        let mut p = SseParser::new(100);
        let mut lines = Vec::new();
        for _ in 0..20 {
            lines.extend_from_slice(b"data: 0123456789\n");
        }
        assert_eq!(p.push(&lines, &mut |_, _| {}), Err(Oversized));
    }
}
