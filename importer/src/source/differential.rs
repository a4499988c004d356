//! A differential property test of the hand-written streaming payload parser: over generated
//! payloads (any key order, extra keys holding any JSON, `\uXXXX` and `\/` escapes, wrapped or
//! unpadded base64, any whitespace) it must agree exactly with `serde_json` + `base64`; over
//! damaged payloads it must never accept what they refuse, nor accept it differently.

use base64::Engine;
use proptest::prelude::*;
use serde_json::Value;

use super::{decode_payload, BASE64};

/// What serde_json and the base64 crate make of a payload.
fn oracle(bytes: &[u8]) -> Option<(String, Vec<u8>)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let obj = v.as_object()?;
    let module = obj.get("module_name")?.as_str()?;
    let data: String = obj
        .get("data")?
        .as_str()?
        .chars()
        .filter(|c| *c != '\n' && *c != '\r')
        .collect();
    let decoded = BASE64.decode(data).ok()?;
    Some((module.to_string(), decoded))
}

fn ours(bytes: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut out = Vec::new();
    let module = decode_payload(bytes, &mut out).map_err(|e| e.to_string())?;
    Ok((module, out))
}

/// A JSON string literal; `escape_all` writes every character as `\uXXXX` (pairs above U+FFFF).
fn string_literal(s: &str, escape_all: bool) -> String {
    if !escape_all {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1_000_000i64..1_000_000).prop_map(Value::from),
        // Eighths print without an exponent, so damage can't make a number out of range.
        (-1_000_000i64..1_000_000).prop_map(|i| Value::from(i as f64 / 8.0)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec(("[a-z]{0,6}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
struct Payload {
    module: String,
    data: Vec<u8>,
    extras: Vec<(String, Value)>,
    /// Where `module_name` and `data` go among the extra keys.
    module_at: usize,
    data_at: usize,
    escape_module: bool,
    escape_slash: bool,
    wrap: Option<usize>,
    unpadded: bool,
    space: &'static str,
}

impl Payload {
    fn render(&self) -> Vec<u8> {
        let mut b64 = base64::engine::general_purpose::STANDARD.encode(&self.data);
        if self.unpadded {
            b64 = b64.trim_end_matches('=').to_string();
        }
        let mut data = String::new();
        for (i, c) in b64.chars().enumerate() {
            if let Some(w) = self.wrap {
                if i > 0 && i % w == 0 {
                    data.push_str(if w % 2 == 0 { "\\n" } else { "\\r\\n" });
                }
            }
            if c == '/' && self.escape_slash {
                data.push_str("\\/");
            } else {
                data.push(c);
            }
        }
        let mut entries: Vec<String> = self
            .extras
            .iter()
            .map(|(k, v)| format!("{}:{}{}", string_literal(k, false), self.space, v))
            .collect();
        let module = format!(
            "\"module_name\"{0}:{0}{1}",
            self.space,
            string_literal(&self.module, self.escape_module)
        );
        let data = format!("\"data\":{}\"{data}\"", self.space);
        entries.insert(self.module_at.min(entries.len()), module);
        entries.insert(self.data_at.min(entries.len()), data);
        let sep = format!(",{}", self.space);
        format!("{0}{{{0}{1}{0}}}{0}", self.space, entries.join(&sep)).into_bytes()
    }
}

fn payload() -> impl Strategy<Value = Payload> {
    (
        text(),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(
            (
                "(x|module|dat|[a-z]{1,8})".prop_filter("a known key", |k| k != "data"),
                json_value(),
            ),
            0..4,
        ),
        (0usize..5, 0usize..5),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        proptest::option::of(1usize..80),
        prop_oneof![Just(""), Just(" "), Just("\n"), Just("\t \r\n")],
    )
        .prop_map(
            |(
                module,
                data,
                extras,
                (module_at, data_at),
                (escape_module, escape_slash, unpadded),
                wrap,
                space,
            )| {
                Payload {
                    module,
                    data,
                    extras,
                    module_at,
                    data_at,
                    escape_module,
                    escape_slash,
                    wrap,
                    unpadded,
                    space,
                }
            },
        )
}

/// Damage: delete, replace or insert bytes that matter to JSON.
fn damage(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    const NASTY: &[u8] = b"\"\\,:{}[] 0a/nu\x01\xff-.t";
    for &(at, op, pick) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = at % bytes.len();
        let b = NASTY[pick as usize % NASTY.len()];
        match op % 3 {
            0 => {
                bytes.remove(at);
            }
            1 => bytes[at] = b,
            _ => bytes.insert(at, b),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Well-formed payloads decode exactly as serde_json + base64 decode them.
    #[test]
    fn agrees_on_payloads(p in payload()) {
        let bytes = p.render();
        let want = oracle(&bytes);
        prop_assert!(want.is_some(), "oracle refused {}", String::from_utf8_lossy(&bytes));
        prop_assert_eq!(ours(&bytes), Ok(want.unwrap()));
    }

    /// Damaged payloads: whatever the streaming parser accepts, the oracle accepts identically.
    #[test]
    fn never_accepts_more(p in payload(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4)) {
        let bytes = damage(p.render(), &edits);
        if let Ok(got) = ours(&bytes) {
            prop_assert_eq!(Some(got), oracle(&bytes), "{}", String::from_utf8_lossy(&bytes));
        }
    }
}
