//! PostgreSQL's `COPY … FROM STDIN` text format: an encoder that receives accepted rows as a
//! [`RowSink`] and hands them on in chunks of about [`COPY_CHUNK`] bytes.
//!
//! Text is escaped (`\\`, `\n`, `\r`, `\t`), NULL is `\N`, an empty string is empty, and
//! everything else was validated to a form PostgreSQL reads back exactly.

use std::io::Write;

use crate::parse::RowSink;
use crate::value::Field;

/// Encodes rows in PostgreSQL's `COPY … FROM STDIN` text format, in chunks.
pub struct CopyEncoder<F> {
    buf: Vec<u8>,
    row_start: usize,
    tenant: Vec<u8>,
    with_line: bool,
    pub(crate) chunk: usize,
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

    /// Every field kind encodes as COPY text; NULL and the empty string differ.
    #[test]
    fn encodes_fields() {
        let mut out = Vec::new();
        let mut enc = CopyEncoder::new("t\\1", true, |c: Vec<u8>| {
            out.extend(c);
            Ok::<_, ()>(())
        });
        enc.begin(7);
        for f in [
            Field::Null,
            Field::Text(""),
            Field::Text("a\tb\\c\r\n"),
            Field::Int(-3),
            Field::Bool(true),
            Field::Plain("1.50"),
        ] {
            enc.field(f);
        }
        enc.end().unwrap();
        enc.begin(8);
        enc.field(Field::Int(1));
        enc.rollback();
        enc.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7\tt\\\\1\t\\N\t\ta\\tb\\\\c\\r\\n\t-3\tt\t1.50\n"
        );
    }
}
