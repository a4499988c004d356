//! The hot loop: reads one CSV with a single reused `csv::ByteRecord`, maps its header onto a
//! registry type, validates every field and hands accepted rows to a [`RowSink`].
//!
//! Rows that fail go to a [`RejectLog`], a spill file, so a file full of bad rows still runs in
//! bounded memory. A header that doesn't match refuses the whole file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};

use csv::ByteRecord;

use crate::registry::{normalize_header, ColumnType, TypeDef};
use crate::value::{parse_field, Field};

/// Receives accepted rows, field by field, in registry column order.
pub trait RowSink {
    type Error;
    /// Starts a row that began on `line` of the file.
    fn begin(&mut self, line: u64);
    /// Appends the next column's value.
    fn field(&mut self, field: Field<'_>);
    /// Drops the row begun, after a field failed validation.
    fn rollback(&mut self);
    /// Completes the row; may flush a chunk to the database.
    fn end(&mut self) -> Result<(), Self::Error>;
}

/// Why a file was refused while parsing.
#[derive(Debug, thiserror::Error)]
pub enum ParseError<E> {
    #[error("header, column {column}: {problem}")]
    Header { column: usize, problem: String },
    #[error("line {line}: {source}")]
    Csv { line: u64, source: csv::Error },
    #[error("rejects spill file: {0}")]
    Spill(std::io::Error),
    #[error("interrupted")]
    Cancelled,
    #[error("{0}")]
    Sink(E),
}

impl<E> ParseError<E> {
    /// The same error with the sink's error mapped by `f`.
    pub fn map_sink<F>(self, f: impl FnOnce(E) -> F) -> ParseError<F> {
        match self {
            Self::Header { column, problem } => ParseError::Header { column, problem },
            Self::Csv { line, source } => ParseError::Csv { line, source },
            Self::Spill(e) => ParseError::Spill(e),
            Self::Cancelled => ParseError::Cancelled,
            Self::Sink(e) => ParseError::Sink(f(e)),
        }
    }
}

/// Row counts of one parse. `read == loaded + rejected` always holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub read: u64,
    pub loaded: u64,
    pub rejected: u64,
    /// The loaded rows' natural keys were strictly ascending, which proves the file repeats no
    /// key. Only decided for key types whose text form is canonical (ints, text, dates, bools).
    pub keys_ascending: bool,
}

/// Tracks whether natural keys arrive strictly ascending, in O(1) memory: each key is encoded
/// order-preservingly and compared with the previous one.
struct KeyOrder {
    is_key: Vec<bool>,
    tracking: bool,
    prev: Vec<u8>,
    cur: Vec<u8>,
    first: bool,
}

impl KeyOrder {
    fn new(def: &TypeDef) -> Self {
        let is_key: Vec<bool> = (0..def.columns.len())
            .map(|i| def.key.contains(&i))
            .collect();
        let canonical = def.key.iter().all(|&i| {
            matches!(
                def.columns[i].ty,
                ColumnType::Int
                    | ColumnType::BigInt
                    | ColumnType::Text
                    | ColumnType::Date
                    | ColumnType::Bool
            )
        });
        Self {
            is_key,
            tracking: canonical,
            prev: Vec::new(),
            cur: Vec::new(),
            first: true,
        }
    }

    fn push(&mut self, column: usize, field: &Field<'_>) {
        if !self.tracking || !self.is_key[column] {
            return;
        }
        match field {
            Field::Int(v) => self
                .cur
                .extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes()),
            Field::Bool(v) => self.cur.push(u8::from(*v)),
            // Validated text has no NUL, so the terminator keeps prefixes ordered first.
            Field::Text(t) | Field::Plain(t) => {
                self.cur.extend_from_slice(t.as_bytes());
                self.cur.push(0);
            }
            _ => self.tracking = false,
        }
    }

    fn row_rejected(&mut self) {
        self.cur.clear();
    }

    fn row_loaded(&mut self) {
        if !self.tracking {
            return;
        }
        if !self.first && self.cur <= self.prev {
            self.tracking = false;
        }
        self.first = false;
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.cur.clear();
    }
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    /// The column that failed, or `None` when the row as a whole was wrong.
    pub column: Option<String>,
    /// The record re-encoded as one CSV line.
    pub raw: String,
    pub reason: String,
}

/// Rejected rows, spilled to an anonymous temp file (gone when dropped, even on a crash).
pub struct RejectLog {
    out: BufWriter<File>,
    count: u64,
}

impl RejectLog {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            out: BufWriter::new(tempfile::tempfile()?),
            count: 0,
        })
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn put(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
        out.write_all(&(bytes.len() as u64).to_le_bytes())?;
        out.write_all(bytes)
    }

    pub fn push(&mut self, r: &Reject) -> std::io::Result<()> {
        self.out.write_all(&r.line.to_le_bytes())?;
        match &r.column {
            Some(c) => {
                self.out.write_all(&[1])?;
                Self::put(&mut self.out, c.as_bytes())?;
            }
            None => self.out.write_all(&[0])?,
        }
        Self::put(&mut self.out, r.raw.as_bytes())?;
        Self::put(&mut self.out, r.reason.as_bytes())?;
        self.count += 1;
        Ok(())
    }

    /// Reads the rejects back, in file order.
    pub fn read_back(self) -> std::io::Result<RejectIter> {
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(RejectIter {
            input: BufReader::new(file),
            left: self.count,
        })
    }
}

/// Iterator over a [`RejectLog`].
pub struct RejectIter {
    input: BufReader<File>,
    left: u64,
}

impl RejectIter {
    fn u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.input.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn string(&mut self) -> std::io::Result<String> {
        let n = self.u64()? as usize;
        let mut b = vec![0u8; n];
        self.input.read_exact(&mut b)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    fn next_reject(&mut self) -> std::io::Result<Reject> {
        let line = self.u64()?;
        let mut tag = [0u8; 1];
        self.input.read_exact(&mut tag)?;
        let column = if tag[0] == 1 {
            Some(self.string()?)
        } else {
            None
        };
        Ok(Reject {
            line,
            column,
            raw: self.string()?,
            reason: self.string()?,
        })
    }
}

impl Iterator for RejectIter {
    type Item = std::io::Result<Reject>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(self.next_reject())
    }
}

fn raw_record(rec: &ByteRecord) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_byte_record(rec);
    let mut bytes = w.into_inner().unwrap_or_default();
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Maps header fields onto the type's columns: `result[column] = Some(field index)`.
pub fn map_header<E>(
    def: &TypeDef,
    header: &ByteRecord,
) -> Result<Vec<Option<usize>>, ParseError<E>> {
    let mut by_name = HashMap::new();
    for (i, c) in def.columns.iter().enumerate() {
        for h in std::iter::once(&c.name).chain(&c.aliases) {
            by_name.insert(normalize_header(h), i);
        }
    }
    let mut source = vec![None; def.columns.len()];
    for (pos, field) in header.iter().enumerate() {
        let bad = |problem: String| ParseError::Header {
            column: pos + 1,
            problem,
        };
        let name = std::str::from_utf8(field).map_err(|_| bad("header is not UTF-8".into()))?;
        let col = *by_name.get(&normalize_header(name)).ok_or_else(|| {
            bad(format!(
                "{name:?} is not a column or alias of type {}",
                def.module
            ))
        })?;
        if source[col].replace(pos).is_some() {
            return Err(bad(format!(
                "{name:?} repeats column {}",
                def.columns[col].name
            )));
        }
    }
    for (c, s) in def.columns.iter().zip(&source) {
        if c.required && s.is_none() {
            return Err(ParseError::Header {
                column: 0,
                problem: format!("required column {} is missing", c.name),
            });
        }
    }
    Ok(source)
}

/// Parses one CSV file into `sink`, spilling bad rows to `rejects`. `progress` is called with
/// row counts every few thousand rows and at the end; when it returns `false` the parse stops
/// with [`ParseError::Cancelled`].
pub fn parse_csv<R: Read, S: RowSink>(
    input: R,
    def: &TypeDef,
    sink: &mut S,
    rejects: &mut RejectLog,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<Counts, ParseError<S::Error>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .from_reader(input);
    let mut rec = ByteRecord::new();
    let mut counts = Counts::default();
    let csv_err = |rec: &ByteRecord, source| ParseError::Csv {
        line: rec.position().map_or(0, |p| p.line()),
        source,
    };
    if !rdr
        .read_byte_record(&mut rec)
        .map_err(|e| csv_err(&rec, e))?
    {
        return Ok(counts);
    }
    let source = map_header(def, &rec)?;
    let width = rec.len();
    let mut order = KeyOrder::new(def);
    let mut since_progress = 0u64;
    'rows: while rdr
        .read_byte_record(&mut rec)
        .map_err(|e| csv_err(&rec, e))?
    {
        counts.read += 1;
        since_progress += 1;
        if since_progress == 8192 {
            if !progress(since_progress) {
                return Err(ParseError::Cancelled);
            }
            since_progress = 0;
        }
        let line = rec.position().map_or(0, |p| p.line());
        if rec.len() != width {
            let reject = Reject {
                line,
                column: None,
                raw: raw_record(&rec),
                reason: format!("expected {width} fields, found {}", rec.len()),
            };
            rejects.push(&reject).map_err(ParseError::Spill)?;
            counts.rejected += 1;
            continue;
        }
        sink.begin(line);
        for (ci, (col, src)) in def.columns.iter().zip(&source).enumerate() {
            let field = match src {
                Some(i) => parse_field(col.ty, col.required, &rec[*i]),
                None => Ok(Field::Null),
            };
            match field {
                Ok(f) => {
                    order.push(ci, &f);
                    sink.field(f);
                }
                Err(reason) => {
                    sink.rollback();
                    order.row_rejected();
                    let reject = Reject {
                        line,
                        column: Some(col.name.clone()),
                        raw: raw_record(&rec),
                        reason,
                    };
                    rejects.push(&reject).map_err(ParseError::Spill)?;
                    counts.rejected += 1;
                    continue 'rows;
                }
            }
        }
        sink.end().map_err(ParseError::Sink)?;
        order.row_loaded();
        counts.loaded += 1;
    }
    if !progress(since_progress) {
        return Err(ParseError::Cancelled);
    }
    counts.keys_ascending = order.tracking;
    Ok(counts)
}

/// Encodes rows in PostgreSQL's `COPY … FROM STDIN` text format, in chunks.
pub struct CopyEncoder<F> {
    buf: Vec<u8>,
    row_start: usize,
    tenant: Vec<u8>,
    with_line: bool,
    chunk: usize,
    flush: F,
}

/// Bytes per chunk handed to the COPY stream.
pub const COPY_CHUNK: usize = 256 * 1024;

fn copy_escape(buf: &mut Vec<u8>, s: &[u8]) {
    if !s.iter().any(|c| matches!(c, b'\\' | b'\n' | b'\r' | b'\t')) {
        buf.extend_from_slice(s);
        return;
    }
    for &c in s {
        match c {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            c => buf.push(c),
        }
    }
}

impl<F, E> CopyEncoder<F>
where
    F: FnMut(Vec<u8>) -> Result<(), E>,
{
    /// `with_line` prefixes each row with its line number (staging tables).
    pub fn new(tenant: &str, with_line: bool, flush: F) -> Self {
        let mut t = Vec::new();
        copy_escape(&mut t, tenant.as_bytes());
        Self {
            buf: Vec::with_capacity(COPY_CHUNK + 4096),
            row_start: 0,
            tenant: t,
            with_line,
            chunk: COPY_CHUNK,
            flush,
        }
    }

    /// Hands over what is left.
    pub fn finish(mut self) -> Result<(), E> {
        if self.buf.is_empty() {
            return Ok(());
        }
        (self.flush)(std::mem::take(&mut self.buf))
    }
}

impl<F, E> RowSink for CopyEncoder<F>
where
    F: FnMut(Vec<u8>) -> Result<(), E>,
{
    type Error = E;

    fn begin(&mut self, line: u64) {
        self.row_start = self.buf.len();
        if self.with_line {
            self.buf
                .extend_from_slice(itoa::Buffer::new().format(line).as_bytes());
            self.buf.push(b'\t');
        }
        self.buf.extend_from_slice(&self.tenant);
    }

    fn field(&mut self, field: Field<'_>) {
        self.buf.push(b'\t');
        match field {
            Field::Null => self.buf.extend_from_slice(b"\\N"),
            Field::Int(v) => self
                .buf
                .extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
            Field::Float(v) => {
                let _ = write!(self.buf, "{v}");
            }
            Field::Bool(v) => self.buf.push(if v { b't' } else { b'f' }),
            Field::Text(s) => copy_escape(&mut self.buf, s.as_bytes()),
            Field::Plain(s) => self.buf.extend_from_slice(s.as_bytes()),
            Field::Stamp(s) => self.buf.extend_from_slice(s.as_str().as_bytes()),
        }
    }

    fn rollback(&mut self) {
        self.buf.truncate(self.row_start);
    }

    fn end(&mut self) -> Result<(), E> {
        self.buf.push(b'\n');
        if self.buf.len() >= self.chunk {
            let next = Vec::with_capacity(self.chunk + 4096);
            (self.flush)(std::mem::replace(&mut self.buf, next))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use std::path::Path;

    fn def() -> TypeDef {
        Registry::parse(
            Path::new("t.yaml"),
            "types:\n- module: m\n  natural_key: [id]\n  columns:\n  - {name: id, type: int, required: true, aliases: [ID Number]}\n  - {name: name, type: text}\n  - {name: day, type: date}\n",
        )
        .unwrap()
        .get("m")
        .unwrap()
        .clone()
    }

    fn encode(csv: &str) -> Result<(String, Counts, Vec<Reject>), String> {
        let mut out = Vec::new();
        let mut rejects = RejectLog::new().unwrap();
        let mut enc = CopyEncoder::new("acme", false, |chunk: Vec<u8>| {
            out.extend(chunk);
            Ok::<_, String>(())
        });
        let counts = parse_csv(csv.as_bytes(), &def(), &mut enc, &mut rejects, &mut |_| {
            true
        })
        .map_err(|e| e.to_string())?;
        enc.finish().unwrap();
        let rejects = rejects.read_back().unwrap().map(Result::unwrap).collect();
        Ok((String::from_utf8(out).unwrap(), counts, rejects))
    }

    /// Quoted commas, quoted newlines, CRLF, a BOM, aliases and UTF-8 come out as COPY text.
    #[test]
    fn encodes_edge_cases() {
        let csv = "\u{feff}ID Number,Name,day\r\n1,\"a, b\",2024-01-02\r\n2,\"line1\r\nline2\",\r\n3,\"tab\there \\ ünï\",\r\n";
        let (out, counts, rejects) = encode(csv).unwrap();
        assert_eq!(
            out,
            "acme\t1\ta, b\t2024-01-02\nacme\t2\tline1\\r\\nline2\t\\N\nacme\t3\ttab\\there \\\\ ünï\t\\N\n"
        );
        assert_eq!(
            counts,
            Counts {
                read: 3,
                loaded: 3,
                rejected: 0,
                keys_ascending: true,
            }
        );
        assert!(rejects.is_empty());
    }

    /// Bad rows are rejected with line, column and raw record; good rows around them still load.
    #[test]
    fn rejects_bad_rows() {
        let csv = "id,name,day\n1,a,2024-01-01\nx,b,2024-01-01\n3,c\n4,d,2024-01-01,extra\n5,\"e,f\",2024-02-30\n6,g,\n";
        let (out, counts, rejects) = encode(csv).unwrap();
        assert_eq!(out, "acme\t1\ta\t2024-01-01\nacme\t6\tg\t\\N\n");
        assert_eq!(
            counts,
            Counts {
                read: 6,
                loaded: 2,
                rejected: 4,
                keys_ascending: true,
            }
        );
        assert_eq!(rejects[0].line, 3);
        assert_eq!(rejects[0].column.as_deref(), Some("id"));
        assert_eq!(rejects[0].raw, "x,b,2024-01-01");
        assert_eq!(rejects[1].reason, "expected 3 fields, found 2");
        assert_eq!(rejects[1].column, None);
        assert_eq!(rejects[2].reason, "expected 3 fields, found 4");
        assert_eq!(rejects[3].raw, "5,\"e,f\",2024-02-30");
        assert_eq!(rejects[3].column.as_deref(), Some("day"));
    }

    /// An empty file and a header-only file load nothing and fail nothing.
    #[test]
    fn empty_and_header_only() {
        for csv in ["", "id,name\r\n"] {
            let c = encode(csv).unwrap().1;
            assert_eq!((c.read, c.loaded, c.rejected), (0, 0, 0));
        }
    }

    /// Keys are reported ascending only when every loaded key is greater than the one before.
    #[test]
    fn key_order() {
        let asc = |csv: &str| encode(csv).unwrap().1.keys_ascending;
        assert!(asc("id\n-5\n1\n2\n10\n"));
        assert!(asc("id\n1\nx\n2\n"), "a rejected row doesn't count");
        assert!(!asc("id\n1\n2\n2\n"));
        assert!(!asc("id\n10\n9\n"));
        assert!(!asc("id\n1\n3\n2\n4\n"));
    }

    /// Unknown, repeated or missing-required headers refuse the file.
    #[test]
    fn refuses_bad_headers() {
        assert!(encode("id,nam\n1,a\n")
            .unwrap_err()
            .contains("\"nam\" is not a column"));
        assert!(encode("id,ID Number\n1,1\n")
            .unwrap_err()
            .contains("repeats column id"));
        assert!(encode("name\na\n")
            .unwrap_err()
            .contains("required column id is missing"));
    }

    /// The staging encoder prefixes the line number; chunks flush past the chunk size.
    #[test]
    fn staging_lines_and_chunks() {
        let mut chunks = Vec::new();
        let mut rejects = RejectLog::new().unwrap();
        let mut enc = CopyEncoder::new("t\\1", true, |c: Vec<u8>| {
            chunks.push(c);
            Ok::<_, ()>(())
        });
        enc.chunk = 8;
        let csv = "id\n1\n2\n3\n";
        parse_csv(csv.as_bytes(), &def(), &mut enc, &mut rejects, &mut |_| {
            true
        })
        .unwrap();
        enc.finish().unwrap();
        let all: Vec<u8> = chunks.concat();
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "2\tt\\\\1\t1\t\\N\t\\N\n3\tt\\\\1\t2\t\\N\t\\N\n4\tt\\\\1\t3\t\\N\t\\N\n"
        );
        assert_eq!(chunks.len(), 3);
    }
}
