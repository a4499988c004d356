//! The hot loop: reads one CSV with a single reused [`Record`], maps its header onto a
//! registry type, validates every field and hands accepted rows to a [`RowSink`].
//!
//! Rows that fail go to a [`RejectLog`], a spill file, so a file full of bad rows still runs in
//! bounded memory; so does a record over the size limit, which is never held whole. A header
//! that doesn't match, or a quote that never closes, refuses the whole file.

use std::collections::HashMap;
use std::io::Read;

use crate::record::{Record, RecordError, RecordReader};
use crate::registry::{normalize_header, ColumnType, TypeDef};
use crate::reject::{raw_record, Reject, RejectLog};
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

/// Why a file was refused while parsing. The sink's own failure is [`ParseError::Sink`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError<E> {
    #[error("CSV header, column {column}: {problem}")]
    Header { column: usize, problem: String },
    /// A quote never closed (CSV), or the layer below failed (its message names it).
    #[error("{0}")]
    Csv(#[from] RecordError),
    #[error("rejects spill file: {0}")]
    Spill(std::io::Error),
    #[error("interrupted")]
    Cancelled,
    #[error("{0}")]
    Sink(E),
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

/// Maps header fields onto the type's columns: `result[column] = Some(field index)`.
pub fn map_header<E>(def: &TypeDef, header: &Record) -> Result<Vec<Option<usize>>, ParseError<E>> {
    let mut by_name = HashMap::new();
    for (i, c) in def.columns.iter().enumerate() {
        for h in std::iter::once(c.name.as_str()).chain(c.aliases.iter().map(String::as_str)) {
            by_name.insert(normalize_header(h), i);
        }
    }
    if header.too_long() {
        return Err(ParseError::Header {
            column: 0,
            problem: "the header is longer than the record size limit".into(),
        });
    }
    let mut source = vec![None; def.columns.len()];
    for pos in 0..header.len() {
        let field = header.get(pos);
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
                def.columns[col].name.as_str()
            )));
        }
    }
    for (c, s) in def.columns.iter().zip(&source) {
        if c.required && s.is_none() {
            return Err(ParseError::Header {
                column: 0,
                problem: format!("required column {} is missing", c.name.as_str()),
            });
        }
    }
    Ok(source)
}

/// Parses one CSV file into `sink`, spilling bad rows to `rejects`. Records longer than
/// `max_record` bytes are rejected without being held whole. `progress` is called with the
/// counts so far every few thousand rows and at the end; when it returns `false` the parse stops with
/// [`ParseError::Cancelled`].
pub fn parse_csv<R: Read, S: RowSink>(
    input: R,
    def: &TypeDef,
    max_record: usize,
    sink: &mut S,
    rejects: &mut RejectLog,
    progress: &mut dyn FnMut(&Counts) -> bool,
) -> Result<Counts, ParseError<S::Error>> {
    let mut rdr = RecordReader::new(input, max_record);
    let mut rec = Record::new();
    let mut counts = Counts::default();
    if !rdr.read(&mut rec)? {
        return Ok(counts);
    }
    let source = map_header(def, &rec)?;
    let width = rec.len();
    let mut order = KeyOrder::new(def);
    let mut since_progress = 0u64;
    let mut reject = |rec: &Record,
                      column: Option<String>,
                      reason: String|
     -> Result<(), ParseError<S::Error>> {
        rejects
            .push(&Reject {
                line: rec.line(),
                column,
                raw: raw_record(rec),
                reason,
            })
            .map_err(ParseError::Spill)
    };
    'rows: while rdr.read(&mut rec)? {
        counts.read += 1;
        since_progress += 1;
        if since_progress == 8192 {
            if !progress(&counts) {
                return Err(ParseError::Cancelled);
            }
            since_progress = 0;
        }
        if rec.too_long() {
            reject(
                &rec,
                None,
                format!("record longer than {max_record} bytes (max_record_bytes)"),
            )?;
            counts.rejected += 1;
            continue;
        }
        if rec.len() != width {
            let reason = format!("expected {width} fields, found {}", rec.len());
            reject(&rec, None, reason)?;
            counts.rejected += 1;
            continue;
        }
        sink.begin(rec.line());
        for (ci, (col, src)) in def.columns.iter().zip(&source).enumerate() {
            let field = match src {
                Some(i) => parse_field(col.ty, col.required, rec.get(*i), rec.quoted(*i)),
                None if col.required => Err("required value is empty".to_string()),
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
                    reject(&rec, Some(col.name.as_str().to_string()), reason)?;
                    counts.rejected += 1;
                    continue 'rows;
                }
            }
        }
        sink.end().map_err(ParseError::Sink)?;
        order.row_loaded();
        counts.loaded += 1;
    }
    counts.keys_ascending = order.tracking;
    if !progress(&counts) {
        return Err(ParseError::Cancelled);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::CopyEncoder;
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
        let counts = parse_csv(
            csv.as_bytes(),
            &def(),
            1 << 20,
            &mut enc,
            &mut rejects,
            &mut |_| true,
        )
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

    /// `""` is an empty string in text and NULL elsewhere; an unquoted empty field is NULL.
    #[test]
    fn quoted_empty_vs_empty() {
        let (out, ..) = encode("id,name,day\n1,\"\",\"\"\n2,,\n").unwrap();
        assert_eq!(out, "acme\t1\t\t\\N\nacme\t2\t\\N\t\\N\n");
    }

    /// A stray quote refuses the file with the line where the field opened.
    #[test]
    fn stray_quote_refuses() {
        let err = encode("id,name\n1,ok\n165,\"abc\n2,x\n3,y\n").unwrap_err();
        assert_eq!(
            err,
            "CSV: line 3: unterminated quoted field (the quote opened on line 3 is never closed)"
        );
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
        parse_csv(
            csv.as_bytes(),
            &def(),
            1 << 20,
            &mut enc,
            &mut rejects,
            &mut |_| true,
        )
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
