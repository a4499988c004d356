use std::path::Path;

use importer::registry::Registry;

use super::*;

fn registry() -> Registry {
    Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../importer/registry/example.yaml"))
        .unwrap()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A crafted value changes only the bound parameters, never the SQL text.
#[test]
fn crafted_values_are_bound() {
    let r = registry();
    let def = r.get("customers").unwrap();
    for d in [Dialect::Postgres, Dialect::Sqlite] {
        let benign = parse(def, d, &pairs(&[("tenant", "acme"), ("name.has", "bob")])).unwrap();
        let evil = "x'); DROP TABLE customers; --";
        let crafted = parse(def, d, &pairs(&[("tenant", evil), ("name.has", evil)])).unwrap();
        let (a, b) = (
            select(def, d, &benign, Some(51)),
            select(def, d, &crafted, Some(51)),
        );
        assert_eq!(a.text, b.text);
        assert!(!b.text.contains("DROP"));
        assert!(b.params.contains(&Param::Text(evil.into())));
    }
}

/// Column names, operators and sort keys outside the registry are refused, naming the parameter.
#[test]
fn unknown_columns_are_refused() {
    let r = registry();
    let def = r.get("customers").unwrap();
    let d = Dialect::Postgres;
    let e = parse(def, d, &pairs(&[("name\"; DROP TABLE x; --.eq", "1")])).unwrap_err();
    assert!(e.problem.contains("not a column"), "{e}");
    assert_eq!(
        parse(def, d, &pairs(&[("sort", "1; DROP")]))
            .unwrap_err()
            .param,
        "sort"
    );
    // contains is for text only; ranges for numbers and dates only.
    assert!(parse(def, d, &pairs(&[("customer_id.has", "1")])).is_err());
    assert!(parse(def, d, &pairs(&[("name.min", "a")])).is_err());
    // Values must fit the column type.
    let e = parse(def, d, &pairs(&[("customer_id.eq", "12x")])).unwrap_err();
    assert_eq!(e.param, "customer_id.eq");
    assert!(parse(def, d, &pairs(&[("created_at.min", "2026-13-01")])).is_err());
}

/// Typed conditions produce typed comparisons with casts on PostgreSQL.
#[test]
fn typed_conditions() {
    let r = registry();
    let def = r.get("orders").unwrap();
    let b = parse(
        def,
        Dialect::Postgres,
        &pairs(&[
            ("total.min", "10.5"),
            ("order_date.max", "2026-01-31"),
            ("status.eq", "open"),
        ]),
    )
    .unwrap();
    let sql = select(def, Dialect::Postgres, &b, None);
    assert!(
        sql.text.contains("\"total\" >= $1::numeric"),
        "{}",
        sql.text
    );
    assert!(
        sql.text.contains("\"order_date\" <= $2::date"),
        "{}",
        sql.text
    );
    assert!(sql.text.contains("\"status\" = $3::text"), "{}", sql.text);
    assert!(sql
        .text
        .ends_with("ORDER BY \"tenant_id\" ASC, \"order_id\" ASC"));
}

/// A cursor from one page's last row continues after it, and a forged cursor is refused.
#[test]
fn keyset_cursor() {
    let r = registry();
    let def = r.get("orders").unwrap();
    let d = Dialect::Postgres;
    let b = parse(def, d, &pairs(&[("sort", "currency"), ("dir", "desc")])).unwrap();
    let row: Vec<Option<String>> = vec![
        Some("acme".into()),
        Some("7".into()),
        Some("1".into()),
        Some("2026-01-01".into()),
        Some("open".into()),
        None,
        Some("1.00".into()),
        None,
    ];
    let c = cursor_after(def, &b, &row);
    let next = parse(
        def,
        d,
        &pairs(&[("sort", "currency"), ("dir", "desc"), ("after", &c)]),
    )
    .unwrap();
    assert_eq!(
        next.after,
        Some(vec![None, Some("acme".into()), Some("7".into())])
    );
    let sql = select(def, d, &next, None);
    assert!(sql.text.contains("(\"currency\" IS NULL AND (\"tenant_id\", \"order_id\") < ($1::text, $2::bigint)) OR \"currency\" IS NOT NULL"), "{}", sql.text);
    assert!(sql.text.ends_with(
        "ORDER BY \"currency\" DESC NULLS FIRST, \"tenant_id\" DESC, \"order_id\" DESC"
    ));
    let forged =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"[null,"acme","1 OR 1=1"]"#);
    assert!(parse(def, d, &pairs(&[("sort", "currency"), ("after", &forged)])).is_err());
}

/// A contains value is a bound `%…%` pattern whose `%`, `_` and `\` match themselves: ILIKE
/// on PostgreSQL (what its trigram index serves), LIKE with an explicit escape on SQLite.
#[test]
fn contains_is_an_escaped_pattern() {
    let r = registry();
    let def = r.get("customers").unwrap();
    assert_eq!(contains_pattern(r"50%_off\x"), r"%50\%\_off\\x%");
    for (d, op) in [
        (Dialect::Postgres, "\"name\" ILIKE $1::text"),
        (Dialect::Sqlite, "\"name\" LIKE ?1 ESCAPE '\\'"),
    ] {
        let b = parse(def, d, &pairs(&[("name.has", "Bob_%")])).unwrap();
        assert_eq!(b.conds[0].value, Param::Text(r"%Bob\_\%%".into()));
        let sql = select(def, d, &b, Some(51));
        assert!(sql.text.contains(op), "{}", sql.text);
        assert_eq!(sql.params, [Param::Text(r"%Bob\_\%%".into())]);
        // The form shows what was typed, not the pattern.
        assert_eq!(b.params["name.has"], "Bob_%");
    }
}

/// Contains needs 3 letters or digits in a row (what a trigram index can look up), and says so
/// naming the parameter; anything with such a run is accepted.
#[test]
fn contains_needs_three_letters_in_a_row() {
    let r = registry();
    let def = r.get("customers").unwrap();
    for d in [Dialect::Postgres, Dialect::Sqlite] {
        for short in ["ab", "%", "_", "a-b-c", "%%%", "12 34", "a\\b"] {
            let e = parse(def, d, &pairs(&[("email.has", short)])).unwrap_err();
            assert_eq!(e.param, "email.has", "{short}");
            assert!(
                e.problem.contains("at least 3 letters or digits in a row"),
                "{short}: {e}"
            );
        }
        for ok in ["bob", "@example.", "x' OR 'abc", "Zoë", "日本語", "123"] {
            assert!(parse(def, d, &pairs(&[("email.has", ok)])).is_ok(), "{ok}");
        }
    }
}
