//! Charts as inline SVG: distributions as horizontal bars, the session as a timeline.
//!
//! Colours come from classes in the stylesheet (inline `style` would be blocked by the
//! Content-Security-Policy); labels are escaped text like everything else. Drawn here rather
//! than by a charting crate: those pick their own colours and write their own text, outside
//! the stylesheet and the escaping of [`Html`].

use std::collections::BTreeMap;

use api_sessions_core::time::Millis;

use super::format::time;
use super::html::Html;
use crate::store::Timeline;

/// Bars shown before the rest is summed up as "other".
const TOP: usize = 8;
/// Drawn at about its own size in a chart's column, so the text stays readable.
const LABEL_WIDTH: f64 = 118.0;
const BAR_WIDTH: f64 = 150.0;
const ROW: f64 = 22.0;
const LABEL_CHARS: usize = 17;

/// A distribution, largest first, as horizontal bars; `class` picks each bar's colour.
pub fn bars(
    html: &mut Html,
    title: &str,
    counts: &BTreeMap<String, u64>,
    class: impl Fn(&str) -> &'static str,
) {
    let mut rows: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let other: u64 = rows.iter().skip(TOP).map(|row| row.1).sum();
    rows.truncate(TOP);
    if other > 0 {
        rows.push(("other", other));
    }
    let total: u64 = counts.values().sum();
    let max = rows.iter().map(|row| row.1).max().unwrap_or(0).max(1);

    html.open("figure", &[("class", "chart")]).element("figcaption", &[], title);
    if rows.is_empty() {
        html.element("p", &[("class", "muted")], "none").close("figure");
        return;
    }
    let height = rows.len() as f64 * ROW;
    let view_box = format!("0 0 {} {height}", LABEL_WIDTH + BAR_WIDTH + 50.0);
    html.open(
        "svg",
        &[
            ("xmlns", "http://www.w3.org/2000/svg"),
            ("viewBox", &view_box),
            ("role", "img"),
            ("aria-label", title),
        ],
    );
    for (i, (label, count)) in rows.iter().enumerate() {
        let y = i as f64 * ROW;
        let width = (BAR_WIDTH * *count as f64 / max as f64).max(1.0);
        let share = 100.0 * *count as f64 / total.max(1) as f64;
        html.open("g", &[("class", "bar")]);
        html.element("title", &[], &format!("{label}: {count} ({share:.1}%)"));
        html.element(
            "text",
            &[("x", "0"), ("y", &format!("{}", y + 15.0)), ("class", "label")],
            &shorten(label),
        );
        html.open(
            "rect",
            &[
                ("x", &format!("{LABEL_WIDTH}")),
                ("y", &format!("{}", y + 3.0)),
                ("width", &format!("{width:.1}")),
                ("height", &format!("{}", ROW - 6.0)),
                ("class", if *label == "other" && other > 0 { "other" } else { class(label) }),
            ],
        )
        .close("rect");
        html.element(
            "text",
            &[
                ("x", &format!("{:.1}", LABEL_WIDTH + 6.0 + width)),
                ("y", &format!("{}", y + 15.0)),
                ("class", "count"),
            ],
            &format!("{count}"),
        );
        html.close("g");
    }
    html.close("svg").close("figure");
}

fn shorten(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        label.to_owned()
    } else {
        let mut short: String = label.chars().take(LABEL_CHARS - 1).collect();
        short.push('…');
        short
    }
}

/// The colour class of a status code.
pub fn status_class(status: &str) -> &'static str {
    match status.as_bytes().first() {
        Some(b'1' | b'2') => "ok",
        Some(b'3') => "redirect",
        Some(b'4') => "client-error",
        _ => "server-error",
    }
}

const TIMELINE_WIDTH: f64 = 900.0;
const TIMELINE_HEIGHT: f64 = 120.0;

/// Requests over time, stacked by outcome, with malicious requests marked above their slice.
pub fn timeline(html: &mut Html, timeline: &Timeline) {
    html.open("figure", &[("class", "chart timeline")]).element("figcaption", &[], "Timeline");
    if timeline.bins.is_empty() {
        html.element("p", &[("class", "muted")], "no requests").close("figure");
        return;
    }
    let max = timeline
        .bins
        .iter()
        .map(|bin| bin.ok + bin.client_errors + bin.server_errors)
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = TIMELINE_WIDTH / timeline.bins.len() as f64;
    let top = 20.0;
    let plot = TIMELINE_HEIGHT - top;
    let span = (timeline.end.0 - timeline.start.0 + 1) as f64;
    let view_box = format!("0 0 {TIMELINE_WIDTH} {}", TIMELINE_HEIGHT + 20.0);
    html.open(
        "svg",
        &[
            ("xmlns", "http://www.w3.org/2000/svg"),
            ("viewBox", &view_box),
            ("role", "img"),
            ("aria-label", "Requests over time"),
        ],
    );
    html.open(
        "line",
        &[
            ("x1", "0"),
            ("x2", &format!("{TIMELINE_WIDTH}")),
            ("y1", &format!("{TIMELINE_HEIGHT}")),
            ("y2", &format!("{TIMELINE_HEIGHT}")),
            ("class", "axis"),
        ],
    )
    .close("line");
    for (i, bin) in timeline.bins.iter().enumerate() {
        let total = bin.ok + bin.client_errors + bin.server_errors;
        if total == 0 {
            continue;
        }
        let x = i as f64 * slot;
        let from = Millis(timeline.start.0 + (span * i as f64 / timeline.bins.len() as f64) as i64);
        let to =
            Millis(timeline.start.0 + (span * (i + 1) as f64 / timeline.bins.len() as f64) as i64);
        html.open("g", &[("class", "slice")]);
        html.element(
            "title",
            &[],
            &format!(
                "{} – {}: {total} requests ({} ok, {} 4xx, {} 5xx, {} malicious)",
                time(from),
                time(to),
                bin.ok,
                bin.client_errors,
                bin.server_errors,
                bin.attacks
            ),
        );
        let mut base = TIMELINE_HEIGHT;
        for (count, class) in [
            (bin.ok, "ok"),
            (bin.client_errors, "client-error"),
            (bin.server_errors, "server-error"),
        ] {
            if count == 0 {
                continue;
            }
            let height = (plot * count as f64 / max as f64).max(1.5);
            base -= height;
            html.open(
                "rect",
                &[
                    ("x", &format!("{:.1}", x + 1.0)),
                    ("y", &format!("{base:.1}")),
                    ("width", &format!("{:.1}", (slot - 2.0).max(1.0))),
                    ("height", &format!("{height:.1}")),
                    ("class", class),
                ],
            )
            .close("rect");
        }
        if bin.attacks > 0 {
            html.open(
                "circle",
                &[
                    ("cx", &format!("{:.1}", x + slot / 2.0)),
                    ("cy", &format!("{:.1}", (base - 7.0).max(5.0))),
                    ("r", "4"),
                    ("class", "attack"),
                ],
            )
            .close("circle");
        }
        html.close("g");
    }
    let label_y = format!("{}", TIMELINE_HEIGHT + 15.0);
    html.element("text", &[("x", "0"), ("y", &label_y), ("class", "label")], &time(timeline.start));
    html.element(
        "text",
        &[("x", &format!("{TIMELINE_WIDTH}")), ("y", &label_y), ("class", "label end")],
        &time(timeline.end),
    );
    html.element(
        "text",
        &[("x", &format!("{TIMELINE_WIDTH}")), ("y", "12"), ("class", "label end")],
        &format!("up to {max} per slice"),
    );
    html.close("svg").close("figure");
}
