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

/// Why an input was refused before any row was read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    #[error("payload is not the expected JSON object: {0}")]
    Payload(String),
    #[error("payload data is not valid base64: {0}")]
    Base64(std::io::Error),
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("zip must hold exactly one CSV file, found {0}")]
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
                let mut entry = archive.by_index(index)?;
                Ok(f(&mut entry))
            }
        }
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
            let mut input = BufReader::with_capacity(256 * 1024, file);
            let zip = tempfile::tempfile_in(temp_dir)?;
            let module = decode_payload(&mut input, &zip)?;
            let mut archive = zip::ZipArchive::new(BufReader::new(zip.try_clone()?))?;
            single_entry(&mut archive)?;
            Ok(Prepared {
                module: Some(module),
                body: Body::Zip(zip),
            })
        }
    }
}

fn payload_err(msg: impl Into<String>) -> SourceError {
    SourceError::Payload(msg.into())
}

fn peek(input: &mut impl BufRead) -> Result<Option<u8>, SourceError> {
    Ok(input.fill_buf()?.first().copied())
}

fn skip_ws(input: &mut impl BufRead) -> Result<Option<u8>, SourceError> {
    loop {
        match peek(input)? {
            Some(c) if c.is_ascii_whitespace() => input.consume(1),
            other => return Ok(other),
        }
    }
}

fn expect(input: &mut impl BufRead, want: u8) -> Result<(), SourceError> {
    match skip_ws(input)? {
        Some(c) if c == want => {
            input.consume(1);
            Ok(())
        }
        Some(c) => Err(payload_err(format!(
            "expected {:?}, found {:?}",
            want as char, c as char
        ))),
        None => Err(payload_err(format!(
            "expected {:?}, found end of input",
            want as char
        ))),
    }
}

/// Reads a short JSON string (after its opening quote), up to `limit` bytes.
fn small_string(input: &mut impl BufRead, limit: usize) -> Result<String, SourceError> {
    let mut out = Vec::new();
    loop {
        let c = peek(input)?.ok_or_else(|| payload_err("unterminated string"))?;
        input.consume(1);
        match c {
            b'"' => break,
            b'\\' => {
                let e = peek(input)?.ok_or_else(|| payload_err("unterminated string"))?;
                input.consume(1);
                match e {
                    b'"' | b'\\' | b'/' => out.push(e),
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'u' => {
                        let mut hex = [0u8; 4];
                        input.read_exact(&mut hex)?;
                        let code = std::str::from_utf8(&hex)
                            .ok()
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .and_then(char::from_u32)
                            .ok_or_else(|| payload_err("bad \\u escape"))?;
                        let mut b = [0u8; 4];
                        out.extend_from_slice(code.encode_utf8(&mut b).as_bytes());
                    }
                    _ => return Err(payload_err("bad escape in string")),
                }
            }
            c => out.push(c),
        }
        if out.len() > limit {
            return Err(payload_err(format!("string longer than {limit} bytes")));
        }
    }
    String::from_utf8(out).map_err(|_| payload_err("string is not UTF-8"))
}

/// Skips any JSON value; used for keys the importer doesn't know.
fn skip_value(input: &mut impl BufRead) -> Result<(), SourceError> {
    let mut depth = 0usize;
    loop {
        let c = skip_ws(input)?.ok_or_else(|| payload_err("unexpected end of input"))?;
        match c {
            b'"' => {
                input.consume(1);
                small_string(input, usize::MAX)?;
            }
            b'{' | b'[' => {
                input.consume(1);
                depth += 1;
            }
            b'}' | b']' if depth > 0 => {
                input.consume(1);
                depth -= 1;
            }
            b',' | b':' if depth > 0 => input.consume(1),
            _ if depth > 0 || c.is_ascii_alphanumeric() || c == b'-' => {
                while peek(input)?.is_some_and(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
                {
                    input.consume(1);
                }
            }
            _ => return Err(payload_err(format!("unexpected {:?}", c as char))),
        }
        if depth == 0 {
            return Ok(());
        }
    }
}

/// The characters of a JSON string holding base64, without its escapes (`\/` becomes `/`,
/// escaped line breaks are dropped). Ends at the closing quote.
struct Base64Chars<'a, R> {
    input: &'a mut R,
    escape: bool,
    done: bool,
}

impl<R: BufRead> Read for Base64Chars<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && !self.done {
            let avail = self.input.fill_buf()?;
            if avail.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "payload ends inside the data string",
                ));
            }
            if self.escape {
                match avail[0] {
                    b'/' => {
                        buf[n] = b'/';
                        n += 1;
                    }
                    b'n' | b'r' => {}
                    c => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("unexpected escape \\{} in base64 data", c as char),
                        ))
                    }
                }
                self.escape = false;
                self.input.consume(1);
                continue;
            }
            let window = &avail[..avail.len().min(buf.len() - n)];
            let run = window
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .unwrap_or(window.len());
            buf[n..n + run].copy_from_slice(&window[..run]);
            n += run;
            if run < window.len() {
                if window[run] == b'"' {
                    self.done = true;
                } else {
                    self.escape = true;
                }
                self.input.consume(run + 1);
            } else {
                self.input.consume(run);
            }
        }
        Ok(n)
    }
}

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Scans the payload object, streaming `data` through a base64 decoder into `zip`.
/// Returns `module_name`.
fn decode_payload(input: &mut impl BufRead, zip: &File) -> Result<String, SourceError> {
    expect(input, b'{')?;
    let mut module = None;
    let mut data = false;
    if skip_ws(input)? == Some(b'}') {
        input.consume(1);
    } else {
        loop {
            expect(input, b'"')?;
            let key = small_string(input, 1024)?;
            expect(input, b':')?;
            match key.as_str() {
                "module_name" => {
                    expect(input, b'"')?;
                    module = Some(small_string(input, 1024)?);
                }
                "data" => {
                    expect(input, b'"')?;
                    let chars = Base64Chars {
                        input: &mut *input,
                        escape: false,
                        done: false,
                    };
                    let mut decoder = base64::read::DecoderReader::new(chars, &BASE64);
                    let mut out = BufWriter::with_capacity(256 * 1024, zip);
                    std::io::copy(&mut decoder, &mut out).map_err(|e| match e.kind() {
                        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                            SourceError::Base64(e)
                        }
                        _ => SourceError::Io(e),
                    })?;
                    out.flush()?;
                    data = true;
                }
                _ => skip_value(input)?,
            }
            match skip_ws(input)? {
                Some(b',') => input.consume(1),
                Some(b'}') => {
                    input.consume(1);
                    break;
                }
                _ => return Err(payload_err("expected ',' or '}' after a value")),
            }
        }
    }
    if skip_ws(input)?.is_some() {
        return Err(payload_err("trailing bytes after the object"));
    }
    if !data {
        return Err(payload_err("no \"data\" field"));
    }
    module.ok_or_else(|| payload_err("no \"module_name\" field"))
}

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
                "not valid base64",
            ),
            (r#"["x"]"#.to_string(), "expected '{'"),
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
