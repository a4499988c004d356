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

/// One `(column, tenant_id, natural key…)` index per registry column, built concurrently;
/// the base indexes too.
#[test]
fn column_and_base_indexes_are_concurrent_btrees() {
    let r = Registry::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../importer/registry/example.yaml"),
    )
    .unwrap();
    let defs = column_indexes(&r);
    let columns: usize = r.types().map(|t| t.columns.len()).sum();
    assert_eq!(defs.len(), columns);
    let d = defs
        .iter()
        .find(|d| d.table == "orders" && d.column == "total")
        .unwrap();
    assert_eq!(
        d.create_sql(""),
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"console_orders_total\" \
         ON \"orders\" (\"total\", \"tenant_id\", \"order_id\")"
    );
    assert!(base_indexes().iter().all(|d| d
        .create_sql("")
        .starts_with("CREATE INDEX CONCURRENTLY IF NOT EXISTS")));
}
