//! Page scenarios run against both databases (`handlers` on SQLite, `postgres`).

use std::collections::HashSet;

use axum::http::StatusCode;

use crate::common::*;

/// Runs list → run detail → rejects with line, column, reason and raw record → CSV.
pub async fn runs_run_and_rejects(w: World) {
    w.import("acme", "orders").await.success();
    w.import("globex", "orders").await.success();
    let app = w.app(&[]).await;
    let cookie = login(&app, "viewer").await;

    let r = get(&app, "/runs", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    let rows = r.table("#runs");
    assert_eq!(rows.len(), 2, "{rows:?}");
    // Newest first: #2 globex, then #1 acme.
    assert_eq!(rows[1][..5], ["#1", "acme", "orders", DATE, "succeeded"]);
    assert_eq!(rows[1][5..9], ["6", "4", "2", "4"]);
    assert_eq!(rows[1][10], "new");

    // Filters.
    let r = get(&app, "/runs?tenant=globex&status=succeeded", Some(&cookie)).await;
    assert_eq!(r.table("#runs").len(), 1);
    assert_eq!(r.table("#runs")[0][1], "globex");
    let r = get(&app, "/runs?status=failed", Some(&cookie)).await;
    assert_eq!(r.texts("#runs td.empty"), ["No runs match."]);
    let r = get(&app, "/runs?from=2026-01-16", Some(&cookie)).await;
    assert_eq!(r.texts("#runs td.empty"), ["No runs match."]);
    let r = get(&app, "/runs?to=nope", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&app, "/runs?status=drop%20table", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A re-delivery of the same content is recorded as a duplicate, and the list says so.
    w.import("acme", "orders").await.success();
    let r = get(&app, "/runs?tenant=acme", Some(&cookie)).await;
    let rows = r.table("#runs");
    assert_eq!(rows[0][4], "duplicate", "{rows:?}");
    assert_eq!(rows[0][10], "duplicate of #1");

    let r = get(&app, "/runs/1", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.texts("#run-status"), ["succeeded"]);
    assert_eq!(r.texts("#rows-rejected"), ["2"]);
    let rejects = r.table("#rejects");
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert_eq!(rejects[0][..3], ["3", "total", "not a decimal"]);
    assert_eq!(rejects[0][3], "2,11,2026-01-02,open,USD,not-a-number,");
    assert_eq!(rejects[1][..2], ["5", "order_date"]);
    // The later run of the same tenant, type and date is listed as a re-run.
    assert_eq!(r.table("#later-runs")[0][..2], ["#3", "duplicate"]);

    let csv = get(&app, "/runs/1/rejects.csv", Some(&cookie)).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv
        .header("content-disposition")
        .unwrap()
        .contains("run-1-rejects.csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "id,file,line,column,reason,raw_record");
    assert_eq!(lines.len(), 3);
    assert!(lines[1].ends_with(",3,total,not a decimal,\"2,11,2026-01-02,open,USD,not-a-number,\""));

    assert_eq!(
        get(&app, "/runs/999", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );

    // Past nine runs the list is still newest first by number, not by text ("9" > "12").
    for _ in 0..9 {
        w.import("globex", "orders").await.success();
    }
    let r = get(&app, "/runs", Some(&cookie)).await;
    let ids: Vec<String> = r
        .table("#runs")
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let want: Vec<String> = (1..=12).rev().map(|i| format!("#{i}")).collect();
    assert_eq!(ids, want);
    let r = get(&app, "/runs/2", Some(&cookie)).await;
    let later: Vec<String> = r
        .table("#later-runs")
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    let want: Vec<String> = (4..=12).map(|i| format!("#{i}")).collect();
    assert_eq!(later, want);
}

pub fn ids(r: &Resp) -> Vec<String> {
    r.table("#rows")
        .into_iter()
        .filter(|row| row.len() > 1)
        .map(|row| row[1].clone())
        .collect()
}

/// The registry-driven browser: typed filters, sort, keyset pages, CSV export.
pub async fn data_browser(w: World) {
    // 130 rows for globex, some without a currency (NULLs sort last).
    let mut big = String::from("order_id,customer_id,order_date,status,currency,total\n");
    for i in 1..=130 {
        let cur = ["EUR", "", "USD", "GBP"][i % 4];
        big.push_str(&format!(
            "{i},{},2026-02-{:02},open,{cur},{}.00\n",
            i % 7,
            i % 28 + 1,
            i % 50
        ));
    }
    std::fs::write(w.exports.join("orders.csv"), &big).unwrap();
    w.import("globex", "orders").await.success();
    std::fs::write(w.exports.join("orders.csv"), ORDERS_CSV).unwrap();
    w.import("acme", "orders").await.success();
    let app = w.app(&[]).await;
    let cookie = login(&app, "viewer").await;

    let r = get(&app, "/data", Some(&cookie)).await;
    assert!(r.texts("#types a").contains(&"orders".to_string()));
    let page = |q: &str| {
        let app = app.clone();
        let cookie = cookie.clone();
        let q = q.to_string();
        async move { get(&app, &format!("/data/orders?{q}"), Some(&cookie)).await }
    };
    let r = page("tenant=acme").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(ids(&r), ["1", "3", "5", "6"]);
    assert_eq!(
        r.table("#rows")[0],
        ["acme", "1", "10", "2026-01-01", "open", "EUR", "10.50", ""]
    );
    assert_eq!(
        ids(&page("tenant=acme&status.eq=open").await),
        ["1", "5", "6"]
    );
    assert_eq!(
        ids(&page("tenant=acme&total.min=5&total.max=50").await),
        ["1", "5"]
    );
    assert_eq!(ids(&page("tenant=acme&currency.has=eur").await), ["1", "3"]);
    assert_eq!(
        ids(&page("tenant=acme&status.has=PEN").await),
        ["1", "5", "6"]
    );
    // The user's `%`, `_` and `\` match themselves, not any text.
    for v in ["ope%", "ope_", "ope%n", "open\\"] {
        let r = page(&format!("tenant=acme&status.has={}", urlenc(v))).await;
        assert_eq!(r.status, StatusCode::OK, "{v}: {}", r.body);
        assert_eq!(r.texts("#rows td.empty"), ["No rows match."], "{v}");
    }
    // Too short for the search index: a clear 400 naming the column, the form says the rule.
    let r = page("tenant=acme&currency.has=eu").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.texts("#filter-error"),
        [
            "currency.has: contains needs at least 3 letters or digits in a row \
          (a shorter text can't use the search index)"
        ]
    );
    assert_eq!(r.attrs("#f-currency-has", "value"), ["eu"]);
    assert_eq!(r.texts("#contains-hint").len(), 1);
    assert_eq!(
        ids(&page("tenant=acme&order_date.min=2026-01-03&order_date.max=2026-01-05").await),
        ["3", "5"]
    );
    assert_eq!(
        ids(&page("tenant=acme&updated_at.min=2026-01-05").await),
        ["5"]
    );
    assert_eq!(
        ids(&page("tenant=acme&sort=total&dir=desc").await),
        ["6", "1", "5", "3"]
    );
    assert_eq!(
        ids(&page("tenant=acme&sort=currency").await),
        ["1", "3", "6", "5"]
    );
    assert_eq!(
        ids(&page("tenant=acme&sort=currency&dir=desc").await),
        ["5", "6", "3", "1"]
    );
    // The form keeps what was asked.
    let r = page("tenant=acme&total.min=5").await;
    assert_eq!(r.attrs("#f-total-min", "value"), ["5"]);

    // Keyset pages over a nullable sort column visit every row once, in order.
    for dir in ["asc", "desc"] {
        let mut seen = Vec::new();
        let mut url = format!("/data/orders?tenant=globex&sort=currency&dir={dir}");
        let mut pages = 0;
        loop {
            let r = get(&app, &url, Some(&cookie)).await;
            assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.body);
            let rows = r.table("#rows");
            assert!(rows.len() <= 50);
            seen.extend(
                rows.into_iter()
                    .map(|row| (row[5].clone(), row[1].parse::<i64>().unwrap())),
            );
            pages += 1;
            match r.attrs("#next-page", "href").pop() {
                Some(next) => url = next,
                None => break,
            }
        }
        assert_eq!(pages, 3, "{dir}");
        assert_eq!(seen.len(), 130, "{dir}");
        assert_eq!(seen.iter().map(|s| s.1).collect::<HashSet<_>>().len(), 130);
        let mut want = seen.clone();
        // NULL (shown empty) last ascending, first descending; then by order id.
        want.sort_by(|a, b| (a.0.is_empty(), &a.0, a.1).cmp(&(b.0.is_empty(), &b.0, b.1)));
        if dir == "desc" {
            want.reverse();
        }
        assert_eq!(seen, want, "{dir}");
    }

    // CSV export of the filtered, sorted rows.
    let csv = get(
        &app,
        "/data/orders/csv?tenant=acme&status.eq=open&sort=total",
        Some(&cookie),
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines[0],
        "tenant_id,order_id,customer_id,order_date,status,currency,total,updated_at"
    );
    assert_eq!(lines.len(), 4);
    assert!(
        lines[1].starts_with("acme,5,14,2026-01-05,open,,5.25,2026-01-05 10:00:00"),
        "{}",
        lines[1]
    );
    let all = get(&app, "/data/orders/csv", Some(&cookie)).await;
    assert_eq!(all.body.lines().count(), 1 + 4 + 130);

    assert_eq!(
        get(&app, "/data/nope", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Crafted filter values are data, never SQL: they match nothing, and the table survives.
/// Crafted column names, operators and cursors are refused with 400.
pub async fn crafted_filters(w: World) {
    w.import("acme", "orders").await.success();
    let app = w.app(&[]).await;
    let cookie = login(&app, "viewer").await;
    let evil = [
        "x' OR '1'='1",
        "'; DROP TABLE orders; --",
        "open\" OR 1=1 --",
        "%",
        "_",
        "1) OR (1=1",
    ];
    for v in evil {
        // Contains needs 3 letters in a row: "ope" plus the crafted text (which also ends a
        // `%…%` pattern early if it weren't escaped).
        let has = format!("ope{v}");
        for (param, v) in [
            ("status.eq", v),
            ("status.has", has.as_str()),
            ("tenant", v),
            ("currency.eq", v),
        ] {
            let r = get(
                &app,
                &format!("/data/orders?{param}={}", urlenc(v)),
                Some(&cookie),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{param}={v}: {}", r.body);
            assert_eq!(r.texts("#rows td.empty"), ["No rows match."], "{param}={v}");
        }
        // A numeric column refuses a non-number.
        let r = get(
            &app,
            &format!("/data/orders?total.eq={}", urlenc(v)),
            Some(&cookie),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "total.eq={v}");
    }
    for q in [
        "status%22%3B%20DROP%20TABLE%20orders%3B%20--.eq=1",
        "sort=status%3B%20DROP%20TABLE%20orders",
        "sort=total&dir=desc%3B%20DROP%20TABLE%20orders",
        "status.like=open",
        "after=WzEsMl0",
    ] {
        let r = get(&app, &format!("/data/orders?{q}"), Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(r.texts("#filter-error").len(), 1, "{q}");
    }
    // Every row is still there.
    let r = get(&app, "/data/orders?tenant=acme", Some(&cookie)).await;
    assert_eq!(ids(&r), ["1", "3", "5", "6"]);
}

/// An admin re-runs an import after confirming; the new run shows up as a later run.
pub async fn rerun(w: World) {
    w.import("acme", "orders").await.success();
    // The export changed since: the re-run loads it (unchanged content would be a duplicate).
    let mut csv = ORDERS_CSV.to_string();
    csv.push_str("7,16,2026-01-07,open,EUR,7.00,\n");
    std::fs::write(w.exports.join("orders.csv"), csv).unwrap();
    let bin = importer_bin();
    let app = w
        .app(&[
            "--rerun",
            "local",
            "--importer-base-url",
            &w.api,
            "--importer-bin",
            bin.to_str().unwrap(),
        ])
        .await;
    let cookie = login(&app, "admin").await;
    let page = get(&app, "/runs/1", Some(&cookie)).await;
    assert_eq!(page.attrs("#rerun", "hx-get"), ["/runs/1/rerun"]);
    let confirm = get(&app, "/runs/1/rerun", Some(&cookie)).await;
    assert_eq!(confirm.status, StatusCode::OK);
    let csrf = confirm
        .attrs("#rerun-confirm input[name=csrf]", "value")
        .pop()
        .unwrap();
    // Not confirmed: refused.
    let r = post_form(
        &app,
        "/runs/1/rerun",
        Some(&cookie),
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post_form(
        &app,
        "/runs/1/rerun",
        Some(&cookie),
        &format!("csrf={csrf}&confirm=yes"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.texts("#rerun-started")[0].starts_with("Re-run started (importer process"));
    let later = testkit::eventually(
        std::time::Duration::from_secs(30),
        "the re-run to succeed",
        || {
            let app = app.clone();
            let cookie = cookie.clone();
            async move {
                let r = get(&app, "/runs/1", Some(&cookie)).await;
                let rows = r.table("#later-runs");
                rows.first().filter(|row| row[1] == "succeeded").cloned()
            }
        },
    )
    .await;
    assert_eq!(later[..5], ["#2", "succeeded", "7", "5", "2"]);
}

/// Reads the first events of a run's stream: `run` with the progress block, then `later`.
pub async fn first_events(app: &axum::Router, cookie: &str, id: i64) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let resp = app
        .clone()
        .oneshot(
            axum::http::Request::get(format!("/runs/{id}/events"))
                .header("cookie", cookie)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    while !(text.contains("event: run") && text.contains("event: later")) {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.contains("id=\"run-status\">succeeded<"), "{text}");
    text
}

/// Rejects page 100 at a time in file order; "More rejects" continues after the last line
/// shown, and the CSV has them all.
pub async fn rejects_pages_in_line_order(w: World) {
    let mut csv = String::from("order_id,customer_id,order_date,status,currency,total\n");
    for i in 1..=260 {
        // Every other row has a bad total: 130 rejects, on even lines 2..=260 (header is line 1).
        let total = if i % 2 == 1 { "x" } else { "1.00" };
        csv.push_str(&format!("{i},1,2026-01-01,open,EUR,{total}\n"));
    }
    std::fs::write(w.exports.join("orders.csv"), csv).unwrap();
    w.import("acme", "orders").await.success();
    let app = w.app(&[]).await;
    let cookie = login(&app, "viewer").await;
    let page = get(&app, "/runs/1", Some(&cookie)).await;
    let first: Vec<Vec<String>> = page
        .table("#rejects")
        .into_iter()
        .filter(|r| r.len() == 4)
        .collect();
    assert_eq!(first.len(), 100);
    assert_eq!(first[0][0], "2");
    assert_eq!(first[99][0], "200");
    let more = page
        .attrs("#more-rejects a", "hx-get")
        .pop()
        .expect("a More link");
    let rest = get(&app, &more, Some(&cookie)).await;
    assert_eq!(rest.status, StatusCode::OK);
    let doc = format!("<table id=r><tbody>{}</tbody></table>", rest.body);
    let rest = Resp {
        status: rest.status,
        headers: rest.headers,
        body: doc,
    };
    let lines: Vec<String> = rest.table("#r").into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(lines.len(), 30, "{lines:?}");
    assert_eq!((lines[0].as_str(), lines[29].as_str()), ("202", "260"));
    assert!(rest.attrs("#more-rejects a", "href").is_empty());
    assert_eq!(
        get(&app, "/runs/1/rejects?after=oops", Some(&cookie))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let all = get(&app, "/runs/1/rejects.csv", Some(&cookie)).await;
    assert_eq!(all.body.lines().count(), 1 + 130);
}
