//! The overview's plot: backups and ingested bytes per day over the last days, as SVG drawn
//! by the server (no script, no library).
//!
//! [`per_day`] takes the UTC days ending today from the catalog's per-day totals (kept by the
//! catalog with every commit and delete: no backup is listed for the plot); [`svg`] draws one
//! bar per day for the number of backups and a line for the bytes, each on its own scale.
//! Both are pure, so tests can pin the output.

use std::fmt::Write;

use chrono::{Duration, NaiveDate};

use cairn_core::totals::BackupTotals;

use super::html::{bytes, esc};

/// Totals over every backup, and the plot's days.
#[derive(Clone, Debug)]
pub struct Summary {
    pub backups: u64,
    pub logical: u64,
    pub days: Vec<Day>,
}

/// One day of the plot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Day {
    pub date: NaiveDate,
    pub backups: u64,
    pub bytes: u64,
}

/// `days` UTC days ending with `today`, oldest first, each with its backups and logical
/// bytes from the catalog's per-day totals; days outside the window are left out.
pub fn per_day(totals: &BackupTotals, today: NaiveDate, days: u32) -> Vec<Day> {
    let days = days.max(1);
    let first = today - Duration::days(i64::from(days) - 1);
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let first_n = (first - epoch).num_days();
    totals
        .day_range(first_n, first_n + i64::from(days) - 1)
        .into_iter()
        .map(|(n, d)| Day {
            date: epoch + Duration::days(n),
            backups: d.backups,
            bytes: d.logical_bytes,
        })
        .collect()
}

const W: f64 = 720.0;
const H: f64 = 220.0;
const LEFT: f64 = 40.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 28.0;

/// The plot as an inline `<svg>` element (scales to its container's width).
pub fn svg(days: &[Day]) -> String {
    let max_n = days.iter().map(|d| d.backups).max().unwrap_or(0).max(1);
    let max_b = days.iter().map(|d| d.bytes).max().unwrap_or(0).max(1);
    let n = days.len().max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / n;
    let total: u64 = days.iter().map(|d| d.backups).sum();
    let total_b: u64 = days.iter().map(|d| d.bytes).sum();
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"plot\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"plot-title\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"plot-title\">{}</title>",
        esc(&format!(
            "Backups and ingested bytes per day, last {} days: {total} backups, {}",
            days.len(),
            bytes(total_b)
        ))
    );
    // Axes and scale labels.
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\"/>",
        y = TOP + plot_h,
        x2 = W - RIGHT
    );
    let _ = write!(
        s,
        "<text class=\"lbl\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{max_n}</text><text class=\"lbl\" x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
        LEFT - 4.0,
        TOP + 10.0,
        LEFT - 4.0,
        TOP + plot_h
    );
    let _ = write!(
        s,
        "<text class=\"lbl bytes\" x=\"{}\" y=\"{}\">{}</text>",
        W - RIGHT + 4.0,
        TOP + 10.0,
        esc(&bytes(max_b))
    );
    for (i, d) in days.iter().enumerate() {
        let h = plot_h * d.backups as f64 / max_n as f64;
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{}</title></rect>",
            TOP + plot_h - h,
            slot * 0.7,
            esc(&format!("{}: {} backups, {}", d.date, d.backups, bytes(d.bytes)))
        );
    }
    let points: Vec<String> = days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let x = LEFT + slot * (i as f64 + 0.5);
            let y = TOP + plot_h - plot_h * d.bytes as f64 / max_b as f64;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        s,
        "<polyline class=\"line\" fill=\"none\" points=\"{}\"/>",
        points.join(" ")
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            s,
            "<text class=\"lbl\" x=\"{LEFT}\" y=\"{y}\">{}</text><text class=\"lbl\" x=\"{}\" y=\"{y}\" text-anchor=\"end\">{}</text>",
            first.date.format("%m-%d"),
            W - RIGHT,
            last.date.format("%m-%d"),
            y = H - 8.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The totals of backups taken at these (ms, logical bytes).
    fn t<const N: usize>(items: [(i64, u64); N]) -> BackupTotals {
        let mut t = BackupTotals::default();
        for (ms, b) in items {
            let d = t
                .days
                .entry(cairn_core::totals::day_of(ms.div_euclid(1000)))
                .or_default();
            d.backups += 1;
            d.logical_bytes += b;
        }
        t
    }

    fn ms(date: &str, hour: u32) -> i64 {
        NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(hour, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    #[test]
    fn backups_are_bucketed_by_utc_day() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let days = per_day(
            &t([
                (ms("2026-12-07", 1), 100),
                (ms("2026-12-07", 23), 50),
                (ms("2026-12-06", 12), 7),
                (ms("2026-11-08", 0), 1),     // the first day of 30
                (ms("2026-11-07", 23), 1000), // too old
                (ms("2026-12-08", 0), 1000),  // the future
            ]),
            today,
            30,
        );
        assert_eq!(days.len(), 30);
        assert_eq!(days[0].date, NaiveDate::from_ymd_opt(2026, 11, 8).unwrap());
        assert_eq!((days[0].backups, days[0].bytes), (1, 1));
        assert_eq!((days[29].backups, days[29].bytes), (2, 150));
        assert_eq!((days[28].backups, days[28].bytes), (1, 7));
        assert_eq!(days.iter().map(|d| d.backups).sum::<u64>(), 4);
    }

    #[test]
    fn the_svg_has_a_bar_per_day_scaled_to_the_busiest() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let days = per_day(
            &t([
                (ms("2026-12-07", 1), 10),
                (ms("2026-12-07", 2), 10),
                (ms("2026-12-05", 1), 5),
            ]),
            today,
            30,
        );
        let s = svg(&days);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert_eq!(s.matches("<rect class=\"bar\"").count(), 30);
        // The busiest day's bar is the full plot height; an empty day's is zero.
        let full = format!("height=\"{:.1}\"", H - TOP - BOTTOM);
        assert_eq!(s.matches(&full).count(), 1, "{s}");
        assert_eq!(s.matches("height=\"0.0\"").count(), 28);
        assert!(s.contains("2026-12-07: 2 backups, 20 B"));
        assert!(s.contains("3 backups, 25 B"), "the title sums the window");
        // No data draws an empty plot, not a division by zero.
        let empty = svg(&per_day(&t([]), today, 30));
        assert!(!empty.contains("NaN"));
    }
}
