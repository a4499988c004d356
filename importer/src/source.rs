//! Input files: a payload JSON (`{"module_name": …, "data": "<base64 zip>"}`), a zip holding one
//! CSV, or a bare CSV.
//!
//! [`fingerprint`] hashes the bytes as delivered (BLAKE3), so an identical re-delivery is
//! recognised before anything is decoded. [`prepare`] then makes one streaming pass that, for a
//! payload, decodes the base64 straight into an anonymous temp file. Neither the payload nor the CSV is ever held in memory, and the temp file
//! has no name, so it is gone on success, error, panic and even `SIGKILL`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Why an input was refused before any row was read. The message starts with the layer that
/// failed (JSON, base64, zip) and says where.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    /// `at` is the byte offset in the payload (a problem inside the `data` string carries its
    /// offset in the message).
    #[error("JSON: byte {at}: {problem}")]
    Json { at: u64, problem: String },
    #[error("base64: the \"data\" string (from byte {at}) is not valid base64: {source}")]
    Base64 { at: u64, source: std::io::Error },
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("zip: must hold exactly one CSV file, found {0}")]
    ZipEntries(usize),
}

/// What kind of input a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Payload,
    Zip,
    Csv,
}

impl Kind {
    /// Sniffs the first bytes: `{` is a payload, `PK\x03\x04` a zip, anything else CSV.
    pub fn sniff(file: &mut File) -> std::io::Result<Self> {
        let mut head = [0u8; 64];
        file.rewind()?;
        let n = file.read(&mut head)?;
        file.rewind()?;
        let head = &head[..n];
        Ok(if head.starts_with(b"PK\x03\x04") {
            Self::Zip
        } else if head
            .iter()
            .find(|c| !c.is_ascii_whitespace())
            .is_some_and(|&c| c == b'{')
        {
            Self::Payload
        } else {
            Self::Csv
        })
    }
}

/// An input after its first pass: decoded, ready to be read as CSV (more than once, if a
/// load has to restart on its staging path).
#[derive(Debug)]
pub struct Prepared {
    /// The payload's `module_name`, for payloads.
    pub module: Option<String>,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Zip(File),
    Csv(File),
}

impl Prepared {
    /// Runs `f` over the CSV bytes, inflating a zip entry on the fly.
    pub fn with_csv<T>(&self, f: impl FnOnce(&mut dyn Read) -> T) -> Result<T, SourceError> {
        match &self.body {
            Body::Csv(file) => {
                let mut file = file.try_clone()?;
                file.rewind()?;
                Ok(f(&mut file))
            }
            Body::Zip(file) => {
                let mut file = file.try_clone()?;
                file.rewind()?;
                let mut archive = zip::ZipArchive::new(BufReader::new(file))?;
                let index = single_entry(&mut archive)?;
                let entry = archive.by_index(index)?;
                let name = entry.name().to_string();
                let out = f(&mut ZipEntry { entry, name });
                Ok(out)
            }
        }
    }
}

/// A zip entry whose read errors name the layer and the entry (a damaged deflate stream or a
/// bad checksum shows up only while the CSV is read).
struct ZipEntry<R> {
    entry: R,
    name: String,
}

impl<R: Read> Read for ZipEntry<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.entry
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("zip: entry {:?}: {e}", self.name)))
    }
}

fn single_entry<R: Read + Seek>(archive: &mut zip::ZipArchive<R>) -> Result<usize, SourceError> {
    let mut files = Vec::new();
    for i in 0..archive.len() {
        if archive.by_index_raw(i)?.is_file() {
            files.push(i);
        }
    }
    match files.as_slice() {
        [one] => Ok(*one),
        _ => Err(SourceError::ZipEntries(files.len())),
    }
}

/// BLAKE3 of the input as delivered, hex. A payload names its module inside its bytes; for a
/// zip or CSV the module it is loaded as is hashed in front, so the same bytes loaded as two
/// modules are two different contents.
pub fn fingerprint(file: &mut File, kind: Kind, module: &str) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    if kind != Kind::Payload {
        hasher.update(module.as_bytes());
        hasher.update(&[0]);
    }
    file.rewind()?;
    hasher.update_reader(&mut *file)?;
    file.rewind()?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// First pass over an input file. `temp_dir` receives the decoded zip of a payload.
pub fn prepare(mut file: File, kind: Kind, temp_dir: &Path) -> Result<Prepared, SourceError> {
    file.rewind()?;
    match kind {
        Kind::Csv => Ok(Prepared {
            module: None,
            body: Body::Csv(file),
        }),
        Kind::Zip => {
            let mut archive = zip::ZipArchive::new(BufReader::new(file.try_clone()?))?;
            single_entry(&mut archive)?;
            Ok(Prepared {
                module: None,
                body: Body::Zip(file),
            })
        }
        Kind::Payload => {
            let input = BufReader::with_capacity(256 * 1024, file);
            let zip = tempfile::tempfile_in(temp_dir)?;
            let module = decode_payload(input, &zip)?;
            let mut archive = zip::ZipArchive::new(BufReader::new(zip.try_clone()?))?;
            single_entry(&mut archive)?;
            Ok(Prepared {
                module: Some(module),
                body: Body::Zip(zip),
            })
        }
    }
}

/// A streaming reader of the payload JSON that knows its byte offset, for error messages.
struct Json<R> {
    input: R,
    at: u64,
}

/// A JSON-level problem met inside the `data` string, passed through the base64 decoder.
#[derive(Debug)]
struct InString {
    at: u64,
    problem: String,
}

impl std::fmt::Display for InString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}", self.at, self.problem)
    }
}

impl std::error::Error for InString {}

/// Nesting allowed in values the importer skips.
const MAX_DEPTH: usize = 512;

impl<R: BufRead> Json<R> {
    fn err(&self, problem: impl Into<String>) -> SourceError {
        SourceError::Json {
            at: self.at,
            problem: problem.into(),
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, SourceError> {
        Ok(self.input.fill_buf()?.first().copied())
    }

    fn consume(&mut self, n: usize) {
        self.input.consume(n);
        self.at += n as u64;
    }

    fn next(&mut self, what: &str) -> Result<u8, SourceError> {
        let c = self
            .peek()?
            .ok_or_else(|| self.err(format!("end of input inside {what}")))?;
        self.consume(1);
        Ok(c)
    }

    /// Skips JSON whitespace (space, tab, CR, LF only) and peeks.
    fn skip_ws(&mut self) -> Result<Option<u8>, SourceError> {
        loop {
            match self.peek()? {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.consume(1),
                other => return Ok(other),
            }
        }
    }

    fn expect(&mut self, want: u8) -> Result<(), SourceError> {
        match self.skip_ws()? {
            Some(c) if c == want => {
                self.consume(1);
                Ok(())
            }
            Some(c) => Err(self.err(format!(
                "expected {:?}, found {:?}",
                want as char, c as char
            ))),
            None => Err(self.err(format!("expected {:?}, found end of input", want as char))),
        }
    }

    fn hex4(&mut self) -> Result<u32, SourceError> {
        let mut v = 0;
        for _ in 0..4 {
            let c = self.next("a \\u escape")?;
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| self.err("bad \\u escape"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }

    /// The character of a `\u` escape (after `\u`), surrogate pairs included.
    fn unicode_escape(&mut self) -> Result<char, SourceError> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.next("a string")? != b'\\' || self.next("a string")? != b'u' {
                return Err(self.err("unpaired surrogate in \\u escape"));
            }
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("unpaired surrogate in \\u escape"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("unpaired surrogate in \\u escape"))
    }

    /// The character a simple escape stands for (after the backslash), or `None` for `\u`.
    fn escape(&mut self) -> Result<Option<char>, SourceError> {
        Ok(Some(match self.next("a string")? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'u' => return Ok(None),
            _ => return Err(self.err("bad escape in string")),
        }))
    }

    /// Reads a short JSON string (after its opening quote), up to `limit` bytes, or skips one of
    /// any length without keeping it (`limit` = `None`). Either way the string is checked: no
    /// control characters, valid escapes, valid UTF-8.
    fn string(&mut self, limit: Option<usize>) -> Result<String, SourceError> {
        let mut out = Vec::new();
        let mut utf8 = Utf8::default();
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Err(self.err("unterminated string"));
            }
            // A run of plain bytes at once.
            let run = buf
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(buf.len());
            if !utf8.feed(&buf[..run]) {
                return Err(self.err("string is not UTF-8"));
            }
            if let Some(limit) = limit {
                if out.len() + run > limit {
                    return Err(self.err(format!("string longer than {limit} bytes")));
                }
                out.extend_from_slice(&buf[..run]);
            }
            let stop = buf.get(run).copied();
            self.consume(run);
            match stop {
                None => {}
                Some(b'"') => {
                    self.consume(1);
                    if !utf8.complete() {
                        return Err(self.err("string is not UTF-8"));
                    }
                    break;
                }
                Some(b'\\') => {
                    if !utf8.complete() {
                        return Err(self.err("string is not UTF-8"));
                    }
                    self.consume(1);
                    let c = match self.escape()? {
                        Some(c) => c,
                        None => self.unicode_escape()?,
                    };
                    if let Some(limit) = limit {
                        let mut b = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                        if out.len() > limit {
                            return Err(self.err(format!("string longer than {limit} bytes")));
                        }
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))
    }

    /// Skips a JSON number, checking its grammar.
    fn number(&mut self) -> Result<(), SourceError> {
        let bad = |j: &Self| j.err("bad number");
        let digits = |j: &mut Self| -> Result<usize, SourceError> {
            let mut n = 0;
            while j.peek()?.is_some_and(|c| c.is_ascii_digit()) {
                j.consume(1);
                n += 1;
            }
            Ok(n)
        };
        if self.peek()? == Some(b'-') {
            self.consume(1);
        }
        match self.peek()? {
            Some(b'0') => self.consume(1),
            Some(b'1'..=b'9') => {
                digits(self)?;
            }
            _ => return Err(bad(self)),
        }
        if self.peek()? == Some(b'.') {
            self.consume(1);
            if digits(self)? == 0 {
                return Err(bad(self));
            }
        }
        if matches!(self.peek()?, Some(b'e' | b'E')) {
            self.consume(1);
            if matches!(self.peek()?, Some(b'+' | b'-')) {
                self.consume(1);
            }
            if digits(self)? == 0 {
                return Err(bad(self));
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), SourceError> {
        for &w in word {
            if self.peek()? != Some(w) {
                return Err(self.err("bad literal"));
            }
            self.consume(1);
        }
        Ok(())
    }

    /// Skips any JSON value without holding it (used for keys the importer doesn't know),
    /// checking it is well-formed.
    fn skip_value(&mut self) -> Result<(), SourceError> {
        // One entry per open container: is it an object, and is the next thing a key?
        let mut stack: Vec<bool> = Vec::new();
        loop {
            // A value.
            let c = self
                .skip_ws()?
                .ok_or_else(|| self.err("end of input inside a value"))?;
            match c {
                b'"' => {
                    self.consume(1);
                    self.string(None)?;
                }
                b'{' | b'[' => {
                    self.consume(1);
                    if stack.len() == MAX_DEPTH {
                        return Err(self.err("values nested too deeply"));
                    }
                    let object = c == b'{';
                    let close = if object { b'}' } else { b']' };
                    if self.skip_ws()? == Some(close) {
                        self.consume(1);
                    } else {
                        stack.push(object);
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                c => return Err(self.err(format!("unexpected {:?}", c as char))),
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&object) = stack.last() else {
                    return Ok(());
                };
                let close = if object { b'}' } else { b']' };
                match self.skip_ws()? {
                    Some(b',') => {
                        self.consume(1);
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.consume(1);
                        stack.pop();
                    }
                    _ => {
                        return Err(
                            self.err(format!("expected ',' or {:?} in a value", close as char))
                        )
                    }
                }
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Result<(), SourceError> {
        self.expect(b'"')?;
        self.string(None)?;
        self.expect(b':')
    }
}

/// Incremental UTF-8 validation across buffer boundaries.
#[derive(Default)]
struct Utf8 {
    /// Continuation bytes still expected, and the bytes of the character so far.
    pending: Vec<u8>,
    need: usize,
}

impl Utf8 {
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if bytes.is_ascii() && self.need == 0 {
            return true;
        }
        // Finish a character split across buffers first.
        while self.need > 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return true;
            };
            self.pending.push(b);
            self.need -= 1;
            bytes = rest;
            if self.need == 0 {
                if std::str::from_utf8(&self.pending).is_err() {
                    return false;
                }
                self.pending.clear();
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) => match e.error_len() {
                Some(_) => false,
                None => {
                    // An incomplete character at the end: keep it for the next buffer.
                    let tail = &bytes[e.valid_up_to()..];
                    let width = match tail[0] {
                        0xC2..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        _ => 4,
                    };
                    self.pending = tail.to_vec();
                    self.need = width - tail.len();
                    true
                }
            },
        }
    }

    fn complete(&self) -> bool {
        self.need == 0
    }
}

/// The characters of a JSON string holding base64, unescaped, without line breaks (escaped
/// `\n` and `\r`, as some encoders wrap base64). Ends at the closing quote.
struct Base64Chars<'a, R> {
    json: &'a mut Json<R>,
    done: bool,
}

impl<R: BufRead> Base64Chars<'_, R> {
    fn in_string(e: SourceError) -> std::io::Error {
        let inner = match e {
            SourceError::Io(e) => return e,
            SourceError::Json { at, problem } => InString { at, problem },
            e => InString {
                at: 0,
                problem: e.to_string(),
            },
        };
        std::io::Error::new(std::io::ErrorKind::InvalidData, inner)
    }
}

impl<R: BufRead> Read for Base64Chars<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && !self.done {
            let avail = self.json.input.fill_buf()?;
            if avail.is_empty() {
                return Err(Self::in_string(
                    self.json.err("payload ends inside the \"data\" string"),
                ));
            }
            let window = &avail[..avail.len().min(buf.len() - n)];
            let run = window
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(window.len());
            buf[n..n + run].copy_from_slice(&window[..run]);
            n += run;
            let stop = window.get(run).copied();
            self.json.consume(run);
            match stop {
                None => {}
                Some(b'"') => {
                    self.json.consume(1);
                    self.done = true;
                }
                Some(b'\\') => {
                    self.json.consume(1);
                    let c = match self.json.escape().map_err(Self::in_string)? {
                        Some(c) => c,
                        None => self.json.unicode_escape().map_err(Self::in_string)?,
                    };
                    if c != '\n' && c != '\r' {
                        // Anything but ASCII is no base64 symbol; the decoder says so.
                        buf[n] = if c.is_ascii() { c as u8 } else { 0xff };
                        n += 1;
                    }
                }
                Some(_) => {
                    return Err(Self::in_string(
                        self.json.err("control character in string"),
                    ))
                }
            }
        }
        Ok(n)
    }
}

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Scans the payload object, streaming `data` through a base64 decoder into `out`.
/// Returns `module_name`.
fn decode_payload(input: impl BufRead, out: impl Write) -> Result<String, SourceError> {
    let mut json = Json { input, at: 0 };
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    json.expect(b'{')?;
    let mut module = None;
    let mut data = false;
    if json.skip_ws()? == Some(b'}') {
        json.consume(1);
    } else {
        loop {
            json.expect(b'"')?;
            let key = json.string(Some(1024))?;
            json.expect(b':')?;
            let twice = |json: &Json<_>| json.err(format!("key {key:?} appears twice"));
            match key.as_str() {
                "module_name" => {
                    if module.is_some() {
                        return Err(twice(&json));
                    }
                    json.expect(b'"')?;
                    module = Some(json.string(Some(1024))?);
                }
                "data" => {
                    if data {
                        return Err(twice(&json));
                    }
                    json.expect(b'"')?;
                    let start = json.at;
                    let chars = Base64Chars {
                        json: &mut json,
                        done: false,
                    };
                    let mut decoder = base64::read::DecoderReader::new(chars, &BASE64);
                    std::io::copy(&mut decoder, &mut out).map_err(|e| {
                        if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<InString>())
                        {
                            return SourceError::Json {
                                at: inner.at,
                                problem: inner.problem.clone(),
                            };
                        }
                        match e.kind() {
                            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                                SourceError::Base64 {
                                    at: start,
                                    source: e,
                                }
                            }
                            _ => SourceError::Io(e),
                        }
                    })?;
                    data = true;
                }
                _ => json.skip_value()?,
            }
            match json.skip_ws()? {
                Some(b',') => json.consume(1),
                Some(b'}') => {
                    json.consume(1);
                    break;
                }
                _ => return Err(json.err("expected ',' or '}' after a value")),
            }
        }
    }
    if json.skip_ws()?.is_some() {
        return Err(json.err("trailing bytes after the object"));
    }
    if !data {
        return Err(json.err("no \"data\" field"));
    }
    out.flush()?;
    module.ok_or_else(|| json.err("no \"module_name\" field"))
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn zip_of(name: &str, body: &[u8]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body).unwrap();
        w.finish().unwrap().into_inner()
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.rewind().unwrap();
        f
    }

    fn csv_of(p: &Prepared) -> String {
        p.with_csv(|r| {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        })
        .unwrap()
    }

    /// A payload decodes to its CSV whatever the key order, escapes and padding, small reads included.
    #[test]
    fn decodes_payloads() {
        let zip = zip_of("orders.csv", b"id\n1\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&zip);
        let escaped = b64.replace('/', "\\/");
        let wrapped: String = escaped
            .as_bytes()
            .chunks(10)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\\n");
        let unpadded = b64.trim_end_matches('=');
        for body in [
            format!(r#"{{"module_name": "orders", "data": "{b64}"}}"#),
            format!(
                r#" {{ "data":"{wrapped}", "extra": [1, {{"a": "b"}}, null], "module_name":"orders" }} "#
            ),
            format!(r#"{{"module_name":"orders","data":"{unpadded}"}}"#),
        ] {
            let mut f = file_with(body.as_bytes());
            assert_eq!(Kind::sniff(&mut f).unwrap(), Kind::Payload);
            assert_eq!(
                fingerprint(&mut f, Kind::Payload, "ignored").unwrap(),
                blake3::hash(body.as_bytes()).to_hex().to_string()
            );
            let p = prepare(f, Kind::Payload, &std::env::temp_dir()).unwrap();
            assert_eq!(p.module.as_deref(), Some("orders"));
            assert_eq!(csv_of(&p), "id\n1\n");
        }
    }

    /// Broken payloads are refused with a reason naming the problem.
    #[test]
    fn refuses_broken_payloads() {
        let zip = zip_of("a.csv", b"id\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&zip);
        let two = {
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            for n in ["a.csv", "b.csv"] {
                w.start_file(n, zip::write::SimpleFileOptions::default())
                    .unwrap();
                w.write_all(b"id\n").unwrap();
            }
            base64::engine::general_purpose::STANDARD.encode(w.finish().unwrap().into_inner())
        };
        let cases = [
            (
                r#"{"module_name":"m","data":"@@@@"}"#.to_string(),
                "not valid base64",
            ),
            (
                r#"{"module_name":"m","data":"aGVsbG8="}"#.to_string(),
                "zip",
            ),
            (
                format!(r#"{{"module_name":"m","data":"{two}"}}"#),
                "exactly one CSV file, found 2",
            ),
            (format!(r#"{{"data":"{b64}"}}"#), "no \"module_name\""),
            (r#"{"module_name":"m"}"#.to_string(), "no \"data\""),
            (
                format!(r#"{{"module_name":"m","data":"{b64}"#),
                "payload ends inside the \"data\" string",
            ),
            (r#"["x"]"#.to_string(), "JSON: byte 0: expected '{'"),
            (
                format!(r#"{{"module_name":"m","x":tru,"data":"{b64}"}}"#),
                "bad literal",
            ),
            (
                format!(r#"{{"module_name":"m","module_name":"m","data":"{b64}"}}"#),
                "appears twice",
            ),
        ];
        for (body, want) in cases {
            let err = prepare(
                file_with(body.as_bytes()),
                Kind::Payload,
                &std::env::temp_dir(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{body}: {err} should contain {want}");
        }
    }

    /// Zips and CSVs are sniffed, and their fingerprint depends on the module they load as.
    #[test]
    fn zips_and_csvs() {
        let zip = zip_of("x.csv", b"id\n2\n");
        let mut f = file_with(&zip);
        assert_eq!(Kind::sniff(&mut f).unwrap(), Kind::Zip);
        let hash = fingerprint(&mut f, Kind::Zip, "x").unwrap();
        assert_ne!(hash, fingerprint(&mut f, Kind::Zip, "y").unwrap());
        let p = prepare(f, Kind::Zip, &std::env::temp_dir()).unwrap();
        assert_eq!(csv_of(&p), "id\n2\n");
        let mut f = file_with(b"id\n3\n");
        assert_eq!(Kind::sniff(&mut f).unwrap(), Kind::Csv);
        let p = prepare(f, Kind::Csv, &std::env::temp_dir()).unwrap();
        assert_eq!(csv_of(&p), "id\n3\n");
    }
}
