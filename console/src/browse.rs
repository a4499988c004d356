//! The data browser's queries, driven by the registry: no code per type.
//!
//! A request names a type, and optionally a tenant, column conditions (`<column>.eq`,
//! `<column>.min`, `<column>.max`, `<column>.has`), a sort column and direction, and a keyset
//! cursor. Column names are looked up in the registry (anything else is refused), values are
//! validated with the importer's own field rules and bound as parameters; the SQL text is built
//! from registry identifiers and constants only.
//!
//! *Contains* (`.has`) is a case-insensitive `LIKE` on a bound, escaped `%…%` pattern of at
//! least [`MIN_CONTAINS`] letters or digits in a row: on PostgreSQL the trigram indexes of
//! [`crate::indexes`] serve it; on SQLite it scans the table (or the tenant's rows).
//!
//! Order is `sort column, tenant_id, natural key…` (NULLs last ascending, first descending,
//! exactly reversed), so the last row of a page is a unique cursor and the next page is
//! `WHERE (…) > (cursor)`, served by the primary key index when sorting by key.

use std::collections::BTreeMap;

use base64::Engine;
use importer::registry::{ColumnType, TypeDef, TENANT_COLUMN};
use importer::value::{parse_field, Field};
use serde::Serialize;

use crate::store::{ident, Dialect, Param, Sql};

/// Rows per page.
pub const PAGE: usize = 50;

/// A refused request: names the parameter and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {problem}")]
pub struct BadFilter {
    pub param: String,
    pub problem: String,
}

fn bad(param: &str, problem: impl Into<String>) -> BadFilter {
    BadFilter {
        param: param.to_string(),
        problem: problem.into(),
    }
}

/// What a column can be filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Number,
    Text,
    Bool,
    Date,
}

pub fn kind(ty: ColumnType) -> Kind {
    match ty {
        ColumnType::Int | ColumnType::BigInt | ColumnType::Float | ColumnType::Decimal(_) => {
            Kind::Number
        }
        ColumnType::Text => Kind::Text,
        ColumnType::Bool => Kind::Bool,
        ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz => Kind::Date,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Min,
    Max,
    Has,
}

impl Op {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "eq" => Some(Self::Eq),
            "min" => Some(Self::Min),
            "max" => Some(Self::Max),
            "has" => Some(Self::Has),
            _ => None,
        }
    }

    fn allowed(self, k: Kind) -> bool {
        match self {
            Self::Eq => true,
            Self::Min | Self::Max => matches!(k, Kind::Number | Kind::Date),
            Self::Has => k == Kind::Text,
        }
    }
}

/// A validated condition on a registry column.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub col: usize,
    pub op: Op,
    pub value: Param,
}

/// A validated browser request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Browse {
    pub tenant: Option<String>,
    pub conds: Vec<Cond>,
    /// Index of the sort column; `None` sorts by the natural key.
    pub sort: Option<usize>,
    pub desc: bool,
    /// Keyset cursor: the sort value (when sorting by a column), then tenant and key values.
    pub after: Option<Vec<Option<String>>>,
    /// The accepted parameters as given, to refill the form and build links.
    pub params: BTreeMap<String, String>,
}

/// The PostgreSQL type a bound value is cast to (wide, so no rounding or overflow).
fn pg_cast(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Int | ColumnType::BigInt => "bigint",
        ColumnType::Float => "float8",
        ColumnType::Decimal(_) => "numeric",
        ColumnType::Text => "text",
        ColumnType::Bool => "boolean",
        ColumnType::Date => "date",
        ColumnType::Timestamp => "timestamp",
        ColumnType::TimestampTz => "timestamptz",
    }
}

/// A column as compared and sorted. SQLite keeps decimals as TEXT; compare them as numbers.
fn expr(d: Dialect, name: &str, ty: ColumnType) -> String {
    match (d, ty) {
        (Dialect::Sqlite, ColumnType::Decimal(_)) => format!("CAST({} AS REAL)", ident(name)),
        _ => ident(name),
    }
}

/// The fewest letters or digits in a row a *contains* filter needs. On PostgreSQL the filter is
/// served by a trigram index (`pg_trgm`, see [`crate::indexes`]), which can only look up a
/// pattern holding a whole trigram of word characters; a shorter one would read the whole
/// table. SQLite (which always scans) keeps the same rule, so a filter means the same on both.
pub const MIN_CONTAINS: usize = 3;

/// The longest run of letters or digits in `s` (`pg_trgm`'s word characters).
fn longest_word(s: &str) -> usize {
    s.split(|c: char| !c.is_alphanumeric())
        .map(|w| w.chars().count())
        .max()
        .unwrap_or(0)
}

/// `%value%` for `LIKE`/`ILIKE` with `\` as the escape character: the user's `%`, `_` and `\`
/// match themselves.
pub fn contains_pattern(raw: &str) -> String {
    let mut p = String::with_capacity(raw.len() + 2);
    p.push('%');
    for c in raw.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// Validates `raw` for a column and turns it into a bound value for the dialect.
fn value(d: Dialect, ty: ColumnType, op: Op, raw: &str) -> Result<Param, String> {
    if op == Op::Has {
        if raw.contains('\0') {
            return Err("contains a NUL byte".into());
        }
        if longest_word(raw) < MIN_CONTAINS {
            return Err(format!(
                "contains needs at least {MIN_CONTAINS} letters or digits in a row \
                 (a shorter text can't use the search index)"
            ));
        }
        return Ok(Param::Text(contains_pattern(raw)));
    }
    // A bare date bounds a timestamp range by whole days.
    let widened;
    let raw = match ty {
        ColumnType::Timestamp | ColumnType::TimestampTz
            if parse_field(ColumnType::Date, true, raw.as_bytes(), false).is_ok() =>
        {
            let zone = if ty == ColumnType::TimestampTz {
                "+00:00"
            } else {
                ""
            };
            widened = match op {
                Op::Max => format!("{} 23:59:59.999999{zone}", raw.trim()),
                _ => format!("{} 00:00:00{zone}", raw.trim()),
            };
            widened.as_str()
        }
        _ => raw,
    };
    let field = parse_field(ty, true, raw.as_bytes(), false)?;
    Ok(match (d, field) {
        (_, Field::Null) => return Err("empty".into()),
        (Dialect::Sqlite, Field::Int(i)) => Param::Int(i),
        (Dialect::Sqlite, Field::Float(f)) => Param::Float(f),
        (Dialect::Sqlite, Field::Bool(b)) => Param::Int(i64::from(b)),
        (Dialect::Sqlite, Field::Plain(s)) if matches!(ty, ColumnType::Decimal(_)) => {
            Param::Float(s.parse().map_err(|_| "not a number".to_string())?)
        }
        (_, Field::Int(i)) => Param::Text(i.to_string()),
        (_, Field::Float(f)) => Param::Text(f.to_string()),
        (_, Field::Bool(b)) => Param::Text(b.to_string()),
        (_, Field::Text(s) | Field::Plain(s)) => Param::Text(s.to_string()),
        (_, Field::Stamp(s)) => Param::Text(s.as_str().to_string()),
    })
}

/// Parses and validates query parameters against a type.
pub fn parse(def: &TypeDef, d: Dialect, pairs: &[(String, String)]) -> Result<Browse, BadFilter> {
    let mut b = Browse::default();
    for (k, v) in pairs {
        let v = v.as_str();
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "tenant" => b.tenant = Some(v.to_string()),
            "sort" => {
                let i = def
                    .columns
                    .iter()
                    .position(|c| c.name.as_str() == v)
                    .ok_or_else(|| bad("sort", "not a column of this type"))?;
                b.sort = Some(i);
            }
            "dir" => {
                b.desc = match v {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(bad("dir", "asc or desc")),
                }
            }
            "after" => continue,
            other => {
                let Some((col, op)) = other.rsplit_once('.') else {
                    continue; // not a filter (htmx and form extras)
                };
                let i = def
                    .columns
                    .iter()
                    .position(|c| c.name.as_str() == col)
                    .ok_or_else(|| bad(other, "not a column of this type"))?;
                let ty = def.columns[i].ty;
                let op = Op::parse(op)
                    .filter(|o| o.allowed(kind(ty)))
                    .ok_or_else(|| {
                        bad(other, format!("not a filter for a {} column", ty.name()))
                    })?;
                let value = value(d, ty, op, v).map_err(|e| bad(other, e))?;
                b.conds.push(Cond { col: i, op, value });
            }
        }
        b.params.insert(k.clone(), v.to_string());
    }
    if let Some((_, v)) = pairs.iter().find(|(k, v)| k == "after" && !v.is_empty()) {
        b.after = Some(decode_cursor(def, d, &b, v)?);
        b.params.insert("after".into(), v.clone());
    }
    Ok(b)
}

/// The columns the cursor holds: sort column (if any), tenant, natural key.
fn cursor_columns(def: &TypeDef, b: &Browse) -> Vec<Option<usize>> {
    b.sort
        .map(Some)
        .into_iter()
        .chain(std::iter::once(None))
        .chain(def.key.iter().map(|&k| Some(k)))
        .collect()
}

fn decode_cursor(
    def: &TypeDef,
    d: Dialect,
    b: &Browse,
    raw: &str,
) -> Result<Vec<Option<String>>, BadFilter> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| bad("after", "not a cursor"))?;
    let vals: Vec<Option<String>> =
        serde_json::from_slice(&bytes).map_err(|_| bad("after", "not a cursor"))?;
    let cols = cursor_columns(def, b);
    if vals.len() != cols.len() || vals[1..].iter().any(Option::is_none) {
        return Err(bad("after", "not a cursor for this sort"));
    }
    for (c, v) in cols.iter().zip(&vals) {
        if let (Some(i), Some(v)) = (c, v) {
            value(d, def.columns[*i].ty, Op::Eq, v).map_err(|e| bad("after", e))?;
        }
    }
    Ok(vals)
}

/// The cursor after `row` (as selected by [`select`]: tenant, then every column).
pub fn cursor_after(def: &TypeDef, b: &Browse, row: &[Option<String>]) -> String {
    let vals: Vec<Option<String>> = cursor_columns(def, b)
        .into_iter()
        .map(|c| match c {
            None => row.first().cloned().flatten(),
            Some(i) => row.get(i + 1).cloned().flatten(),
        })
        .collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&vals).unwrap_or_default())
}

fn bind_col(sql: &mut Sql, def: &TypeDef, col: Option<usize>, raw: &str) {
    let d = sql.dialect;
    match col {
        None => sql.bind(Param::Text(raw.to_string()), Some("text")),
        Some(i) => {
            let ty = def.columns[i].ty;
            // Validated when the cursor was decoded.
            let p = value(d, ty, Op::Eq, raw).unwrap_or(Param::Text(String::new()));
            sql.bind(p, Some(pg_cast(ty)))
        }
    };
}

/// `SELECT tenant_id, col… FROM table WHERE … ORDER BY …`, the columns as text. With a
/// `limit`, the rows are picked first and only those formatted (a subquery), so formatting
/// never runs over rows a top-N sort throws away.
pub fn select(def: &TypeDef, d: Dialect, b: &Browse, limit: Option<usize>) -> Sql {
    let mut sql = Sql::new(d);
    // Output columns get positional aliases, so ORDER BY and WHERE always mean the table's
    // typed columns (PostgreSQL resolves a bare ORDER BY name to an output column first).
    sql.push("SELECT ")
        .push(&ident(TENANT_COLUMN))
        .push(" AS out_t");
    for (i, c) in def.columns.iter().enumerate() {
        sql.push(", ");
        match (d, c.ty) {
            (Dialect::Postgres, _) => sql.push(&format!("{}::text", ident(c.name.as_str()))),
            (Dialect::Sqlite, ColumnType::Bool) => sql.push(&format!(
                "CASE WHEN {0} IS NULL THEN NULL WHEN {0} THEN 'true' ELSE 'false' END",
                ident(c.name.as_str())
            )),
            (Dialect::Sqlite, _) => sql.push(&ident(c.name.as_str())),
        };
        sql.push(&format!(" AS out_{i}"));
    }
    sql.push(" FROM ");
    if limit.is_some() {
        sql.push("(SELECT * FROM ");
    }
    sql.push(&ident(def.table.as_str())).push(" WHERE 1 = 1");
    if let Some(t) = &b.tenant {
        sql.push(&format!(" AND {} = ", ident(TENANT_COLUMN)))
            .bind(Param::Text(t.clone()), None);
    }
    for c in &b.conds {
        let col = &def.columns[c.col];
        let e = expr(d, col.name.as_str(), col.ty);
        let cast = Some(pg_cast(col.ty));
        match c.op {
            Op::Eq => sql
                .push(&format!(" AND {e} = "))
                .bind(c.value.clone(), cast),
            Op::Min => sql
                .push(&format!(" AND {e} >= "))
                .bind(c.value.clone(), cast),
            Op::Max => sql
                .push(&format!(" AND {e} <= "))
                .bind(c.value.clone(), cast),
            // Bound `%…%` pattern (see `contains_pattern`). PostgreSQL: plain `ILIKE` on the
            // column, which its trigram index serves (backslash is ILIKE's default escape);
            // SQLite: `LIKE` (ASCII case-insensitive) with the escape said out loud.
            Op::Has => match d {
                Dialect::Postgres => sql
                    .push(&format!(" AND {e} ILIKE "))
                    .bind(c.value.clone(), Some("text")),
                Dialect::Sqlite => sql
                    .push(&format!(" AND {e} LIKE "))
                    .bind(c.value.clone(), None)
                    .push(" ESCAPE '\\'"),
            },
        };
    }
    let key_cols: Vec<Option<usize>> = std::iter::once(None)
        .chain(def.key.iter().map(|&k| Some(k)))
        .collect();
    let key_expr = |c: &Option<usize>| match c {
        None => ident(TENANT_COLUMN),
        Some(i) => expr(d, def.columns[*i].name.as_str(), def.columns[*i].ty),
    };
    let keys: Vec<String> = key_cols.iter().map(key_expr).collect();
    let (cmp, dir) = if b.desc { ("<", "DESC") } else { (">", "ASC") };
    if let Some(after) = &b.after {
        let key_vals = if b.sort.is_some() {
            &after[1..]
        } else {
            &after[..]
        };
        match b.sort {
            None => {
                sql.push(" AND ");
                push_key_pred(&mut sql, def, &key_cols, &keys, cmp, key_vals);
            }
            Some(s) => {
                let col = &def.columns[s];
                let e = expr(d, col.name.as_str(), col.ty);
                match (&after[0], b.desc) {
                    (Some(v), false) => {
                        sql.push(&format!(" AND ({e} {cmp} "));
                        bind_col(&mut sql, def, Some(s), v);
                        sql.push(&format!(" OR ({e} = "));
                        bind_col(&mut sql, def, Some(s), v);
                        sql.push(" AND ");
                        push_key_pred(&mut sql, def, &key_cols, &keys, cmp, key_vals);
                        sql.push(&format!(") OR {e} IS NULL)"));
                    }
                    (Some(v), true) => {
                        sql.push(&format!(" AND ({e} {cmp} "));
                        bind_col(&mut sql, def, Some(s), v);
                        sql.push(&format!(" OR ({e} = "));
                        bind_col(&mut sql, def, Some(s), v);
                        sql.push(" AND ");
                        push_key_pred(&mut sql, def, &key_cols, &keys, cmp, key_vals);
                        sql.push("))");
                    }
                    (None, false) => {
                        sql.push(&format!(" AND ({e} IS NULL AND "));
                        push_key_pred(&mut sql, def, &key_cols, &keys, cmp, key_vals);
                        sql.push(")");
                    }
                    (None, true) => {
                        sql.push(&format!(" AND (({e} IS NULL AND "));
                        push_key_pred(&mut sql, def, &key_cols, &keys, cmp, key_vals);
                        sql.push(&format!(") OR {e} IS NOT NULL)"));
                    }
                }
            }
        }
    }
    let mut order = String::from(" ORDER BY ");
    if let Some(s) = b.sort {
        let col = &def.columns[s];
        let nulls = if b.desc { "NULLS FIRST" } else { "NULLS LAST" };
        order.push_str(&format!(
            "{} {dir} {nulls}, ",
            expr(d, col.name.as_str(), col.ty)
        ));
    }
    let keys_order: Vec<String> = keys.iter().map(|k| format!("{k} {dir}")).collect();
    order.push_str(&keys_order.join(", "));
    sql.push(&order);
    if let Some(n) = limit {
        sql.push(&format!(" LIMIT {n}) AS page")).push(&order);
    }
    sql
}

fn push_key_pred(
    sql: &mut Sql,
    def: &TypeDef,
    key_cols: &[Option<usize>],
    keys: &[String],
    cmp: &str,
    vals: &[Option<String>],
) {
    sql.push(&format!("({}) {cmp} (", keys.join(", ")));
    for (i, (c, v)) in key_cols.iter().zip(vals).enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        bind_col(sql, def, *c, v.as_deref().unwrap_or(""));
    }
    sql.push(")");
}

#[cfg(test)]
mod tests;
