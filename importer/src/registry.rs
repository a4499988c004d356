//! The declarative type registry: one entry per CSV type (module), loaded from a YAML file and
//! validated once at start-up.
//!
//! An entry names the target table, its columns (type, required or nullable, header aliases) and
//! the natural key. Every target table also gets a `tenant_id` column, and the primary key is
//! `(tenant_id, natural key…)`, so each tenant owns its own slice of every table.
//!
//! Table and column names are [`Ident`]s: validated (`[a-z_][a-z0-9_]*`, at most 63 bytes) and
//! always written quoted into SQL, so reserved words such as `order` or `user` work as names.
//! This module is public API: the admin console lists types and columns from it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Name of the tenant column every target table carries.
pub const TENANT_COLUMN: &str = "tenant_id";
/// Name of the line-number column of PostgreSQL and SQLite staging tables.
pub const LINE_COLUMN: &str = "importer_line";

/// Default per-record size limit: longer records are rejected without being buffered whole.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// A SQL identifier from the registry (or one of the importer's own names). `Display` writes it
/// quoted (`"order"`), which is how every statement the importer builds names tables and
/// columns; [`Ident::as_str`] is the bare name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Checks `[a-z_][a-z0-9_]*`, at most 63 bytes (PostgreSQL's limit, the same in SQLite).
    pub fn new(name: &str) -> Result<Self, String> {
        if is_identifier(name) {
            Ok(Self(name.to_string()))
        } else {
            Err(format!(
                "{name:?} must match [a-z_][a-z0-9_]* (at most 63 bytes)"
            ))
        }
    }

    /// One of the importer's own constant names.
    pub fn fixed(name: &'static str) -> Self {
        debug_assert!(is_identifier(name));
        Self(name.to_string())
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The bare name, so `&Ident` reads as `&str` where a name is compared or
/// looked up; SQL text always goes through `Display`, which quotes.
impl std::ops::Deref for Ident {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for Ident {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Serializes as the bare name (for templates and JSON), never quoted.
impl serde::Serialize for Ident {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Validated names hold no quote; doubling keeps the rule total anyway.
        write!(f, "\"{}\"", self.0.replace('"', "\"\""))
    }
}

impl PartialEq<str> for Ident {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// A registry that failed to load or validate. Its message names the file and the entry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registry {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<serde_saphyr::Error>,
    },
    #[error("registry {path}: type {module:?}: {problem}")]
    Invalid {
        path: PathBuf,
        module: String,
        problem: String,
    },
    #[error("registry {path}: no types defined")]
    Empty { path: PathBuf },
}

/// The column types the importer validates and loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// 32-bit signed integer.
    Int,
    /// 64-bit signed integer.
    BigInt,
    /// 64-bit IEEE float; non-finite values are rejected.
    Float,
    /// Exact decimal; `Some((precision, scale))` bounds its digits.
    Decimal(Option<(u8, u8)>),
    /// UTF-8 text without NUL bytes.
    Text,
    /// `true/false/t/f/yes/no/y/n/1/0`, any case.
    Bool,
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DD[ T]HH:MM:SS[.ffffff]`, without a zone.
    Timestamp,
    /// A timestamp followed by `Z` or `±HH[:MM]`.
    TimestampTz,
}

impl ColumnType {
    fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let simple = match t.as_str() {
            "int" | "integer" | "int4" => Some(Self::Int),
            "bigint" | "int8" => Some(Self::BigInt),
            "float" | "double" | "float8" => Some(Self::Float),
            "decimal" | "numeric" => Some(Self::Decimal(None)),
            "text" | "string" => Some(Self::Text),
            "bool" | "boolean" => Some(Self::Bool),
            "date" => Some(Self::Date),
            "timestamp" => Some(Self::Timestamp),
            "timestamptz" => Some(Self::TimestampTz),
            _ => None,
        };
        if let Some(simple) = simple {
            return Ok(simple);
        }
        let inner = t
            .strip_prefix("decimal(")
            .or_else(|| t.strip_prefix("numeric("))
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("unknown column type {s:?}"))?;
        let (p, sc) = inner.split_once(',').unwrap_or((inner, "0"));
        let p: u8 = p
            .trim()
            .parse()
            .map_err(|_| format!("bad precision in {s:?}"))?;
        let sc: u8 = sc
            .trim()
            .parse()
            .map_err(|_| format!("bad scale in {s:?}"))?;
        if p == 0 || p > 38 || sc > p {
            return Err(format!(
                "{s:?}: need 1 <= precision <= 38 and scale <= precision"
            ));
        }
        Ok(Self::Decimal(Some((p, sc))))
    }

    /// The PostgreSQL column type.
    pub fn postgres_type(self) -> String {
        match self {
            Self::Int => "integer".into(),
            Self::BigInt => "bigint".into(),
            Self::Float => "double precision".into(),
            Self::Decimal(None) => "numeric".into(),
            Self::Decimal(Some((p, s))) => format!("numeric({p},{s})"),
            Self::Text => "text".into(),
            Self::Bool => "boolean".into(),
            Self::Date => "date".into(),
            Self::Timestamp => "timestamp".into(),
            Self::TimestampTz => "timestamptz".into(),
        }
    }

    /// The SQLite column type. Decimals are stored as TEXT to keep them exact.
    pub fn sqlite_type(self) -> &'static str {
        match self {
            Self::Int | Self::BigInt | Self::Bool => "INTEGER",
            Self::Float => "REAL",
            Self::Decimal(_) | Self::Text | Self::Date | Self::Timestamp | Self::TimestampTz => {
                "TEXT"
            }
        }
    }

    /// The name used in the registry file and by `importer types`.
    pub fn name(self) -> String {
        match self {
            Self::Int => "int".into(),
            Self::BigInt => "bigint".into(),
            Self::Float => "float".into(),
            Self::Decimal(None) => "decimal".into(),
            Self::Decimal(Some((p, s))) => format!("decimal({p},{s})"),
            Self::Text => "text".into(),
            Self::Bool => "bool".into(),
            Self::Date => "date".into(),
            Self::Timestamp => "timestamp".into(),
            Self::TimestampTz => "timestamptz".into(),
        }
    }
}

/// One column of a target table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: Ident,
    pub ty: ColumnType,
    pub required: bool,
    /// Header spellings accepted besides `name`, compared case-insensitively.
    pub aliases: Vec<String>,
}

/// One CSV type: where its rows go and how they are checked.
#[derive(Debug, Clone)]
pub struct TypeDef {
    pub module: String,
    pub table: Ident,
    pub description: Option<String>,
    pub columns: Vec<Column>,
    /// Indexes into `columns`, in key order. The tenant is always part of the key too.
    pub key: Vec<usize>,
    /// Records longer than this many bytes are rejected; `None` takes the command-line default.
    pub max_record_bytes: Option<usize>,
}

impl TypeDef {
    /// The natural key's column names (without the tenant).
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.key.iter().map(|&i| self.columns[i].name.as_str())
    }

    /// The natural key's columns (without the tenant).
    pub fn key_idents(&self) -> impl Iterator<Item = &Ident> {
        self.key.iter().map(|&i| &self.columns[i].name)
    }

    /// Indexes of the columns outside the natural key.
    pub fn non_key(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.columns.len()).filter(|i| !self.key.contains(i))
    }
}

/// All CSV types, by module name.
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<String, TypeDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    types: Vec<RawType>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawType {
    module: String,
    table: Option<String>,
    description: Option<String>,
    natural_key: Vec<String>,
    columns: Vec<RawColumn>,
    #[serde(default)]
    max_record_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    aliases: Vec<String>,
}

/// `[a-z_][a-z0-9_]*`, at most 63 bytes: safe to splice into SQL unquoted, and the same in
/// PostgreSQL and SQLite.
fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// The form a header is compared in: trimmed, lower case, without a UTF-8 BOM.
pub fn normalize_header(h: &str) -> String {
    h.trim_start_matches('\u{feff}').trim().to_lowercase()
}

impl Registry {
    /// Reads and validates a registry file.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates registry text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, RegistryError> {
        let raw: RawRegistry = serde_saphyr::from_str_with_options(
            text,
            serde_saphyr::options! { strict_booleans: true },
        )
        .map_err(|source| RegistryError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        if raw.types.is_empty() {
            return Err(RegistryError::Empty {
                path: path.to_owned(),
            });
        }
        let mut types = BTreeMap::new();
        let mut tables = HashSet::new();
        for t in raw.types {
            let invalid = |problem: String| RegistryError::Invalid {
                path: path.to_owned(),
                module: t.module.clone(),
                problem,
            };
            let def = validate_type(&t).map_err(invalid)?;
            if !tables.insert(def.table.clone()) {
                return Err(invalid(format!("table {} used twice", def.table)));
            }
            if types.insert(def.module.clone(), def).is_some() {
                return Err(invalid("module defined twice".into()));
            }
        }
        Ok(Self { types })
    }

    /// The type for a module name, if any.
    pub fn get(&self, module: &str) -> Option<&TypeDef> {
        self.types.get(module)
    }

    /// All types, ordered by module name.
    pub fn types(&self) -> impl Iterator<Item = &TypeDef> {
        self.types.values()
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

fn validate_type(t: &RawType) -> Result<TypeDef, String> {
    if t.module.is_empty()
        || !t
            .module
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        return Err("module names use letters, digits, '_' and '-'".into());
    }
    let table = t
        .table
        .clone()
        .unwrap_or_else(|| t.module.replace('-', "_").to_ascii_lowercase());
    if !is_identifier(&table) || table.starts_with("import_") {
        return Err(format!(
            "table {table:?} must match [a-z_][a-z0-9_]* and not start with import_"
        ));
    }
    let table = Ident::new(&table)?;
    if t.max_record_bytes
        .is_some_and(|n| !(64..=1 << 30).contains(&n))
    {
        return Err("max_record_bytes must be between 64 and 1073741824".into());
    }
    if t.columns.is_empty() {
        return Err("no columns".into());
    }
    let mut columns = Vec::with_capacity(t.columns.len());
    let mut headers = HashSet::new();
    for c in &t.columns {
        if !is_identifier(&c.name) || c.name == TENANT_COLUMN || c.name == LINE_COLUMN {
            return Err(format!(
                "column {:?} must match [a-z_][a-z0-9_]* and not be {TENANT_COLUMN} or {LINE_COLUMN}",
                c.name
            ));
        }
        let ty = ColumnType::parse(&c.ty).map_err(|e| format!("column {}: {e}", c.name))?;
        let own: HashSet<String> = std::iter::once(&c.name)
            .chain(&c.aliases)
            .map(|h| normalize_header(h))
            .collect();
        for h in own {
            if !headers.insert(h.clone()) {
                return Err(format!("header {h:?} maps to more than one column"));
            }
        }
        columns.push(Column {
            name: Ident::new(&c.name)?,
            ty,
            required: c.required,
            aliases: c.aliases.clone(),
        });
    }
    if t.natural_key.is_empty() {
        return Err("natural_key is empty".into());
    }
    let mut key = Vec::new();
    for k in &t.natural_key {
        let i = columns
            .iter()
            .position(|c| c.name == *k.as_str())
            .ok_or_else(|| format!("natural_key column {k:?} is not a column"))?;
        if !columns[i].required {
            return Err(format!("natural_key column {k:?} must be required"));
        }
        if key.contains(&i) {
            return Err(format!("natural_key column {k:?} listed twice"));
        }
        key.push(i);
    }
    Ok(TypeDef {
        module: t.module.clone(),
        table,
        description: t.description.clone(),
        columns,
        key,
        max_record_bytes: t.max_record_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Registry, RegistryError> {
        Registry::parse(Path::new("r.yaml"), text)
    }

    /// A well-formed entry loads with its key, types and default table name.
    #[test]
    fn loads_entry() {
        let r = parse(
            "types:\n- module: sales-orders\n  natural_key: [id]\n  columns:\n  - {name: id, type: bigint, required: true, aliases: [Order ID]}\n  - {name: amount, type: 'decimal(12, 2)'}\n",
        )
        .unwrap();
        let t = r.get("sales-orders").unwrap();
        assert_eq!(t.table.as_str(), "sales_orders");
        assert_eq!(t.table.to_string(), "\"sales_orders\"");
        assert_eq!(t.key, vec![0]);
        assert_eq!(t.columns[1].ty, ColumnType::Decimal(Some((12, 2))));
        assert_eq!(t.columns[1].ty.postgres_type(), "numeric(12,2)");
    }

    /// Invalid entries are refused with the module and the problem named.
    #[test]
    fn refuses_invalid_entries() {
        let cases = [
            ("natural_key: [id]\n  columns:\n  - {name: id, type: money, required: true}", "unknown column type"),
            ("natural_key: [id]\n  columns:\n  - {name: id, type: int}", "must be required"),
            ("natural_key: [x]\n  columns:\n  - {name: id, type: int, required: true}", "is not a column"),
            ("natural_key: [id]\n  columns:\n  - {name: Id, type: int, required: true}", "must match"),
            ("natural_key: [id]\n  columns:\n  - {name: id, type: int, required: true}\n  - {name: b, type: int, aliases: [ID]}", "more than one column"),
            ("natural_key: [id]\n  columns:\n  - {name: tenant_id, type: int, required: true}", "must match"),
            ("natural_key: [id]\n  max_record_bytes: 1\n  columns:\n  - {name: id, type: int, required: true}", "max_record_bytes"),
        ];
        for (body, want) in cases {
            let err = parse(&format!("types:\n- module: m\n  {body}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err} should contain {want}");
            assert!(err.contains("\"m\""), "{err} should name the module");
        }
    }

    /// YAML that doesn't fit the schema is refused with the key named (serde-saphyr).
    #[test]
    fn parse_errors_name_the_key() {
        for (text, want) in [
            ("types:\n- module: m\n  natural_key: [id]\n  columns:\n  - {name: id, type: int, colour: red}\n", "colour"),
            ("types:\n- module: m\n  columns:\n  - {name: id, type: int}\n", "natural_key"),
            ("types:\n- module: m\n  natural_key: [id]\n  columns:\n  - {name: id, type: int, required: maybe}\n", "required"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should name {want}");
            assert!(err.starts_with("registry r.yaml: "), "{err}");
        }
    }

    /// Reserved words are fine as names: every statement quotes them.
    #[test]
    fn reserved_words_are_quoted() {
        let r = parse("types:\n- module: order\n  natural_key: [user]\n  columns:\n  - {name: user, type: int, required: true}\n  - {name: select, type: text}\n").unwrap();
        let t = r.get("order").unwrap();
        assert_eq!(t.table.to_string(), "\"order\"");
        assert_eq!(t.columns[1].name.to_string(), "\"select\"");
    }

    /// The shipped example registry is valid.
    #[test]
    fn example_registry_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("registry/example.yaml");
        let r = Registry::load(&path).unwrap();
        assert!(r.len() >= 5);
    }
}
