//! Inline SVG plots for the page, drawn on the server: time series over a window with a
//! y axis from zero, and the strip of who led when.
//!
//! Everything is presentation attributes on SVG elements (no scripts, fonts or external
//! references), so the page works under `default-src 'none'`. The view box is about as
//! wide as a chart is shown at 1280 px, so its text stays legible; on a narrow screen it
//! scales down with the chart. Points further apart than `max_gap_ms` are not joined: a
//! gap in the collection shows as a gap in the line.

use std::fmt::Write as _;

use super::fmt::esc;

const W: f64 = 420.0;
const H: f64 = 170.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    /// A line with the area under it lightly filled.
    Area,
    /// One dot per point (single probes), never joined.
    Dots,
}

/// One series: points are `(unix ms, value)`, `None` where the value was unknown.
pub struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
    pub style: Style,
    pub points: Vec<(u64, Option<f64>)>,
    /// What the legend shows beside the label (the latest value, say); unescaped.
    pub now: Option<String>,
}

/// A time-series chart over `[t0, t1]`.
pub struct Chart<'a> {
    pub title: &'a str,
    /// Formats a y value (axis labels).
    pub unit: fn(f64) -> String,
    /// Axis steps in powers of 1024 (bytes) instead of 10.
    pub binary: bool,
    pub series: Vec<Series<'a>>,
    pub t0: u64,
    pub t1: u64,
    pub max_gap_ms: u64,
    /// A dashed horizontal line (a limit) with its label, drawn when it is within reach
    /// of the data (at most four times the largest value).
    pub limit: Option<(f64, String)>,
    /// A note under the chart; unescaped.
    pub note: Option<String>,
}

/// A round step at or above `x`: 1, 2, 2.5 or 5 times a power of ten.
fn nice(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 1.0;
    }
    let exp = 10f64.powf(x.log10().floor());
    let f = x / exp;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * exp
}

/// The axis top and step for values up to `max`: four or five round steps.
fn y_axis(max: f64, binary: bool) -> (f64, f64) {
    let div = if binary && max >= 1024.0 {
        1024f64.powf((max.log(1024.0)).floor())
    } else {
        1.0
    };
    let step = nice(max / div / 4.0) * div;
    let top = (max / step).ceil().max(1.0) * step;
    (top, step)
}

/// Renders the chart as a `<figure>` holding the legend and the `<svg>`.
pub fn chart(c: &Chart<'_>) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        r#"<figure class="chart"><figcaption><span class="ctitle">{}</span>"#,
        esc(c.title)
    );
    for s in &c.series {
        let _ = write!(
            out,
            r#"<span class="key"><i style="background:{}"></i>{}{}</span>"#,
            s.color,
            esc(s.label),
            s.now
                .as_deref()
                .map(|v| format!(" <b>{}</b>", esc(v)))
                .unwrap_or_default()
        );
    }
    out.push_str("</figcaption>");
    let t0 = c.t0;
    let t1 = c.t1.max(c.t0 + 1);
    let in_window = |t: u64| t >= t0 && t <= t1;
    let max = c
        .series
        .iter()
        .flat_map(|s| &s.points)
        .filter(|(t, _)| in_window(*t))
        .filter_map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::max);
    let limit = c
        .limit
        .as_ref()
        .filter(|(v, _)| max.is_finite() && *v > 0.0 && *v <= 4.0 * max.max(f64::MIN_POSITIVE));
    let top_value = match limit {
        Some((v, _)) => max.max(*v),
        None => max,
    };
    let _ = write!(
        out,
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="{}" class="plot">"#,
        esc(c.title)
    );
    let (px0, px1, py0, py1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = write!(
        out,
        r##"<rect x="{px0}" y="{py0}" width="{}" height="{}" fill="#fbfcfd" stroke="#e3e6ea"/>"##,
        px1 - px0,
        py1 - py0
    );
    let x = |t: u64| px0 + (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64 * (px1 - px0);
    // X axis: round steps back from the right edge.
    let span_s = (t1 - t0) as f64 / 1000.0;
    let step_s = [
        10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|s| span_s / s <= 6.0)
    .unwrap_or(3600.0);
    let mut k = 0.0;
    while k * step_s <= span_s + 1e-9 {
        let back = k * step_s;
        let xx = px1 - back / span_s * (px1 - px0);
        let label = if k == 0.0 {
            "now".to_owned()
        } else if back < 60.0 || back % 60.0 != 0.0 {
            format!("−{back} s")
        } else {
            format!("−{} min", back / 60.0)
        };
        let anchor = if k == 0.0 { "end" } else { "middle" };
        let _ = write!(
            out,
            r##"<line x1="{xx:.1}" y1="{py0}" x2="{xx:.1}" y2="{py1}" stroke="#eef0f3"/><text x="{xx:.1}" y="{}" font-size="10" fill="#6b7280" text-anchor="{anchor}" font-family="sans-serif">{label}</text>"##,
            H - 6.0
        );
        k += 1.0;
    }
    if !max.is_finite() {
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" font-size="12" fill="#6b7280" text-anchor="middle" font-family="sans-serif">no data yet</text></svg>"##,
            (px0 + px1) / 2.0,
            (py0 + py1) / 2.0
        );
        out.push_str(&note(c));
        out.push_str("</figure>");
        return out;
    }
    // All zeros still get an axis.
    let top_value = if top_value > 0.0 { top_value } else { 1.0 };
    let (top, step) = y_axis(top_value, c.binary);
    let y = |v: f64| py0 + (1.0 - (v / top).clamp(0.0, 1.0)) * (py1 - py0);
    let mut v = 0.0;
    while v <= top + step / 1e6 {
        let yy = y(v);
        let _ = write!(
            out,
            r##"<line x1="{px0}" y1="{yy:.1}" x2="{px1}" y2="{yy:.1}" stroke="#e3e6ea"/><text x="{}" y="{:.1}" font-size="10" fill="#6b7280" text-anchor="end" font-family="sans-serif">{}</text>"##,
            px0 - 5.0,
            yy + 3.5,
            esc(&if v == 0.0 {
                "0".to_owned()
            } else {
                super::fmt::trim_zeros(&(c.unit)(v))
            })
        );
        v += step;
    }
    if let Some((lv, label)) = limit {
        let yy = y(*lv);
        let _ = write!(
            out,
            r##"<line x1="{px0}" y1="{yy:.1}" x2="{px1}" y2="{yy:.1}" stroke="#b42318" stroke-dasharray="5 4" stroke-width="1.5"/><text x="{}" y="{:.1}" font-size="10" fill="#b42318" text-anchor="end" font-family="sans-serif">{}</text>"##,
            px1 - 4.0,
            yy - 4.0,
            esc(label)
        );
    }
    // Dots first, lines over them.
    let mut ordered: Vec<&Series<'_>> = c.series.iter().collect();
    ordered.sort_by_key(|s| s.style != Style::Dots);
    for s in ordered {
        let mut pts: Vec<(u64, f64)> = Vec::new();
        let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut last_t: Option<u64> = None;
        for &(t, v) in &s.points {
            if !in_window(t) {
                continue;
            }
            match v.filter(|v| v.is_finite()) {
                Some(v) => {
                    let joined = s.style != Style::Dots
                        && last_t.is_some_and(|lt| t.saturating_sub(lt) <= c.max_gap_ms);
                    if !joined {
                        segments.push(Vec::new());
                    }
                    if let Some(seg) = segments.last_mut() {
                        seg.push((x(t), y(v)));
                    }
                    pts.push((t, v));
                    last_t = Some(t);
                }
                None => last_t = None,
            }
        }
        if segments.is_empty() {
            continue;
        }
        let mut d = String::new();
        let mut singles = String::new();
        for seg in &segments {
            if seg.len() == 1 || s.style == Style::Dots {
                for (px, py) in seg {
                    let _ = write!(singles, "M{px:.1} {py:.1}h0");
                }
                continue;
            }
            for (i, (px, py)) in seg.iter().enumerate() {
                let _ = write!(d, "{}{px:.1} {py:.1}", if i == 0 { "M" } else { "L" });
            }
            if s.style == Style::Area {
                if let (Some(first), Some(last)) = (seg.first(), seg.last()) {
                    let _ = write!(
                        out,
                        r#"<path d="M{:.1} {py1}{}L{:.1} {py1}Z" fill="{}" fill-opacity="0.12" stroke="none"/>"#,
                        first.0,
                        seg.iter()
                            .map(|(px, py)| format!("L{px:.1} {py:.1}"))
                            .collect::<String>(),
                        last.0,
                        s.color
                    );
                }
            }
        }
        if !d.is_empty() {
            let _ = write!(
                out,
                r#"<path class="series" d="{d}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>"#,
                s.color
            );
        }
        if !singles.is_empty() {
            let (width, opacity) = if s.style == Style::Dots {
                ("3", "0.35")
            } else {
                ("4", "1")
            };
            let _ = write!(
                out,
                r#"<path class="series dots" d="{singles}" stroke="{}" stroke-width="{width}" stroke-opacity="{opacity}" stroke-linecap="round"/>"#,
                s.color
            );
        }
    }
    out.push_str("</svg>");
    out.push_str(&note(c));
    out.push_str("</figure>");
    out
}

fn note(c: &Chart<'_>) -> String {
    c.note
        .as_deref()
        .map(|n| format!(r#"<p class="cnote">{}</p>"#, esc(n)))
        .unwrap_or_default()
}

/// Who led when over `[t0, t1]`: one band per stretch of collections that saw the same
/// leader (`None`: no leader, drawn red and labelled), blank where nothing was collected.
/// `color` gives each member's color.
pub fn leader_strip(
    points: &[(u64, Option<&str>)],
    t0: u64,
    t1: u64,
    max_gap_ms: u64,
    color: &dyn Fn(&str) -> &'static str,
) -> String {
    const SW: f64 = 1000.0;
    const SH: f64 = 26.0;
    let t1 = t1.max(t0 + 1);
    let x = |t: u64| (t.clamp(t0, t1) - t0) as f64 / (t1 - t0) as f64 * SW;
    let mut out = format!(
        r##"<svg viewBox="0 0 {SW} {SH}" preserveAspectRatio="none" class="strip" role="img" aria-label="leader over time"><rect width="{SW}" height="{SH}" fill="#eef0f3"/>"##
    );
    let mut i = 0;
    while i < points.len() {
        let (start, leader) = points[i];
        let mut j = i;
        while j + 1 < points.len()
            && points[j + 1].1 == leader
            && points[j + 1].0.saturating_sub(points[j].0) <= max_gap_ms
        {
            j += 1;
        }
        // A stretch lasts until the next collection, if it came soon enough.
        let end = match points.get(j + 1) {
            Some((next, _)) if next.saturating_sub(points[j].0) <= max_gap_ms => *next,
            _ => points[j].0 + max_gap_ms / 3,
        };
        if end > t0 && start < t1 {
            let fill = leader.map_or("#d92d20", color);
            let _ = write!(
                out,
                r#"<rect x="{:.2}" width="{:.2}" height="{SH}" fill="{fill}"><title>{}</title></rect>"#,
                x(start),
                (x(end) - x(start)).max(0.8),
                esc(&match leader {
                    Some(l) => format!("leader {l}"),
                    None => "no leader".to_owned(),
                })
            );
        }
        i = j + 1;
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(y_axis(7.3, false), (8.0, 2.0));
        let (top, step) = y_axis(0.42, false);
        assert!((top - 0.6).abs() < 1e-9 && (step - 0.2).abs() < 1e-9);
        assert_eq!(y_axis(100.0, false), (100.0, 25.0));
        let (top, step) = y_axis(3.0 * 1024.0 * 1024.0, true);
        assert_eq!(step, 1024.0 * 1024.0);
        assert_eq!(top, 3.0 * 1024.0 * 1024.0);
    }

    #[test]
    fn gaps_break_the_line_and_no_data_says_so() {
        let series = |points| Series {
            label: "x",
            color: "#000",
            style: Style::Line,
            points,
            now: None,
        };
        let c = Chart {
            title: "t",
            unit: |v| format!("{v}"),
            binary: false,
            series: vec![series(vec![
                (1000, Some(1.0)),
                (2000, Some(2.0)),
                (9000, Some(1.0)),
                (10_000, None),
                (11_000, Some(3.0)),
            ])],
            t0: 0,
            t1: 12_000,
            max_gap_ms: 1500,
            limit: None,
            note: None,
        };
        let svg = chart(&c);
        // One joined segment (1000-2000) and two single points as dots.
        assert_eq!(svg.matches(r#"class="series""#).count(), 1, "{svg}");
        assert_eq!(svg.matches("h0").count(), 2, "{svg}");
        let empty = chart(&Chart {
            series: vec![series(Vec::new())],
            ..c
        });
        assert!(empty.contains("no data yet"));
        assert!(!empty.contains(r#"class="series"#));
    }
}
