//! CSV records: a streaming RFC 4180 reader that keeps what the `csv` crate throws away.
//!
//! - whether each field was quoted, so `""` (an empty string) and an empty field (NULL) differ,
//!   as with `psql \copy`;
//! - a per-record size limit: a longer record keeps only its first `limit` bytes and the rest is
//!   skipped (quotes still tracked), so one 256 MB line never sits in memory;
//! - a quote that is never closed is an error naming the line where the field opened, instead of
//!   a last record that silently swallows the rest of the file.
//!
//! Otherwise it reads what the `csv` crate reads: `,` between fields, `\n`, `\r\n` or `\r`
//! between records, blank lines skipped, `""` inside a quoted field for a quote, bytes after a
//! closing quote appended as they are, a leading UTF-8 BOM dropped.

use std::io::Read;

use memchr::{memchr2, memchr3};

/// Bytes read from the input at a time.
const BUFFER: usize = 256 * 1024;

/// One record: its fields' bytes (unquoted and unescaped) back to back.
#[derive(Debug, Default, Clone)]
pub struct Record {
    data: Vec<u8>,
    /// Each field's end in `data`, with [`QUOTED`] set when it started with a quote.
    ends: Vec<usize>,
    line: u64,
    too_long: bool,
    /// The field cut by the limit has been closed; nothing more is kept.
    cut_closed: bool,
}

/// The flag in an end offset that marks a quoted field.
const QUOTED: usize = 1 << (usize::BITS - 1);

impl Record {
    pub fn new() -> Self {
        Self::default()
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.too_long = false;
        self.cut_closed = false;
    }

    /// Number of fields (of what was kept, for a record over the limit).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i`'s bytes.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1] & !QUOTED
        };
        &self.data[start..self.ends[i] & !QUOTED]
    }

    /// Whether field `i` started with a quote.
    pub fn quoted(&self, i: usize) -> bool {
        self.ends[i] & QUOTED != 0
    }

    /// The 1-based line the record starts on.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The record was longer than the limit; only its beginning was kept.
    pub fn too_long(&self) -> bool {
        self.too_long
    }

    /// Appends bytes to the current field, up to the limit (fields count one byte each).
    #[inline]
    fn push(&mut self, bytes: &[u8], limit: usize) {
        if self.too_long {
            return;
        }
        let used = self.data.len() + self.ends.len();
        if used + bytes.len() > limit {
            self.data
                .extend_from_slice(&bytes[..limit.saturating_sub(used)]);
            self.too_long = true;
        } else {
            self.data.extend_from_slice(bytes);
        }
    }

    #[inline]
    fn end_field(&mut self, quoted: bool, limit: usize) {
        if self.too_long {
            // Keep the field the limit cut, so the record's beginning reads as it was.
            if !self.cut_closed {
                self.ends
                    .push(self.data.len() | if quoted { QUOTED } else { 0 });
                self.cut_closed = true;
            }
            return;
        }
        if self.data.len() + self.ends.len() >= limit {
            self.too_long = true;
            self.cut_closed = true;
            return;
        }
        self.ends
            .push(self.data.len() | if quoted { QUOTED } else { 0 });
    }
}

/// Why a CSV stream couldn't be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("CSV: line {line}: unterminated quoted field (the quote opened on line {line} is never closed)")]
    UnterminatedQuote { line: u64 },
    /// The layer below (a file or a zip entry) failed while the record on `line` was read.
    #[error("{source} (reading CSV line {line})")]
    Read { line: u64, source: std::io::Error },
}

#[derive(Clone, Copy)]
enum State {
    /// At the start of a field.
    Start,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the end of the field, or the first of `""`.
    QuoteInQuoted,
}

/// Reads records one at a time into a reused [`Record`].
pub struct RecordReader<R> {
    input: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    started: bool,
    line: u64,
    limit: usize,
}

impl<R: Read> RecordReader<R> {
    /// `limit` bounds the bytes kept per record (at least 1).
    pub fn new(input: R, limit: usize) -> Self {
        Self {
            input,
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            end: 0,
            started: false,
            line: 1,
            limit: limit.max(1),
        }
    }

    /// Refills the buffer when it is used up; `false` at the end of the input.
    fn fill(&mut self) -> Result<bool, RecordError> {
        if self.pos < self.end {
            return Ok(true);
        }
        loop {
            match self.input.read(&mut self.buf) {
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    if !self.started {
                        self.started = true;
                        if self.buf[..n].starts_with(b"\xef\xbb\xbf") {
                            self.pos = 3;
                            if n == 3 {
                                continue;
                            }
                        }
                    }
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(RecordError::Read {
                        line: self.line,
                        source,
                    })
                }
            }
        }
    }

    /// Reads the next record; `false` at the end of the input.
    pub fn read(&mut self, rec: &mut Record) -> Result<bool, RecordError> {
        rec.clear();
        // Blank lines (and the `\n` of a `\r\n`) between records.
        loop {
            if !self.fill()? {
                return Ok(false);
            }
            match self.buf[self.pos] {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b'\r' => self.pos += 1,
                _ => break,
            }
        }
        rec.line = self.line;
        let limit = self.limit;
        let mut state = State::Start;
        let mut quoted = false;
        let mut opened = 0;
        loop {
            if !self.fill()? {
                if let State::Quoted = state {
                    return Err(RecordError::UnterminatedQuote { line: opened });
                }
                rec.end_field(quoted, limit);
                return Ok(true);
            }
            // Scan what is buffered in one go; the state carries over a refill.
            let buf = &self.buf[..self.end];
            let mut pos = self.pos;
            let mut line = self.line;
            let done = loop {
                if pos == buf.len() {
                    break false;
                }
                match state {
                    State::Start => match buf[pos] {
                        b'"' => {
                            quoted = true;
                            opened = line;
                            state = State::Quoted;
                            pos += 1;
                        }
                        b',' => {
                            rec.end_field(false, limit);
                            pos += 1;
                        }
                        b'\n' | b'\r' => {
                            rec.end_field(false, limit);
                            break true;
                        }
                        _ => state = State::Unquoted,
                    },
                    State::Unquoted => {
                        let start = pos;
                        pos = find_unquoted_end(buf, pos);
                        rec.push(&buf[start..pos], limit);
                        if pos == buf.len() {
                            break false;
                        }
                        rec.end_field(quoted, limit);
                        quoted = false;
                        if buf[pos] != b',' {
                            // The terminator is consumed as a blank line by the next read.
                            break true;
                        }
                        pos += 1;
                        state = State::Start;
                    }
                    State::Quoted => match memchr2(b'"', b'\n', &buf[pos..]) {
                        None => {
                            rec.push(&buf[pos..], limit);
                            pos = buf.len();
                        }
                        Some(i) => {
                            if buf[pos + i] == b'\n' {
                                rec.push(&buf[pos..=pos + i], limit);
                                line += 1;
                            } else {
                                rec.push(&buf[pos..pos + i], limit);
                                state = State::QuoteInQuoted;
                            }
                            pos += i + 1;
                        }
                    },
                    State::QuoteInQuoted => match buf[pos] {
                        b'"' => {
                            rec.push(b"\"", limit);
                            state = State::Quoted;
                            pos += 1;
                        }
                        b',' => {
                            rec.end_field(quoted, limit);
                            quoted = false;
                            state = State::Start;
                            pos += 1;
                        }
                        b'\n' | b'\r' => {
                            rec.end_field(quoted, limit);
                            break true;
                        }
                        _ => state = State::Unquoted,
                    },
                }
            };
            self.pos = pos;
            self.line = line;
            if done {
                return Ok(true);
            }
        }
    }
}

/// Bytes that end an unquoted field.
const ENDS_UNQUOTED: [bool; 256] = {
    let mut t = [false; 256];
    t[b',' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t
};

/// The end of the unquoted field starting at `pos`: a byte loop for short fields (most), then
/// memchr for long ones.
#[inline]
fn find_unquoted_end(buf: &[u8], mut pos: usize) -> usize {
    let short = (pos + 32).min(buf.len());
    while pos < short {
        if ENDS_UNQUOTED[buf[pos] as usize] {
            return pos;
        }
        pos += 1;
    }
    match memchr3(b',', b'\n', b'\r', &buf[pos..]) {
        Some(i) => pos + i,
        None => buf.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the tests see it: line, fields with quoted-ness, too long.
    type Seen = (u64, Vec<(String, bool)>, bool);

    /// Every record of `input`, read in one go and three bytes at a time (which must agree).
    fn read_all(input: &[u8], limit: usize) -> Result<Vec<Seen>, String> {
        // A tiny reader exercises every buffer boundary.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        for trickle in [false, true] {
            let input: Box<dyn Read> = if trickle {
                Box::new(Trickle(input))
            } else {
                Box::new(input)
            };
            let mut r = RecordReader::new(input, limit);
            let mut rec = Record::new();
            let mut got = Vec::new();
            while r.read(&mut rec).map_err(|e| e.to_string())? {
                let fields = (0..rec.len())
                    .map(|i| {
                        (
                            String::from_utf8_lossy(rec.get(i)).into_owned(),
                            rec.quoted(i),
                        )
                    })
                    .collect();
                got.push((rec.line(), fields, rec.too_long()));
            }
            if trickle {
                assert_eq!(got, out, "trickled reads differ");
            } else {
                out = got;
            }
        }
        Ok(out)
    }

    fn fields(input: &str) -> Vec<Vec<(String, bool)>> {
        read_all(input.as_bytes(), 1 << 20)
            .unwrap()
            .into_iter()
            .map(|r| r.1)
            .collect()
    }

    fn f(s: &str, q: bool) -> (String, bool) {
        (s.to_string(), q)
    }

    /// Quoting, escaped quotes, empty vs quoted-empty, all three terminators and blank lines.
    #[test]
    fn reads_rfc4180() {
        assert_eq!(
            fields("a,\"b,c\",\"\",,\"x\"\"y\"\r\n\n\r\n1,\"two\nlines\"\r3\n"),
            vec![
                vec![
                    f("a", false),
                    f("b,c", true),
                    f("", true),
                    f("", false),
                    f("x\"y", true)
                ],
                vec![f("1", false), f("two\nlines", true)],
                vec![f("3", false)],
            ]
        );
        assert_eq!(fields("a,"), vec![vec![f("a", false), f("", false)]]);
        assert_eq!(fields("\"\""), vec![vec![f("", true)]]);
        assert_eq!(
            fields("\"ab\"cd,e\"f"),
            vec![vec![f("abcd", true), f("e\"f", false)]]
        );
        assert_eq!(fields("\u{feff}\"h\"\n"), vec![vec![f("h", true)]]);
        assert!(fields("").is_empty());
        assert!(fields("\n\r\n").is_empty());
    }

    /// Records carry the line they start on, counting newlines inside quotes.
    #[test]
    fn line_numbers() {
        let got = read_all(b"h\n\"a\nb\"\n\nc\r\nd", 100).unwrap();
        let lines: Vec<u64> = got.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![1, 2, 5, 6]);
    }

    /// A quote that never closes is an error naming the line where it opened.
    #[test]
    fn unterminated_quote() {
        let err = read_all(b"id,v\n164,ok\n165,\"abc\n166,x\n167,y\n", 100).unwrap_err();
        assert!(err.contains("line 3: unterminated quoted field"), "{err}");
    }

    /// A record over the limit keeps only its beginning; the next record is read normally.
    #[test]
    fn size_limit() {
        let long = format!("1,{}\n2,\"{}\n\"\n3,ok\n", "x".repeat(50), "y".repeat(50));
        let got = read_all(long.as_bytes(), 20).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got[0].2 && got[1].2 && !got[2].2);
        assert_eq!(got[2].0, 4);
        assert_eq!(got[2].1, vec![f("3", false), f("ok", false)]);
        let commas = ",".repeat(100);
        let got = read_all(commas.as_bytes(), 10).unwrap();
        assert!(got[0].2);
        assert!(got[0].1.len() <= 10);
    }
}
