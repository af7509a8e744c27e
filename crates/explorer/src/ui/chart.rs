//! Charts as inline SVG: distributions as horizontal bars, the session as a timeline.
//!
//! Every bar and every slice of the timeline is a link that filters by what it counts (or
//! zooms to its time), so the charts work as filters without JavaScript; the script adds
//! dragging across the timeline to zoom to any range.
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

/// A distribution, largest first, as horizontal bars; `class` picks each bar's colour and
/// `link` the address that filters by its value.
pub fn bars(
    html: &mut Html,
    title: &str,
    counts: &BTreeMap<String, u64>,
    class: impl Fn(&str) -> &'static str,
    link: impl Fn(&str) -> Option<String>,
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
        let href = if *label == "other" && other > 0 { None } else { link(label) };
        if let Some(href) = &href {
            html.open("a", &[("href", href), ("class", "filter")]);
        }
        html.open("g", &[("class", "bar")]);
        html.element("title", &[], &format!("{label}: {count} ({share:.1}%)"));
        // The whole row is the link, not only its label and bar.
        html.open(
            "rect",
            &[
                ("x", "0"),
                ("y", &format!("{y}")),
                ("width", &format!("{}", LABEL_WIDTH + BAR_WIDTH + 50.0)),
                ("height", &format!("{ROW}")),
                ("class", "hit"),
            ],
        )
        .close("rect");
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
        if href.is_some() {
            html.close("a");
        }
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
/// The bottom of the bars; the time axis is drawn below it.
const TIMELINE_HEIGHT: f64 = 120.0;
/// Room above the tallest bar for the marks of malicious requests.
const TIMELINE_TOP: f64 = 12.0;
/// At most this many labelled ticks, so that their labels never touch.
const MAX_TICKS: i64 = 7;
/// Tick intervals, round in UTC.
const TICK_STEPS: [i64; 21] = [
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
    2_592_000_000,
];

/// A labelled tick of the time axis: where, and how its label reads (`hms`, `hm` or `md`,
/// with the date in front where the day changes: `md hm`).
struct Tick {
    at: Millis,
    format: &'static str,
}

/// Round times from `start` to `end`, a few, with labels that show what changes between them.
fn ticks(start: Millis, end: Millis) -> Vec<Tick> {
    let span = (end.0 - start.0).max(1);
    let step = TICK_STEPS
        .iter()
        .copied()
        .find(|step| span / step < MAX_TICKS)
        .unwrap_or(TICK_STEPS[TICK_STEPS.len() - 1]);
    let format = if step < 60_000 {
        "hms"
    } else if step < 86_400_000 {
        "hm"
    } else {
        "md"
    };
    let mut at: Vec<Millis> = Vec::new();
    let mut t = (start.0 + step - 1).div_euclid(step) * step;
    while t <= end.0 {
        at.push(Millis(t));
        t += step;
    }
    if at.len() < 2 {
        // Shorter than a second or two: the ends, to the millisecond.
        return vec![Tick { at: start, format: "hms" }, Tick { at: end, format: "hms" }];
    }
    let mut day = None;
    at.into_iter()
        .map(|at| {
            let today = at.0.div_euclid(86_400_000);
            let format = if format != "md" && day != Some(today) {
                if format == "hms" {
                    "md hms"
                } else {
                    "md hm"
                }
            } else {
                format
            };
            day = Some(today);
            Tick { at, format }
        })
        .collect()
}

/// A tick label as the server writes it (UTC); the script rewrites it in local time.
fn tick_label(tick: &Tick) -> String {
    let text = time(tick.at);
    // `YYYY-MM-DD HH:MM:SS.mmm`
    let (md, hms, hm) = (&text[5..10], &text[11..19], &text[11..16]);
    match tick.format {
        "hms" => hms.to_owned(),
        "hm" => hm.to_owned(),
        "md" => md.to_owned(),
        "md hms" => format!("{md} {hms}"),
        _ => format!("{md} {hm}"),
    }
}

/// Requests over time, stacked by outcome, with malicious requests marked above their slice,
/// a time axis and a legend. A slice links to its own time range (`zoom(from, to)`, `to`
/// inclusive); `unranged` is the page without a time range, where the script's drag-to-zoom
/// sets `from` and `to`.
pub fn timeline(
    html: &mut Html,
    timeline: &Timeline,
    unranged: &str,
    zoom: impl Fn(Millis, Millis) -> String,
) {
    if timeline.bins.is_empty() {
        html.open("figure", &[("class", "chart timeline")])
            .element("figcaption", &[], "Timeline")
            .element("p", &[("class", "muted")], "no requests")
            .close("figure");
        return;
    }
    let span = (timeline.end.0 - timeline.start.0 + 1) as f64;
    html.open(
        "figure",
        &[
            ("class", "chart timeline"),
            ("id", "timeline"),
            ("data-start", &timeline.start.0.to_string()),
            ("data-end", &timeline.end.0.to_string()),
            ("data-width", &TIMELINE_WIDTH.to_string()),
            ("data-unranged", unranged),
        ],
    );
    html.open("figcaption", &[]).text("Timeline ");
    html.open("span", &[("class", "muted range")]).text("from ");
    super::format::time_tag(html, timeline.start);
    html.text(" to ");
    super::format::time_tag(html, timeline.end);
    html.close("span").close("figcaption");
    let max = timeline
        .bins
        .iter()
        .map(|bin| bin.ok + bin.client_errors + bin.server_errors)
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = TIMELINE_WIDTH / timeline.bins.len() as f64;
    let plot = TIMELINE_HEIGHT - TIMELINE_TOP;
    let view_box = format!("0 0 {TIMELINE_WIDTH} {}", TIMELINE_HEIGHT + 26.0);
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
        html.open("a", &[("href", &zoom(from, Millis(to.0 - 1))), ("class", "zoom")]);
        html.open("g", &[("class", "slice")]);
        html.element(
            "title",
            &[],
            &format!(
                "{} – {} (UTC): {total} requests ({} ok, {} 4xx, {} 5xx, {} malicious); \
                 click to zoom in",
                time(from),
                time(to),
                bin.ok,
                bin.client_errors,
                bin.server_errors,
                bin.attacks
            ),
        );
        // The whole column is the link, not only its bars.
        html.open(
            "rect",
            &[
                ("x", &format!("{x:.1}")),
                ("y", "0"),
                ("width", &format!("{slot:.1}")),
                ("height", &format!("{TIMELINE_HEIGHT}")),
                ("class", "hit"),
            ],
        )
        .close("rect");
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
                    ("cy", &format!("{:.1}", (base - 6.0).max(5.0))),
                    ("r", "4"),
                    ("class", "attack"),
                ],
            )
            .close("circle");
        }
        html.close("g").close("a");
    }
    for tick in ticks(timeline.start, timeline.end) {
        let x = (tick.at.0 - timeline.start.0) as f64 / span * TIMELINE_WIDTH;
        html.open(
            "line",
            &[
                ("x1", &format!("{x:.1}")),
                ("x2", &format!("{x:.1}")),
                ("y1", &format!("{TIMELINE_HEIGHT}")),
                ("y2", &format!("{}", TIMELINE_HEIGHT + 5.0)),
                ("class", "tick"),
            ],
        )
        .close("line");
        // Labels at the edges stay inside the chart.
        let anchor = if x < 40.0 {
            "label tick start"
        } else if x > TIMELINE_WIDTH - 40.0 {
            "label tick end"
        } else {
            "label tick middle"
        };
        html.element(
            "text",
            &[
                ("x", &format!("{x:.1}")),
                ("y", &format!("{}", TIMELINE_HEIGHT + 19.0)),
                ("class", anchor),
                ("data-ts", &tick.at.0.to_string()),
                ("data-format", tick.format),
            ],
            &tick_label(&tick),
        );
    }
    html.open("rect", &[("class", "selection"), ("x", "0"), ("y", "0"), ("width", "0")])
        .close("rect");
    html.close("svg");
    html.open("ul", &[("class", "legend")]);
    for (class, label) in [
        ("ok", "1xx–3xx"),
        ("client-error", "4xx"),
        ("server-error", "5xx"),
        ("attack", "malicious request"),
    ] {
        html.open("li", &[])
            .element("span", &[("class", &format!("swatch {class}"))], "")
            .text(label)
            .close("li");
    }
    html.element(
        "li",
        &[("class", "scale")],
        &format!(
            "{} slices of {}; up to {max} per slice",
            timeline.bins.len(),
            super::format::duration((span / timeline.bins.len() as f64).round() as i64)
        ),
    );
    html.element(
        "li",
        &[("class", "hint")],
        "Click a slice or drag across the timeline to zoom in",
    );
    html.close("ul");
    html.close("figure");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_has_a_few_round_ticks() {
        let start = Millis::parse("2026-11-22T09:41:07Z").unwrap();
        let end = Millis::parse("2026-11-22T10:20:00Z").unwrap();
        let ticks = ticks(start, end);
        let labels: Vec<String> = ticks.iter().map(tick_label).collect();
        assert_eq!(labels, ["11-22 09:50", "10:00", "10:10", "10:20"]);

        let start = Millis::parse("2026-11-22T10:00:00.100Z").unwrap();
        let ticks = super::ticks(start, Millis(start.0 + 400));
        assert_eq!(ticks.len(), 2, "the ends of a short session");
        let days = super::ticks(start, Millis(start.0 + 10 * 86_400_000));
        assert!(days.len() >= 2 && days.iter().all(|tick| tick.format == "md"), "days");
        let hours = super::ticks(start, Millis(start.0 + 3 * 86_400_000));
        let dated = hours.iter().filter(|tick| tick.format == "md hm").count();
        assert!(dated >= 3, "the date where the day changes");
    }
}
