//! Field validation: turns one raw CSV field into a typed [`Field`] or a reject reason.
//!
//! The checks are a strict subset of what PostgreSQL accepts for the same column type, so a
//! row that passes here never makes a `COPY` fail halfway through a file.
//!
//! Empty fields follow `psql \copy`: an unquoted empty field is NULL; a quoted empty field
//! (`""`) is an empty string in a text column. Other types have no empty value, so there `""` is
//! NULL too (where `\copy` would refuse the whole file).

use crate::registry::ColumnType;

/// A validated field, borrowing from the CSV record where it can.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Text exactly as delivered.
    Text(&'a str),
    /// Checked ASCII passed through verbatim (decimals, dates).
    Plain(&'a str),
    /// A timestamp rewritten to `YYYY-MM-DD HH:MM:SS[.f][zone]`.
    Stamp(Stamp),
}

/// A normalized timestamp in a fixed buffer, so validation never allocates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    buf: [u8; 40],
    len: u8,
}

impl Stamp {
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever copied in.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }
}

fn trim(raw: &[u8]) -> &[u8] {
    let start = raw
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &raw[start..end]
}

fn ascii(raw: &[u8]) -> Result<&str, String> {
    if raw.is_ascii() {
        // ASCII is UTF-8.
        std::str::from_utf8(raw).map_err(|e| e.to_string())
    } else {
        Err("unexpected non-ASCII characters".into())
    }
}

/// Validates one field for a column type. `required` turns a NULL into an error; `quoted` says
/// the field was quoted in the file (`""` is an empty string, not NULL, in a text column).
pub fn parse_field(
    ty: ColumnType,
    required: bool,
    raw: &[u8],
    quoted: bool,
) -> Result<Field<'_>, String> {
    let value = if ty == ColumnType::Text {
        raw
    } else {
        trim(raw)
    };
    if value.is_empty() {
        if quoted && ty == ColumnType::Text {
            return Ok(Field::Text(""));
        }
        return if required {
            Err("required value is empty".into())
        } else {
            Ok(Field::Null)
        };
    }
    match ty {
        ColumnType::Text => {
            let s = std::str::from_utf8(value).map_err(|_| "invalid UTF-8".to_string())?;
            if value.contains(&0) {
                return Err("text contains a NUL byte".into());
            }
            Ok(Field::Text(s))
        }
        ColumnType::Int => ascii(value)?
            .parse::<i32>()
            .map(|v| Field::Int(v.into()))
            .map_err(|e| format!("not an int: {e}")),
        ColumnType::BigInt => ascii(value)?
            .parse::<i64>()
            .map(Field::Int)
            .map_err(|e| format!("not a bigint: {e}")),
        ColumnType::Float => parse_float(ascii(value)?),
        ColumnType::Decimal(bounds) => check_decimal(ascii(value)?, bounds).map(Field::Plain),
        ColumnType::Bool => match value.to_ascii_lowercase().as_slice() {
            b"true" | b"t" | b"yes" | b"y" | b"1" => Ok(Field::Bool(true)),
            b"false" | b"f" | b"no" | b"n" | b"0" => Ok(Field::Bool(false)),
            _ => Err("not a bool (true/false, t/f, yes/no, y/n, 1/0)".into()),
        },
        ColumnType::Date => {
            check_date(value)?;
            Ok(Field::Plain(ascii(value)?))
        }
        ColumnType::Timestamp => parse_stamp(value, false).map(Field::Stamp),
        ColumnType::TimestampTz => parse_stamp(value, true).map(Field::Stamp),
    }
}

fn parse_float(s: &str) -> Result<Field<'static>, String> {
    let v: f64 = s.parse().map_err(|e| format!("not a float: {e}"))?;
    if !v.is_finite() {
        return Err("float is not finite".into());
    }
    let mantissa = s.split(['e', 'E']).next().unwrap_or("");
    if v == 0.0 && mantissa.bytes().any(|c| (b'1'..=b'9').contains(&c)) {
        return Err("float underflows to zero".into());
    }
    Ok(Field::Float(v))
}

fn check_decimal(s: &str, bounds: Option<(u8, u8)>) -> Result<&str, String> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    if !digits(int) || !digits(frac) || (int.is_empty() && frac.is_empty()) {
        return Err("not a decimal".into());
    }
    if let Some((precision, scale)) = bounds {
        let int_digits = int.trim_start_matches('0').len();
        if int_digits > usize::from(precision - scale) {
            return Err(format!(
                "decimal has more than {} digits before the point",
                precision - scale
            ));
        }
        if frac.len() > usize::from(scale) {
            return Err(format!("decimal has more than {scale} decimal places"));
        }
    }
    Ok(s)
}

fn num(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn check_date(v: &[u8]) -> Result<(), String> {
    let bad = || "not a date (YYYY-MM-DD)".to_string();
    if v.len() != 10 || v[4] != b'-' || v[7] != b'-' {
        return Err(bad());
    }
    let (y, m, d) = (
        num(&v[0..4]).ok_or_else(bad)?,
        num(&v[5..7]).ok_or_else(bad)?,
        num(&v[8..10]).ok_or_else(bad)?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(format!("month {m} out of range")),
    };
    if y == 0 || d == 0 || d > days {
        return Err("date out of range".into());
    }
    Ok(())
}

fn parse_stamp(v: &[u8], zoned: bool) -> Result<Stamp, String> {
    let bad = || {
        if zoned {
            "not a timestamp with zone (YYYY-MM-DD HH:MM:SS[.ffffff]Z|±HH[:MM])".to_string()
        } else {
            "not a timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])".to_string()
        }
    };
    if v.len() < 19 || !matches!(v[10], b' ' | b'T' | b't') || v[13] != b':' || v[16] != b':' {
        return Err(bad());
    }
    check_date(&v[..10])?;
    let (h, mi, s) = (
        num(&v[11..13]).ok_or_else(bad)?,
        num(&v[14..16]).ok_or_else(bad)?,
        num(&v[17..19]).ok_or_else(bad)?,
    );
    if h > 23 || mi > 59 || s > 59 {
        return Err("time out of range".into());
    }
    let mut rest = &v[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 6 {
            return Err("fractional seconds need 1 to 6 digits".into());
        }
        rest = &frac[n..];
    }
    let zone_len = rest.len();
    if zoned {
        match rest {
            b"Z" | b"z" => {}
            [b'+' | b'-', zone @ ..] => {
                let (zh, zm) = match zone {
                    [a, b] => (num(&[*a, *b]), Some(0)),
                    [a, b, b':', c, d] | [a, b, c, d] => (num(&[*a, *b]), num(&[*c, *d])),
                    _ => (None, None),
                };
                match (zh, zm) {
                    (Some(zh), Some(zm)) if zh <= 15 && zm <= 59 => {}
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        }
    } else if zone_len != 0 {
        return Err(bad());
    }
    let mut buf = [0u8; 40];
    buf[..v.len()].copy_from_slice(v);
    buf[10] = b' ';
    Ok(Stamp {
        buf,
        len: v.len() as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;

    fn ok(ty: ColumnType, raw: &str) -> Field<'_> {
        parse_field(ty, false, raw.as_bytes(), false).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    fn err(ty: ColumnType, raw: &str) -> String {
        parse_field(ty, false, raw.as_bytes(), false).expect_err(raw)
    }

    /// Well-formed values of every type are accepted and typed.
    #[test]
    fn accepts_valid_values() {
        assert_eq!(ok(Int, " 42 "), Field::Int(42));
        assert_eq!(ok(Int, "+7"), Field::Int(7));
        assert_eq!(ok(BigInt, "-9223372036854775808"), Field::Int(i64::MIN));
        assert_eq!(ok(Float, "1.5e3"), Field::Float(1500.0));
        assert_eq!(
            ok(Decimal(Some((5, 2))), "-123.45"),
            Field::Plain("-123.45")
        );
        assert_eq!(ok(Decimal(None), ".5"), Field::Plain(".5"));
        assert_eq!(ok(Bool, "Yes"), Field::Bool(true));
        assert_eq!(ok(Bool, "0"), Field::Bool(false));
        assert_eq!(ok(Date, "2024-02-29"), Field::Plain("2024-02-29"));
        assert_eq!(ok(Text, " café, \"x\" "), Field::Text(" café, \"x\" "));
        assert_eq!(ok(Text, ""), Field::Null);
        assert_eq!(ok(Int, "  "), Field::Null);
        let Field::Stamp(s) = ok(Timestamp, "2024-01-02T03:04:05.123456") else {
            panic!()
        };
        assert_eq!(s.as_str(), "2024-01-02 03:04:05.123456");
        let Field::Stamp(s) = ok(TimestampTz, "2024-01-02 03:04:05+05:30") else {
            panic!()
        };
        assert_eq!(s.as_str(), "2024-01-02 03:04:05+05:30");
        assert!(matches!(
            ok(TimestampTz, "2024-01-02 03:04:05Z"),
            Field::Stamp(_)
        ));
    }

    /// Values PostgreSQL would refuse are rejected with a reason, before they reach a COPY.
    #[test]
    fn rejects_invalid_values() {
        assert!(err(Int, "2147483648").contains("not an int"));
        assert!(err(Int, "1.0").contains("not an int"));
        assert!(err(BigInt, "12a").contains("not a bigint"));
        assert!(err(Float, "inf").contains("not finite"));
        assert!(err(Float, "1e-400").contains("underflows"));
        assert!(err(Decimal(Some((5, 2))), "1234.5").contains("before the point"));
        assert!(err(Decimal(Some((5, 2))), "1.234").contains("decimal places"));
        assert!(err(Decimal(None), "1e5").contains("not a decimal"));
        assert!(err(Decimal(None), "-").contains("not a decimal"));
        assert!(err(Bool, "maybe").contains("not a bool"));
        assert!(err(Date, "2023-02-29").contains("out of range"));
        assert!(err(Date, "2023-13-01").contains("month 13"));
        assert!(err(Date, "2023-1-01").contains("not a date"));
        assert!(err(Timestamp, "2024-01-02 24:00:00").contains("out of range"));
        assert!(err(Timestamp, "2024-01-02 10:00:00Z").contains("not a timestamp"));
        assert!(err(Timestamp, "2024-01-02 10:00:00.1234567").contains("1 to 6"));
        assert!(err(TimestampTz, "2024-01-02 10:00:00").contains("with zone"));
        assert!(err(TimestampTz, "2024-01-02 10:00:00+16").contains("with zone"));
        assert!(err(Text, "a\0b").contains("NUL"));
        assert!(parse_field(Text, false, b"\xff", false)
            .unwrap_err()
            .contains("UTF-8"));
        assert!(parse_field(Int, true, b"", false)
            .unwrap_err()
            .contains("required"));
        assert!(parse_field(Text, true, b"", false)
            .unwrap_err()
            .contains("required"));
    }

    /// `""` is an empty string in a text column (required or not) and NULL elsewhere.
    #[test]
    fn quoted_empty() {
        assert_eq!(parse_field(Text, true, b"", true), Ok(Field::Text("")));
        assert_eq!(parse_field(Text, false, b"", false), Ok(Field::Null));
        assert_eq!(parse_field(Int, false, b"", true), Ok(Field::Null));
        assert!(parse_field(Int, true, b"", true).is_err());
    }
}
