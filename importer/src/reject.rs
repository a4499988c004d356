//! Rejected rows: their format in `import_rejects` and the spill file that holds them during a
//! load.
//!
//! `raw_record` is the record re-encoded as one CSV line (quoted where needed, `""` kept), with
//! one escaping rule so any byte sequence can be stored in a text column of either database:
//! `\` is written `\\`, NUL and bytes that are not UTF-8 as `\xNN`. A record over the size limit
//! is cut to its first [`RAW_CAP`] bytes followed by `…`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};

use crate::record::Record;

/// Bytes of a too-long record kept in its reject.
pub const RAW_CAP: usize = 1024;

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    /// The column that failed, or `None` when the row as a whole was wrong.
    pub column: Option<String>,
    /// The record in the reject format (see the module docs).
    pub raw: String,
    pub reason: String,
}

/// Writes `bytes` with the reject escaping: `\` → `\\`, NUL and non-UTF-8 bytes → `\xNN`.
pub fn escape(bytes: &[u8], out: &mut String) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\0' => out.push_str("\\x00"),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

/// The reject format of a record.
pub fn raw_record(rec: &Record) -> String {
    let mut csv = Vec::new();
    for i in 0..rec.len() {
        if i > 0 {
            csv.push(b',');
        }
        let f = rec.get(i);
        let quote = (rec.quoted(i) && f.is_empty())
            || f.iter().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r'));
        if quote {
            csv.push(b'"');
            for &c in f {
                if c == b'"' {
                    csv.push(b'"');
                }
                csv.push(c);
            }
            csv.push(b'"');
        } else {
            csv.extend_from_slice(f);
        }
        if rec.too_long() && csv.len() > RAW_CAP {
            break;
        }
    }
    let cut = rec.too_long();
    if cut {
        csv.truncate(RAW_CAP);
    }
    let mut out = String::with_capacity(csv.len() + 4);
    escape(&csv, &mut out);
    if cut {
        out.push('…');
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordReader;

    fn raw(csv: &[u8], limit: usize) -> String {
        let mut r = RecordReader::new(csv, limit);
        let mut rec = Record::new();
        assert!(r.read(&mut rec).unwrap());
        raw_record(&rec)
    }

    /// Quoting survives, and NUL, invalid UTF-8 and backslashes are escaped reversibly.
    #[test]
    fn raw_format() {
        assert_eq!(
            raw(b"1,\"a,b\",\"\",,\"q\"\"\"", 100),
            "1,\"a,b\",\"\",,\"q\"\"\""
        );
        assert_eq!(
            raw(b"a\0b,\xff\xfe,c:\\d,\xc3\xa9", 100),
            "a\\x00b,\\xff\\xfe,c:\\\\d,é"
        );
        let long = raw(format!("1,{}", "z".repeat(5000)).as_bytes(), 2000);
        assert!(long.ends_with('…'));
        assert_eq!(long.chars().count(), RAW_CAP + 1);
    }

    /// The spill file gives back what went in, in order.
    #[test]
    fn spill_round_trip() {
        let mut log = RejectLog::new().unwrap();
        let rs = [
            Reject {
                line: 2,
                column: Some("id".into()),
                raw: "x".into(),
                reason: "bad".into(),
            },
            Reject {
                line: 9,
                column: None,
                raw: String::new(),
                reason: "short".into(),
            },
        ];
        for r in &rs {
            log.push(r).unwrap();
        }
        assert_eq!(log.len(), 2);
        let back: Vec<Reject> = log.read_back().unwrap().map(Result::unwrap).collect();
        assert_eq!(back, rs);
    }
}
