//! Latency distributions drawn as an SVG of cumulative distribution functions: one panel per
//! measured phase, one line per system, time on a logarithmic axis. Written by hand (a few
//! hundred bytes of markup per line) rather than with a plotting crate, to keep the build lean.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency distribution: `(latency µs, fraction of calls at or below it)`, fraction rising.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cdf(pub Vec<(u64, f64)>);

impl Cdf {
    /// The distribution of `hist`: every 1 % up to the 99th percentile, then finer in the tail.
    pub fn of(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Cdf::default();
        }
        let mut quantiles: Vec<f64> = (0..=99).map(|p| f64::from(p) / 100.0).collect();
        quantiles.extend([0.995, 0.999, 0.9999, 1.0]);
        Cdf(quantiles
            .into_iter()
            .map(|q| (hist.value_at_quantile(q).max(1), q))
            .collect())
    }
}

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    /// The legend's name.
    pub name: &'a str,
    /// What to draw.
    pub cdf: &'a Cdf,
}

/// One panel: a title and its lines.
#[derive(Debug, Clone)]
pub struct Panel<'a> {
    /// The phase drawn, e.g. "64-client writes".
    pub title: &'a str,
    /// One line per system.
    pub lines: Vec<Line<'a>>,
}

/// Line colours, by position (colour-blind safe).
const COLOURS: [&str; 4] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7"];

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 260.0;
const MARGIN_L: f64 = 48.0;
const MARGIN_R: f64 = 16.0;
const MARGIN_T: f64 = 48.0;
const MARGIN_B: f64 = 56.0;

/// The SVG document: the panels side by side under `title`.
pub fn render(title: &str, panels: &[Panel<'_>]) -> String {
    let width = panels.len().max(1) as f64 * (MARGIN_L + PANEL_W + MARGIN_R);
    let height = MARGIN_T + PANEL_H + MARGIN_B;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let left = i as f64 * (MARGIN_L + PANEL_W + MARGIN_R) + MARGIN_L;
        draw_panel(&mut svg, panel, left);
    }
    svg.push_str("</svg>\n");
    svg
}

/// The decades `[lo, hi]` (powers of ten, µs) that hold every point of `panel`.
fn decades(panel: &Panel<'_>) -> (u32, u32) {
    let points = panel.lines.iter().flat_map(|l| l.cdf.0.iter());
    let (min, max) = points.fold((u64::MAX, 1), |(lo, hi), &(v, _)| (lo.min(v), hi.max(v)));
    let lo = if min == u64::MAX {
        0
    } else {
        min.max(1).ilog10()
    };
    let hi = max.max(1).ilog10() + 1;
    (lo, hi.max(lo + 1))
}

fn draw_panel(svg: &mut String, panel: &Panel<'_>, left: f64) {
    let top = MARGIN_T;
    let (lo, hi) = decades(panel);
    let x = |us: u64| {
        let span = f64::from(hi - lo);
        left + ((us.max(1) as f64).log10() - f64::from(lo)) / span * PANEL_W
    };
    let y = |q: f64| top + (1.0 - q) * PANEL_H;
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="12">{}</text>"#,
        left + PANEL_W / 2.0,
        top - 12.0,
        escape(panel.title)
    );
    // Grid and axes: one line per decade, and every quarter of the calls.
    for d in lo..=hi {
        let at = x(10u64.pow(d));
        let _ = writeln!(
            svg,
            r##"<line x1="{at:.1}" y1="{top}" x2="{at:.1}" y2="{}" stroke="#ddd"/><text x="{at:.1}" y="{}" text-anchor="middle">{}</text>"##,
            top + PANEL_H,
            top + PANEL_H + 14.0,
            decade_label(d)
        );
    }
    for quarter in 0..=4 {
        let q = f64::from(quarter) / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{q}</text>"##,
            y(q),
            left + PANEL_W,
            y(q),
            left - 4.0,
            y(q) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/><text x="{}" y="{}" text-anchor="middle">latency (log scale)</text>"##,
        left + PANEL_W / 2.0,
        top + PANEL_H + 30.0
    );
    for (i, line) in panel.lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        // A step function: each fraction holds until the next latency.
        let mut points = String::new();
        let mut last_q = 0.0;
        for &(us, q) in &line.cdf.0 {
            let _ = write!(
                points,
                "{:.1},{:.1} {:.1},{:.1} ",
                x(us),
                y(last_q),
                x(us),
                y(q)
            );
            last_q = q;
        }
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"/>"#,
            points.trim_end()
        );
        let ly = top + PANEL_H + 46.0;
        let lx = left + i as f64 * 90.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            escape(line.name)
        );
    }
}

/// `10^d` µs as a person reads it.
fn decade_label(d: u32) -> String {
    match d {
        0 => "1 µs".into(),
        1 => "10 µs".into(),
        2 => "100 µs".into(),
        3 => "1 ms".into(),
        4 => "10 ms".into(),
        5 => "100 ms".into(),
        6 => "1 s".into(),
        d => format!("10^{} s", d - 6),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[u64]) -> Histogram<u64> {
        let mut h = crate::bench::new_histogram();
        for &v in values {
            h.record(v).expect("in range");
        }
        h
    }

    #[test]
    fn a_cdf_rises_from_the_fastest_to_the_slowest_call() {
        let cdf = Cdf::of(&hist(&[100, 200, 300, 400, 5_000]));
        let first = cdf.0.first().expect("points");
        let last = cdf.0.last().expect("points");
        assert_eq!(first.1, 0.0);
        assert!((99..=101).contains(&first.0), "{first:?}");
        assert_eq!(last.1, 1.0);
        assert!((4_990..=5_010).contains(&last.0), "{last:?}");
        assert!(
            cdf.0
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1)
        );
        assert_eq!(Cdf::of(&crate::bench::new_histogram()), Cdf::default());
    }

    #[test]
    fn the_picture_has_a_panel_per_phase_and_a_line_per_system_on_a_log_axis() {
        let fast = Cdf::of(&hist(&[900, 1_000, 1_100]));
        let slow = Cdf::of(&hist(&[9_000, 10_000, 200_000]));
        let lines = || {
            vec![
                Line {
                    name: "etcd",
                    cdf: &fast,
                },
                Line {
                    name: "k<v>",
                    cdf: &slow,
                },
            ]
        };
        let svg = render(
            "writes & reads",
            &[
                Panel {
                    title: "1-client writes",
                    lines: lines(),
                },
                Panel {
                    title: "64-client reads",
                    lines: lines(),
                },
            ],
        );
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("writes &amp; reads") && svg.contains("k&lt;v&gt;"));
        // The axis spans the decades of the data: 100 µs to 1 s.
        for label in ["100 µs", "1 ms", "10 ms", "100 ms", "1 s"] {
            assert!(svg.contains(&format!(">{label}<")), "no {label} tick");
        }
        assert!(!svg.contains(">10 µs<"));
        // The faster system's line lies left of the slower one's.
        let xs = |nth: usize| -> f64 {
            let line = svg.split("<polyline").nth(nth).expect("a line");
            let points = line.split("points=\"").nth(1).expect("points");
            points
                .split(['"', ' '])
                .next()
                .and_then(|p| p.split(',').next())
                .and_then(|x| x.parse().ok())
                .expect("an x")
        };
        assert!(xs(1) < xs(2), "{} !< {}", xs(1), xs(2));
    }
}
