//! Server-rendered SVG charts of the last 30 days: rows loaded per day, and mean duration per
//! type per day. Plain SVG with presentation attributes (no script, no inline style), so the
//! strict Content-Security-Policy holds.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::runs::DayStat;

const W: f64 = 720.0;
const H: f64 = 220.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;
const PALETTE: &[&str] = &[
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
];

/// Escapes text for SVG/HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The 30 days ending today, oldest first, as `YYYY-MM-DD`.
pub fn last_days(today_ms: u64) -> Vec<String> {
    (0..30u64)
        .rev()
        .map(|n| {
            crate::tenants::utc_text(today_ms.saturating_sub(n * 86_400_000))[..10].to_string()
        })
        .collect()
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn frame(out: &mut String, title: &str, days: &[String], max: f64, unit: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{}" class="chart"><title>{}</title>"##,
        esc(title),
        esc(title)
    );
    let plot_h = H - TOP - BOTTOM;
    for i in 0..=4 {
        let y = TOP + plot_h * (1.0 - i as f64 / 4.0);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{W}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#6b7280">{}{}</text>"##,
            LEFT - 4.0,
            y + 3.0,
            human(max * i as f64 / 4.0),
            esc(unit)
        );
    }
    let step = (W - LEFT) / days.len().max(1) as f64;
    for (i, d) in days.iter().enumerate() {
        if i % 5 == 4 || i == 0 {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#6b7280">{}</text>"##,
                LEFT + step * (i as f64 + 0.5),
                H - 10.0,
                esc(&d[5..])
            );
        }
    }
}

/// Rows loaded per day (all types), as bars.
pub fn rows_per_day(stats: &[DayStat], days: &[String]) -> String {
    let mut per_day: BTreeMap<&str, i64> = BTreeMap::new();
    for s in stats {
        *per_day.entry(s.day.as_str()).or_default() += s.rows;
    }
    let max = nice_max(per_day.values().copied().max().unwrap_or(0) as f64);
    let mut out = String::new();
    frame(&mut out, "Rows loaded per day, last 30 days", days, max, "");
    let plot_h = H - TOP - BOTTOM;
    let step = (W - LEFT) / days.len().max(1) as f64;
    for (i, d) in days.iter().enumerate() {
        let v = per_day.get(d.as_str()).copied().unwrap_or(0);
        let h = plot_h * v as f64 / max;
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#2563eb"><title>{}: {v} rows</title></rect>"##,
            LEFT + step * i as f64 + 1.0,
            TOP + plot_h - h,
            (step - 2.0).max(1.0),
            esc(d)
        );
    }
    out.push_str("</svg>");
    out
}

/// Mean run duration per type per day, one line per type, with a legend.
pub fn duration_per_type(stats: &[DayStat], days: &[String]) -> String {
    let mut per_type: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
    for s in stats {
        per_type
            .entry(s.module.as_str())
            .or_default()
            .insert(s.day.as_str(), s.duration_s);
    }
    let max = nice_max(stats.iter().map(|s| s.duration_s).fold(0.0_f64, f64::max));
    let mut out = String::new();
    frame(
        &mut out,
        "Mean duration per type, last 30 days",
        days,
        max,
        "s",
    );
    let plot_h = H - TOP - BOTTOM;
    let step = (W - LEFT) / days.len().max(1) as f64;
    for (n, (module, by_day)) in per_type.iter().enumerate() {
        let color = PALETTE[n % PALETTE.len()];
        let mut points = Vec::new();
        for (i, d) in days.iter().enumerate() {
            if let Some(v) = by_day.get(d.as_str()) {
                let x = LEFT + step * (i as f64 + 0.5);
                let y = TOP + plot_h * (1.0 - v / max);
                points.push(format!("{x:.1},{y:.1}"));
                let _ = write!(
                    out,
                    r##"<circle cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{color}"><title>{} {}: {v:.1} s</title></circle>"##,
                    esc(module),
                    esc(d)
                );
            }
        }
        if points.len() > 1 {
            let _ = write!(
                out,
                r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"##,
                points.join(" ")
            );
        }
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#111827">{}</text>"##,
            LEFT + 8.0 + (n % 4) as f64 * 160.0,
            TOP + (n / 4) as f64 * 14.0,
            LEFT + 22.0 + (n % 4) as f64 * 160.0,
            TOP + 9.0 + (n / 4) as f64 * 14.0,
            esc(module)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day's rows land in that day's bar; names are escaped.
    #[test]
    fn charts_render() {
        let days: Vec<String> = (1..=30).map(|d| format!("2026-01-{d:02}")).collect();
        let stats = vec![DayStat {
            day: "2026-01-30".into(),
            module: "<script>".into(),
            rows: 1234,
            duration_s: 2.0,
        }];
        let bars = rows_per_day(&stats, &days);
        assert!(bars.contains("2026-01-30: 1234 rows"));
        assert_eq!(bars.matches("<rect").count(), 30);
        let lines = duration_per_type(&stats, &days);
        assert!(lines.contains("&lt;script&gt;") && !lines.contains("<script>"));
    }
}
