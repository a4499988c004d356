use std::path::Path;

use importer::registry::Registry;

use super::*;

/// One GIN trigram index per registry text column, and only those, built concurrently with
/// the operator class of the extension's schema.
#[test]
fn one_trigram_index_per_text_column() {
    let r = Registry::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../importer/registry/example.yaml"),
    )
    .unwrap();
    let defs = trigram_indexes(&r);
    let orders: Vec<&str> = defs
        .iter()
        .filter(|d| d.table == "orders")
        .map(|d| d.column.as_str())
        .collect();
    assert_eq!(orders, ["status", "currency"]);
    let texts: usize = r
        .types()
        .map(|t| {
            t.columns
                .iter()
                .filter(|c| c.ty == ColumnType::Text)
                .count()
        })
        .sum();
    assert_eq!(defs.len(), texts);
    assert!(defs.iter().all(|d| d.name.len() <= 63));
    let d = defs.iter().find(|d| d.column == "currency").unwrap();
    assert_eq!(d.name, "console_trgm_orders_currency");
    assert_eq!(
        d.create_sql("public"),
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"console_trgm_orders_currency\" \
         ON \"orders\" USING gin (\"currency\" public.gin_trgm_ops)"
    );
}
