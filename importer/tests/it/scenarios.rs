//! Scenarios run against both SQLite and PostgreSQL; `backend_tests!` turns each into a test.

use std::io::Write;

use importer::job::Status;
use importer::Report;

use crate::support::*;

const ORDERS_HEADER: &str =
    "Order ID,Customer ID,Order Date,status,currency,Order Total,Last Modified\n";

/// `n` order rows starting at id `from`; `tag` goes into the status column.
pub fn orders(from: usize, n: usize, tag: &str) -> String {
    let mut s = String::from(ORDERS_HEADER);
    for i in from..from + n {
        s.push_str(&format!(
            "{i},{},2026-11-{:02},{tag},EUR,{}.{:02},2026-11-01T10:00:00Z\n",
            i % 97,
            i % 28 + 1,
            i,
            i % 100
        ));
    }
    s
}

fn only(report: &Report) -> &importer::job::Outcome {
    assert_eq!(report.outcomes.len(), 1, "{}", report.text);
    &report.outcomes[0]
}

fn counts(report: &Report) -> (u64, u64, u64, u64) {
    let o = only(report);
    let l = o
        .loaded
        .unwrap_or_else(|| panic!("not loaded: {}", report.text));
    assert_eq!(l.counts.read, l.counts.loaded + l.counts.rejected);
    (l.counts.read, l.counts.loaded, l.counts.rejected, l.written)
}

async fn count(b: &Backend, table: &str, tenant: &str) -> usize {
    b.value(&format!(
        "SELECT CAST(count(*) AS TEXT) FROM {table} WHERE tenant_id = '{tenant}'"
    ))
    .await
    .parse()
    .unwrap()
}

async fn snapshot(b: &Backend, tenant: &str) -> Vec<Vec<String>> {
    b.rows(&format!(
        "SELECT CAST(order_id AS TEXT), CAST(customer_id AS TEXT), CAST(order_date AS TEXT), status, \
         currency, CAST(total AS TEXT), CAST(updated_at AS TEXT) FROM orders WHERE tenant_id = '{tenant}' ORDER BY order_id"
    ))
    .await
}

pub async fn edge_cases(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let csv =
        "\u{feff}Order ID,Customer ID,Order Date,status,currency,Order Total,Last Modified\r\n\
               1,10,2026-11-01,\"open, pending\",EUR,12.50,2026-11-01T10:00:00Z\r\n\
               2,11,2026-11-02,\"multi\r\nline \"\"quoted\"\"\",USD,99.99,\r\n\
               3,12,2026-11-03,ünïcødé ✓ 日本,JPY,1,\r\n";
    let f = s.file("edge.json", payload("orders", csv));
    let r = importer(s, b, &["load", f.to_str().unwrap(), "--tenant", "acme"]).await;
    assert_eq!(counts(&r), (3, 3, 0, 3));
    let rows = b
        .rows("SELECT CAST(order_id AS TEXT), status, currency FROM orders WHERE tenant_id = 'acme' ORDER BY order_id")
        .await;
    assert_eq!(
        rows,
        vec![
            vec!["1", "open, pending", "EUR"],
            vec!["2", "multi\r\nline \"quoted\"", "USD"],
            vec!["3", "ünïcødé ✓ 日本", "JPY"],
        ]
    );
    assert!(s.spool_is_empty());
}

pub async fn empty_and_header_only(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let empty = s.file("empty.csv", "");
    let header = s.file(
        "header.csv",
        "Order ID,Customer ID,Order Date,status,Order Total\r\n",
    );
    for f in [&empty, &header] {
        let r = importer(
            s,
            b,
            &[
                "load",
                f.to_str().unwrap(),
                "--tenant",
                "acme",
                "--module",
                "orders",
            ],
        )
        .await;
        assert_eq!(only(&r).status, Status::Empty, "{}", r.text);
        assert_eq!(r.failed(), 0);
        assert_eq!(counts(&r), (0, 0, 0, 0));
    }
    assert_eq!(count(b, "orders", "acme").await, 0);
    assert_eq!(
        b.rows("SELECT status, error FROM import_runs ORDER BY id")
            .await,
        vec![vec!["empty", "empty export (no data rows)"]; 2]
    );
    // --on-empty fail makes it a failure.
    let r = importer(
        s,
        b,
        &[
            "load",
            empty.to_str().unwrap(),
            "--tenant",
            "acme",
            "--module",
            "orders",
            "--on-empty",
            "fail",
        ],
    )
    .await;
    assert_eq!(only(&r).status, Status::Failed, "{}", r.text);
    assert!(only(&r).error.as_deref().unwrap().contains("empty export"));
}

pub async fn bad_rows_rejected(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let csv = format!(
        "{ORDERS_HEADER}\
         1,10,2026-11-01,open,EUR,1.00,\n\
         2,10,2026-02-30,open,EUR,1.00,\n\
         3,10,2026-11-01,open\n\
         4,10,2026-11-01,open,EUR,1.00,,extra\n\
         5,10,2026-11-01,,EUR,1.00,\n\
         6,10,2026-11-01,open,EUR,1.005,\n\
         7,10,2026-11-01,\"ok, fine\",EUR,2.00,\n"
    );
    let f = s.file("orders.csv", csv);
    let r = importer(s, b, &["load", f.to_str().unwrap(), "--tenant", "acme"]).await;
    assert_eq!(counts(&r), (7, 2, 5, 2));
    let run = only(&r).run_id.unwrap();
    let rejects = b
        .rows(&format!(
            "SELECT CAST(line AS TEXT), COALESCE(column_name, '-'), raw_record, reason FROM import_rejects \
             WHERE run_id = {run} ORDER BY line"
        ))
        .await;
    let file = f.display().to_string();
    assert_eq!(
        rejects,
        vec![
            vec![
                "3",
                "order_date",
                "2,10,2026-02-30,open,EUR,1.00,",
                "date out of range"
            ],
            vec![
                "4",
                "-",
                "3,10,2026-11-01,open",
                "expected 7 fields, found 4"
            ],
            vec![
                "5",
                "-",
                "4,10,2026-11-01,open,EUR,1.00,,extra",
                "expected 7 fields, found 8"
            ],
            vec![
                "6",
                "status",
                "5,10,2026-11-01,,EUR,1.00,",
                "required value is empty"
            ],
            vec![
                "7",
                "total",
                "6,10,2026-11-01,open,EUR,1.005,",
                "decimal has more than 2 decimal places"
            ],
        ]
    );
    assert_eq!(
        b.value(&format!(
            "SELECT file FROM import_rejects WHERE run_id = {run} LIMIT 1"
        ))
        .await,
        file
    );
    assert_eq!(
        b.rows(&format!(
            "SELECT status, CAST(rows_read AS TEXT), CAST(rows_loaded AS TEXT), CAST(rows_rejected AS TEXT) \
             FROM import_runs WHERE id = {run}"
        ))
        .await,
        vec![vec!["succeeded", "7", "2", "5"]]
    );
    assert_eq!(count(b, "orders", "acme").await, 2);
}

/// A zip whose deflate stream is damaged well after its start, so parsing gets going first.
fn corrupt_zip(csv: &str) -> Vec<u8> {
    let mut zip = zip_of("orders.csv", csv.as_bytes());
    let mid = zip.len() / 2;
    for b in &mut zip[mid..mid + 64] {
        *b ^= 0x5a;
    }
    zip
}

pub async fn bad_files_refused_whole(s: &Scratch, b: &Backend) {
    use base64::Engine;
    migrate(s, b).await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let big = orders(1, 20_000, "open");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "b64.json",
            br#"{"module_name":"orders","data":"not*base64!"}"#.to_vec(),
            "not valid base64",
        ),
        (
            "nozip.json",
            format!(
                r#"{{"module_name":"orders","data":"{}"}}"#,
                b64(b"plain text, not a zip")
            )
            .into_bytes(),
            "zip",
        ),
        (
            "unknown.json",
            payload("nosuch", "id\n1\n"),
            "unknown module \"nosuch\"",
        ),
        (
            "header.json",
            payload("orders", "Order ID,Colour\n1,red\n"),
            "\"Colour\" is not a column",
        ),
        (
            "missing.json",
            payload("orders", "Order ID,status\n1,open\n"),
            "required column customer_id is missing",
        ),
        (
            "crc.json",
            format!(
                r#"{{"module_name":"orders","data":"{}"}}"#,
                b64(&corrupt_zip(&big))
            )
            .into_bytes(),
            "zip: entry \"orders.csv\"",
        ),
        (
            "quote.csv.json",
            payload(
                "orders",
                &format!("{ORDERS_HEADER}164,1,2026-11-01,ok,EUR,1.00,\n165,1,2026-11-01,\"abc,EUR,1.00,\n166,1,2026-11-01,ok,EUR,1.00,\n167,1,2026-11-01,ok,EUR,1.00,\n"),
            ),
            "CSV: line 3: unterminated quoted field",
        ),
    ];
    for (name, body, want) in cases {
        let f = s.file(name, body);
        let r = importer(s, b, &["load", f.to_str().unwrap(), "--tenant", "acme"]).await;
        let o = only(&r);
        assert_eq!(o.status, Status::Failed, "{name}: {}", r.text);
        let err = o.error.clone().unwrap();
        assert!(err.contains(want), "{name}: {err} should contain {want}");
        let run = o.run_id.expect("failed runs are recorded");
        assert_eq!(
            b.rows(&format!(
                "SELECT status, error FROM import_runs WHERE id = {run}"
            ))
            .await,
            vec![vec!["failed".to_string(), err]]
        );
        assert_eq!(
            b.value(&format!(
                "SELECT CAST(count(*) AS TEXT) FROM import_rejects WHERE run_id = {run}"
            ))
            .await,
            "0"
        );
        assert_eq!(
            count(b, "orders", "acme").await,
            0,
            "{name} left rows behind"
        );
        assert!(s.spool_is_empty(), "{name} left a temp file");
    }
    // The same damage after a first load: the existing rows stay as they were.
    let good = s.file("good.json", payload("orders", &orders(1, 100, "open")));
    importer(s, b, &["load", good.to_str().unwrap(), "--tenant", "acme"]).await;
    let before = snapshot(b, "acme").await;
    let bad = s.file(
        "crc2.json",
        format!(
            r#"{{"module_name":"orders","data":"{}"}}"#,
            b64(&corrupt_zip(&orders(1, 20_000, "changed")))
        ),
    );
    let r = importer(s, b, &["load", bad.to_str().unwrap(), "--tenant", "acme"]).await;
    assert_eq!(only(&r).status, Status::Failed, "{}", r.text);
    assert_eq!(snapshot(b, "acme").await, before);
}

pub async fn rerun_is_idempotent(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let f = s.file("orders.json", payload("orders", &orders(1, 1000, "open")));
    let path = f.to_str().unwrap();
    let first = importer(s, b, &["load", path, "--tenant", "acme"]).await;
    assert_eq!(counts(&first), (1000, 1000, 0, 1000));
    let before = snapshot(b, "acme").await;
    let again = importer(s, b, &["load", path, "--tenant", "acme"]).await;
    assert_eq!(only(&again).status, Status::Duplicate, "{}", again.text);
    let dup = only(&again).run_id.unwrap();
    assert_eq!(
        b.rows(&format!(
            "SELECT status, CAST(duplicate_of AS TEXT) FROM import_runs WHERE id = {dup}"
        ))
        .await,
        vec![vec![
            "duplicate".to_string(),
            only(&first).run_id.unwrap().to_string()
        ]]
    );
    let forced = importer(s, b, &["load", path, "--tenant", "acme", "--force"]).await;
    assert_eq!(counts(&forced), (1000, 1000, 0, 0));
    assert_eq!(snapshot(b, "acme").await, before);
}

pub async fn redelivery_writes_only_changes(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let first = s.file("v1.json", payload("orders", &orders(1, 1000, "open")));
    importer(s, b, &["load", first.to_str().unwrap(), "--tenant", "acme"]).await;
    // Rows 1..=900 unchanged, 901..=1000 changed, 1001..=1010 new.
    let mut v2 = orders(1, 900, "open");
    v2.push_str(orders(901, 100, "shipped").trim_start_matches(ORDERS_HEADER));
    v2.push_str(orders(1001, 10, "new").trim_start_matches(ORDERS_HEADER));
    let second = s.file("v2.json", payload("orders", &v2));
    let r = importer(
        s,
        b,
        &["load", second.to_str().unwrap(), "--tenant", "acme"],
    )
    .await;
    assert_eq!(counts(&r), (1010, 1010, 0, 110));
    assert_eq!(
        only(&r).loaded.unwrap().path,
        importer::db::LoadPath::Staged
    );
    assert_eq!(count(b, "orders", "acme").await, 1010);
    assert_eq!(
        b.rows("SELECT status, CAST(count(*) AS TEXT) FROM orders WHERE tenant_id = 'acme' GROUP BY status ORDER BY status").await,
        vec![vec!["new", "10"], vec!["open", "900"], vec!["shipped", "100"]]
    );
    // A later delivery without some rows keeps them (exports are applied as upserts).
    let third = s.file("v3.json", payload("orders", &orders(1, 5, "open")));
    let r = importer(s, b, &["load", third.to_str().unwrap(), "--tenant", "acme"]).await;
    assert_eq!(counts(&r), (5, 5, 0, 0));
    assert_eq!(count(b, "orders", "acme").await, 1010);
}

pub async fn duplicate_keys_last_wins(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let csv = format!(
        "{ORDERS_HEADER}1,10,2026-11-01,first,EUR,1.00,\n2,10,2026-11-01,only,EUR,1.00,\n1,10,2026-11-01,second,EUR,1.00,\n1,10,2026-11-01,third,EUR,1.00,\n"
    );
    let f = s.file("dups.csv", &csv);
    // Into an empty slice: the direct COPY/INSERT trips the key and falls back to staging.
    let r = importer(
        s,
        b,
        &[
            "load",
            f.to_str().unwrap(),
            "--tenant",
            "acme",
            "--module",
            "orders",
        ],
    )
    .await;
    assert_eq!(counts(&r).0, 4);
    assert_eq!(counts(&r).1, 4);
    let status = |b: &Backend| {
        let b = b.clone();
        async move {
            b.rows("SELECT CAST(order_id AS TEXT), status FROM orders WHERE tenant_id = 'acme' ORDER BY order_id").await
        }
    };
    assert_eq!(status(b).await, vec![vec!["1", "third"], vec!["2", "only"]]);
    // Into an occupied slice: the staged upsert keeps the last occurrence too.
    let csv2 = csv.replace("third", "fourth").replace("first", "zeroth");
    let f2 = s.file("dups2.csv", csv2);
    importer(
        s,
        b,
        &[
            "load",
            f2.to_str().unwrap(),
            "--tenant",
            "acme",
            "--module",
            "orders",
        ],
    )
    .await;
    assert_eq!(
        status(b).await,
        vec![vec!["1", "fourth"], vec!["2", "only"]]
    );
    // The last occurrence equals what is stored and an earlier one differs: nothing changes.
    let csv3 = format!(
        "{ORDERS_HEADER}1,10,2026-11-01,interim,EUR,1.00,\n1,10,2026-11-01,fourth,EUR,1.00,\n"
    );
    let f3 = s.file("dups3.csv", csv3);
    let r = importer(
        s,
        b,
        &[
            "load",
            f3.to_str().unwrap(),
            "--tenant",
            "acme",
            "--module",
            "orders",
        ],
    )
    .await;
    assert_eq!(counts(&r), (2, 2, 0, 0));
    assert_eq!(
        status(b).await,
        vec![vec!["1", "fourth"], vec!["2", "only"]]
    );
}

pub async fn many_generated_types(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let types = importer(s, b, &["types"]).await;
    assert!(
        types
            .text
            .contains(&format!("{} types", GENERATED_TYPES + 8 + EXTRA_TYPES)),
        "{}",
        types.text
    );
    let dir = s.dir.path().join("exports");
    std::fs::create_dir(&dir).unwrap();
    for t in 0..GENERATED_TYPES {
        let csv = generated_csv(t, 50 + t);
        // A mix of the three input kinds.
        match t % 3 {
            0 => std::fs::write(dir.join(format!("gen_{t:02}.csv")), csv).unwrap(),
            1 => std::fs::write(
                dir.join(format!("gen_{t:02}.zip")),
                zip_of("x.csv", csv.as_bytes()),
            )
            .unwrap(),
            _ => std::fs::write(
                dir.join(format!("p{t:02}.json")),
                payload(&format!("gen_{t:02}"), &csv),
            )
            .unwrap(),
        }
    }
    let r = importer(
        s,
        b,
        &[
            "load",
            dir.to_str().unwrap(),
            "--tenant",
            "acme",
            "--jobs",
            "4",
        ],
    )
    .await;
    assert_eq!(r.outcomes.len(), GENERATED_TYPES);
    assert_eq!(r.failed(), 0, "{}", r.text);
    for t in 0..GENERATED_TYPES {
        assert_eq!(
            count(b, &format!("gen_{t:02}"), "acme").await,
            50 + t,
            "gen_{t:02}"
        );
    }
    // Typed values survive: the timestamp and bigint columns of gen_05, row 3.
    assert_eq!(
        b.rows("SELECT CAST(c4 AS TEXT), CAST(c6 AS TEXT) FROM gen_05 WHERE tenant_id = 'acme' AND id = 3")
            .await,
        vec![vec!["2026-01-01 03:03:00".to_string(), (3i64 << 33).to_string()]]
    );
    assert!(s.spool_is_empty());
}

pub async fn tenants_are_isolated(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let f = s.file("orders.json", payload("orders", &orders(1, 10, "open")));
    for tenant in ["acme", "globex"] {
        let r = importer(s, b, &["load", f.to_str().unwrap(), "--tenant", tenant]).await;
        assert_eq!(counts(&r), (10, 10, 0, 10), "{tenant}");
    }
    assert_eq!(count(b, "orders", "acme").await, 10);
    assert_eq!(count(b, "orders", "globex").await, 10);
}

pub async fn shards_split_work(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let dir = s.dir.path().join("shard");
    std::fs::create_dir(&dir).unwrap();
    for t in 0..4 {
        std::fs::write(dir.join(format!("gen_{t:02}.csv")), generated_csv(t, 5)).unwrap();
    }
    let d = dir.to_str().unwrap();
    let a = importer(s, b, &["load", d, "--tenant", "acme", "--shard", "0/2"]).await;
    let c = importer(s, b, &["load", d, "--tenant", "acme", "--shard", "1/2"]).await;
    let modules = |r: &Report| {
        r.outcomes
            .iter()
            .map(|o| o.module.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(modules(&a), vec!["gen_00", "gen_02"]);
    assert_eq!(modules(&c), vec!["gen_01", "gen_03"]);
    for t in 0..4 {
        assert_eq!(count(b, &format!("gen_{t:02}"), "acme").await, 5);
    }
}

pub async fn shutdown_rolls_back(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    // Big enough that a debug build is still loading when the signal comes.
    let big = s.file("big.csv", orders(1, 400_000, "open"));
    let small = s.file("small.csv", orders(1, 10, "open"));
    let signal = tokio::time::sleep(std::time::Duration::from_millis(300));
    let r = importer_until(
        s,
        b,
        &[
            "load",
            big.to_str().unwrap(),
            small.to_str().unwrap(),
            "--tenant",
            "acme",
            "--module",
            "orders",
            "--jobs",
            "1",
        ],
        signal,
    )
    .await;
    assert!(r.interrupted, "{}", r.text);
    assert!(
        r.outcomes.iter().all(|o| o.status == Status::Interrupted),
        "{}",
        r.text
    );
    let big_run = r
        .outcomes
        .iter()
        .find(|o| o.source.ends_with("big.csv"))
        .unwrap();
    assert_eq!(
        big_run.error.as_deref(),
        Some(format!("{}: interrupted", big.display()).as_str())
    );
    let small_run = r
        .outcomes
        .iter()
        .find(|o| o.source.ends_with("small.csv"))
        .unwrap();
    assert_eq!(
        small_run.error.as_deref(),
        Some("interrupted before it started")
    );
    assert_eq!(small_run.run_id, None);
    assert_eq!(
        b.rows("SELECT status, error FROM import_runs").await,
        vec![vec![
            "interrupted".to_string(),
            format!("{}: interrupted", big.display())
        ]]
    );
    assert_eq!(count(b, "orders", "acme").await, 0);
    assert!(s.spool_is_empty());
}

/// Loads a local file as `module` and returns the report.
async fn load_as(s: &Scratch, b: &Backend, file: &std::path::Path, module: &str) -> Report {
    importer(
        s,
        b,
        &[
            "load",
            file.to_str().unwrap(),
            "--tenant",
            "acme",
            "--module",
            module,
        ],
    )
    .await
}

async fn rejects_of(b: &Backend, run: i64) -> Vec<Vec<String>> {
    b.rows(&format!(
        "SELECT CAST(line AS TEXT), COALESCE(column_name, '-'), raw_record, reason FROM import_rejects \
         WHERE run_id = {run} ORDER BY line"
    ))
    .await
}

pub async fn nul_and_bad_utf8_rejected(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let mut csv = ORDERS_HEADER.as_bytes().to_vec();
    csv.extend_from_slice(b"1,10,2026-11-01,ok,EUR,1.00,\n");
    csv.extend_from_slice(b"2,10,2026-11-01,a\0b,EUR,1.00,\n");
    csv.extend_from_slice(b"3,10,2026-11-01,\xff\xfe,EUR,1.00,\n");
    csv.extend_from_slice(b"4,10,2026-11-01,back\\slash,EUR,1.00,\n");
    let f = s.file("nul.csv", csv);
    let r = load_as(s, b, &f, "orders").await;
    assert_eq!(counts(&r), (4, 2, 2, 2));
    let run = only(&r).run_id.unwrap();
    assert_eq!(
        rejects_of(b, run).await,
        vec![
            vec![
                "3",
                "status",
                "2,10,2026-11-01,a\\x00b,EUR,1.00,",
                "text contains a NUL byte"
            ],
            vec![
                "4",
                "status",
                "3,10,2026-11-01,\\xff\\xfe,EUR,1.00,",
                "invalid UTF-8"
            ],
        ]
    );
    assert_eq!(
        b.value("SELECT status FROM orders WHERE tenant_id = 'acme' AND order_id = 4")
            .await,
        "back\\slash"
    );
}

pub async fn repeated_keys_beyond_a_batch(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    // 1,000 rows into an empty slice: ids 1..=500, then all of them again.
    let mut csv = orders(1, 500, "first");
    csv.push_str(orders(1, 500, "second").trim_start_matches(ORDERS_HEADER));
    let f = s.file("repeats.csv", csv);
    let r = load_as(s, b, &f, "orders").await;
    assert_eq!(counts(&r), (1000, 1000, 0, 500));
    assert_eq!(
        only(&r).loaded.unwrap().path,
        importer::db::LoadPath::Staged
    );
    assert_eq!(
        b.rows("SELECT status, CAST(count(*) AS TEXT) FROM orders WHERE tenant_id = 'acme' GROUP BY status")
            .await,
        vec![vec!["second", "500"]]
    );
}

pub async fn reserved_words_and_empty_strings(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let f = s.file(
        "reserved.csv",
        "user,select,group\n1,a,1.50\n2,\"\",\n3,,\"\"\n",
    );
    let r = load_as(s, b, &f, "reserved").await;
    assert_eq!(counts(&r), (3, 3, 0, 3));
    let q = "SELECT CAST(\"user\" AS TEXT), CASE WHEN \"select\" IS NULL THEN 'NULL' ELSE '[' || \"select\" || ']' END, \
             CAST(\"group\" AS TEXT) FROM \"order\" ORDER BY \"user\"";
    assert_eq!(
        b.rows(q).await,
        vec![
            vec!["1", "[a]", "1.50"],
            vec!["2", "[]", "∅"],
            vec!["3", "NULL", "∅"],
        ]
    );
    // The staged path quotes them too.
    let f2 = s.file("reserved2.csv", "user,select,group\n1,b,1.50\n2,\"\",\n");
    let r = load_as(s, b, &f2, "reserved").await;
    assert_eq!(counts(&r), (2, 2, 0, 1));
    assert_eq!(
        only(&r).loaded.unwrap().path,
        importer::db::LoadPath::Staged
    );
}

pub async fn csv_spectrum(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    for case in SPECTRUM {
        let f = spectrum_file(case, "csv");
        let r = load_as(s, b, &f, &format!("spectrum_{case}")).await;
        let table = format!("spectrum_{case}");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(spectrum_file(case, "json")).unwrap()).unwrap();
        // This case's JSON is one object, not a list, and names another phone number than
        // its CSV; the other fields must match.
        let want = match json {
            serde_json::Value::Array(rows) => rows,
            mut one => {
                one["Contact Phone Number"] = "2095257564".into();
                vec![one]
            }
        };
        let csv = std::fs::read_to_string(&f).unwrap();
        let names: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let cols: Vec<String> = (0..names.len()).map(|i| format!("c{i}")).collect();
        let mut got = b
            .rows(&format!("SELECT {} FROM {table}", cols.join(", ")))
            .await;
        got.sort();
        let mut want: Vec<Vec<String>> = want
            .iter()
            .map(|row| {
                names
                    .iter()
                    .map(|n| row[*n].as_str().unwrap().to_string())
                    .collect()
            })
            .collect();
        want.sort();
        assert_eq!(got, want, "{case}");
        assert_eq!(counts(&r).2, 0, "{case}");
    }
}

pub async fn record_size_limits(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    // The type's own limit (100 bytes).
    let long = "y".repeat(300);
    let f = s.file(
        "small.csv",
        format!("id,v\n1,short\n2,\"{long}\n{long}\"\n3,ok\n"),
    );
    let r = load_as(s, b, &f, "small-records").await;
    assert_eq!(counts(&r), (3, 2, 1, 2));
    let rejects = rejects_of(b, only(&r).run_id.unwrap()).await;
    assert_eq!(rejects[0][0], "3");
    assert_eq!(
        rejects[0][3],
        "record longer than 100 bytes (max_record_bytes)"
    );
    assert!(rejects[0][2].starts_with("2,yyy") && rejects[0][2].ends_with('…'));
    // The command line's default for other types.
    let f = s.file(
        "orders.csv",
        format!(
            "{ORDERS_HEADER}1,10,2026-11-01,{},EUR,1.00,\n2,10,2026-11-01,ok,EUR,1.00,\n",
            "z".repeat(5000)
        ),
    );
    let r = importer(
        s,
        b,
        &[
            "--max-record-bytes",
            "1000",
            "load",
            f.to_str().unwrap(),
            "--tenant",
            "acme",
        ],
    )
    .await;
    assert_eq!(counts(&r), (2, 1, 1, 1));
}

/// A fake export API with answers that are wrong in the ways real ones are.
async fn odd_api() -> (String, tokio::task::JoinHandle<()>) {
    use axum::body::Body;
    use axum::extract::Path;
    use axum::http::header::CONTENT_TYPE;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let broken = Arc::new(AtomicUsize::new(0));
    let export = move |Path(module): Path<String>| {
        let broken = broken.clone();
        async move {
            let json = [(CONTENT_TYPE, "application/json")];
            match module.as_str() {
                // An HTML page with 200, as a misrouted proxy gives.
                "customers" => (
                    [(CONTENT_TYPE, "text/html")],
                    "<!doctype html><title>Sign in</title>",
                )
                    .into_response(),
                // A bare CSV.
                "products" => ([(CONTENT_TYPE, "text/csv")], "product_id\n1\n").into_response(),
                // JSON of the wrong shape.
                "payments" => (json, "[1, 2, 3]").into_response(),
                // A body that breaks off the first time.
                "orders" => {
                    let body = payload("orders", &orders(1, 3, "open"));
                    if broken.fetch_add(1, Ordering::SeqCst) == 0 {
                        let half = body[..body.len() / 2].to_vec();
                        let stream = futures_util::stream::iter(vec![
                            Ok::<_, std::io::Error>(half),
                            Err(std::io::Error::other("connection reset")),
                        ]);
                        Response::builder()
                            .header(CONTENT_TYPE, "application/json")
                            .header("content-length", body.len().to_string())
                            .body(Body::from_stream(stream))
                            .unwrap()
                    } else {
                        (json, body).into_response()
                    }
                }
                // No data rows.
                "invoices" => {
                    (json, payload("invoices", "invoice_no,issued_on,amount\n")).into_response()
                }
                _ => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/exports/{module}", get(export));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

pub async fn export_answers_checked(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let (url, server) = odd_api().await;
    let r = importer(
        s,
        b,
        &[
            "run",
            "--base-url",
            &url,
            "--tenant",
            "acme",
            "--date",
            "2026-11-27",
            "--type",
            "customers,products,payments,orders,invoices",
        ],
    )
    .await;
    server.abort();
    let by = |m: &str| r.outcomes.iter().find(|o| o.module == m).unwrap();
    let err = |m: &str| by(m).error.clone().unwrap_or_default();
    assert_eq!(by("customers").status, Status::Failed, "{}", r.text);
    assert!(
        err("customers").contains("HTTP: GET")
            && err("customers")
                .contains("got Content-Type text/html with a body starting \"<!doctype html>"),
        "{}",
        err("customers")
    );
    assert!(
        err("products").contains("Content-Type text/csv"),
        "{}",
        err("products")
    );
    assert!(
        err("payments").contains("got application/json with a body starting \"[1, 2, 3]\""),
        "{}",
        err("payments")
    );
    assert_eq!(by("orders").status, Status::Loaded, "retried: {}", r.text);
    assert_eq!(by("invoices").status, Status::Empty, "{}", r.text);
    assert_eq!(count(b, "orders", "acme").await, 3);
}

pub async fn wide_type(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let wide = |tag: &str| {
        let mut csv = String::from("id");
        for j in 1..200 {
            csv.push_str(&format!(",c{j}"));
        }
        csv.push('\n');
        for i in 0..1000 {
            csv.push_str(&i.to_string());
            for j in 1..200 {
                csv.push_str(&format!(",{tag}{j}"));
            }
            csv.push('\n');
        }
        csv
    };
    let f = s.file("wide.csv", wide("v"));
    let r = load_as(s, b, &f, "wide").await;
    assert_eq!(counts(&r), (1000, 1000, 0, 1000));
    let f = s.file("wide2.csv", wide("w"));
    let r = load_as(s, b, &f, "wide").await;
    assert_eq!(counts(&r), (1000, 1000, 0, 1000));
    assert_eq!(
        b.value("SELECT c199 FROM wide WHERE tenant_id = 'acme' AND id = 999")
            .await,
        "w199"
    );
}

pub async fn killed_run_is_abandoned(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let big = s.file("big.csv", orders(1, 400_000, "open"));
    let mut cmd = importer_bin(s, b);
    cmd.args([
        "load",
        big.to_str().unwrap(),
        "--tenant",
        "acme",
        "--module",
        "orders",
    ]);
    let mut child = testkit::Proc::spawn("the importer", &mut cmd.into());
    let pid = child.pid().unwrap();
    testkit::eventually(
        std::time::Duration::from_secs(60),
        "a running run",
        || async {
            b.value("SELECT CAST(count(*) AS TEXT) FROM import_runs WHERE status = 'running'")
                .await
                == "1"
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    child.kill().await; // SIGKILL, then reaped
    let small = s.file("small.csv", orders(1, 10, "open"));
    let r = load_as(s, b, &small, "orders").await;
    assert_eq!(counts(&r), (10, 10, 0, 10));
    let runs = b
        .rows("SELECT status, COALESCE(error, '') FROM import_runs ORDER BY id")
        .await;
    assert_eq!(runs[0][0], "abandoned", "{runs:?}");
    assert!(
        runs[0][1].starts_with("abandoned: owner ")
            && runs[0][1].contains(&format!("/{pid}/"))
            && runs[0][1].ends_with(&format!("process {pid} is not running")),
        "{runs:?}"
    );
    assert_eq!(runs[1][0], "succeeded");
    assert_eq!(count(b, "orders", "acme").await, 10);
}

/// Peak RSS of a finished command, from GNU time.
fn peak_rss_kb(
    cmd: &mut std::process::Command,
    out: &std::path::Path,
) -> (std::process::Output, u64) {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(out)
        .arg(program)
        .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let output = timed
        .output()
        .expect("GNU time at /usr/bin/time (scripts/setup installs it)");
    let text = std::fs::read_to_string(out).unwrap();
    let kb = text.trim().lines().last().unwrap().parse().unwrap();
    (output, kb)
}

pub async fn bomb_in_bounded_memory(s: &Scratch, b: &Backend) {
    use base64::Engine;
    migrate(s, b).await;
    // A 256 MB field inside a zip of about 250 KB.
    let zip_path = s.dir.path().join("bomb.zip");
    {
        let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        w.start_file("orders.csv", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(ORDERS_HEADER.as_bytes()).unwrap();
        w.write_all(b"1,10,2026-11-01,").unwrap();
        let mib = vec![b'x'; 1 << 20];
        for _ in 0..256 {
            w.write_all(&mib).unwrap();
        }
        w.write_all(b",EUR,1.00,\n2,10,2026-11-01,ok,EUR,1.00,\n")
            .unwrap();
        w.finish().unwrap();
    }
    let zip = std::fs::read(&zip_path).unwrap();
    // And an unknown key holding a 100 MB string in front of the data.
    let payload = s.dir.path().join("bomb.json");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&payload).unwrap());
        f.write_all(br#"{"module_name":"orders","junk":""#).unwrap();
        let mib = vec![b'a'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&mib).unwrap();
        }
        f.write_all(br#"","data":""#).unwrap();
        f.write_all(
            base64::engine::general_purpose::STANDARD
                .encode(&zip)
                .as_bytes(),
        )
        .unwrap();
        f.write_all(br#""}"#).unwrap();
    }
    let (out, kb) = peak_rss_kb(
        importer_bin(s, b).args(["load", payload.to_str().unwrap(), "--tenant", "acme"]),
        &s.dir.path().join("rss.txt"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(kb <= 32 * 1024, "peak RSS {kb} kB over 32 MB");
    assert_eq!(
        b.rows("SELECT status, CAST(rows_read AS TEXT), CAST(rows_loaded AS TEXT), CAST(rows_rejected AS TEXT) FROM import_runs")
            .await,
        vec![vec!["succeeded", "2", "1", "1"]]
    );
    let reason = b.value("SELECT reason FROM import_rejects").await;
    assert_eq!(
        reason,
        "record longer than 1048576 bytes (max_record_bytes)"
    );
    eprintln!("bomb: peak RSS {kb} kB");
}

/// A fake export API: `GET /exports/{module}?date=` with `x-tenant-id`; knows only `orders`.
pub async fn fake_api() -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::{Path, Query};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    async fn export(
        Path(module): Path<String>,
        Query(q): Query<std::collections::HashMap<String, String>>,
        headers: HeaderMap,
    ) -> Result<([(axum::http::HeaderName, &'static str); 1], Vec<u8>), StatusCode> {
        let tenant = headers
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .ok_or(StatusCode::BAD_REQUEST)?;
        if q.get("date").map(String::as_str) != Some("2026-11-27") {
            return Err(StatusCode::BAD_REQUEST);
        }
        let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
        match module.as_str() {
            "orders" => {
                let rows = if tenant == "acme" { 3 } else { 5 };
                Ok((json, payload("orders", &orders(1, rows, tenant))))
            }
            "invoices" => Ok((json, payload("payments", "payment_id\n"))),
            _ => Err(StatusCode::NOT_FOUND),
        }
    }
    let app = axum::Router::new().route("/exports/{module}", get(export));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

pub async fn run_fetches_exports(s: &Scratch, b: &Backend) {
    migrate(s, b).await;
    let (url, server) = fake_api().await;
    let r = importer(
        s,
        b,
        &[
            "run",
            "--base-url",
            &url,
            "--tenant",
            "acme,globex",
            "--date",
            "2026-11-27",
            "--type",
            "orders,customers,invoices",
        ],
    )
    .await;
    server.abort();
    let got: Vec<(String, String, Status)> = r
        .outcomes
        .iter()
        .map(|o| (o.tenant.clone(), o.module.clone(), o.status))
        .collect();
    let want: Vec<(String, String, Status)> = [
        ("acme", "customers", Status::Missing),
        ("acme", "orders", Status::Loaded),
        ("acme", "payments", Status::Failed),
        ("globex", "customers", Status::Missing),
        ("globex", "orders", Status::Loaded),
        ("globex", "payments", Status::Failed),
    ]
    .into_iter()
    .map(|(t, m, st)| (t.to_string(), m.to_string(), st))
    .collect();
    assert_eq!(got, want, "{}", r.text);
    assert!(r.outcomes[2]
        .error
        .as_deref()
        .unwrap()
        .contains("payload module \"payments\" but \"invoices\""));
    assert_eq!(count(b, "orders", "acme").await, 3);
    assert_eq!(count(b, "orders", "globex").await, 5);
    assert_eq!(
        b.value(
            "SELECT CAST(export_date AS TEXT) FROM import_runs WHERE status = 'succeeded' LIMIT 1"
        )
        .await,
        "2026-11-27"
    );
    assert!(s.spool_is_empty());
    let _ = std::io::stderr().flush();
}

/// Defines one test per scenario for a backend made by `$make` (an async expression using `s`).
#[macro_export]
macro_rules! backend_tests {
    (|$s:ident| $make:expr) => {
        backend_tests!(@each |$s| $make;
            /// Quoted commas, quoted newlines, CRLF, a BOM and UTF-8 load exactly as written.
            edge_cases,
            /// An empty file and a header-only file load nothing and succeed.
            empty_and_header_only,
            /// Bad rows land in import_rejects with line, column, raw record and reason; read = loaded + rejected.
            bad_rows_rejected,
            /// Undecodable base64, a non-zip, an unknown module, a bad header and a damaged zip commit nothing.
            bad_files_refused_whole,
            /// Identical re-delivery is a duplicate; forced reloads leave the same contents.
            rerun_is_idempotent,
            /// A re-delivery with changes writes only the changed and new rows.
            redelivery_writes_only_changes,
            /// A key repeated inside one file: the last occurrence wins, on both load paths.
            duplicate_keys_last_wins,
            /// More than 50 generated types load in parallel from payloads, zips and CSVs.
            many_generated_types,
            /// The same file for two tenants fills two separate slices.
            tenants_are_isolated,
            /// --shard i/n splits a directory without overlap or gaps.
            shards_split_work,
            /// `importer run` fetches each tenant's exports, skips 404s and refuses a wrong module.
            run_fetches_exports,
            /// A shutdown signal stops the load in flight, rolls it back, records it interrupted, and starts nothing new.
            shutdown_rolls_back,
            /// NUL and invalid UTF-8 reject their rows, stored escaped, and the file still loads.
            nul_and_bad_utf8_rejected,
            /// A key repeated in a 1,000-row file (beyond one batch) into an empty slice: the last occurrence wins.
            repeated_keys_beyond_a_batch,
            /// Reserved words as table and column names work on both load paths; `""` is an empty string, an empty field NULL.
            reserved_words_and_empty_strings,
            /// csv-spectrum's cases load exactly as their JSON says (the one with a Latin-1 byte is rejected, escaped).
            csv_spectrum,
            /// Records over the type's or the default size limit are rejected with the reason; the rest load.
            record_size_limits,
            /// HTML, bare CSV and wrongly shaped answers are refused naming what arrived; a broken body is retried; no rows is `empty`.
            export_answers_checked,
            /// A 200-column type loads on both paths (SQLite batches stay under its parameter limit).
            wide_type,
            /// kill -9 during a load, then a new run: the old run is marked abandoned with the reason.
            killed_run_is_abandoned,
            /// A 256 MB single-field zip bomb behind a 100 MB unknown JSON value: peak RSS at most 32 MB.
            bomb_in_bounded_memory,
        );
    };
    (@each |$s:ident| $make:expr; $($(#[$doc:meta])* $name:ident,)*) => {
        $(
            $(#[$doc])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let $s = support::Scratch::new();
                let backend = $make;
                scenarios::$name(&$s, &backend).await;
            }
        )*
    };
}
