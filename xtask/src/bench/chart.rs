//! `report.svg`: the report's MicroV/KVM ratios as a bar chart (log scale,
//! bars from the 1.0 line: left of it MicroV executes fewer instructions),
//! and beneath it the exit cases' instructions per iteration on both
//! backends. Drawn with plotters' SVG backend only: text is written as SVG
//! `<text>` for the viewer to render, so no font files are read.

use super::report::{count, Report, Row};
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub const TITLE: &str = "MicroV / KVM, instructions (lower is better)";
const COUNTS_TITLE: &str = "Exit cases: instructions per iteration (lower is better)";

/// The cases of the second panel: per-iteration counts of one exit each.
pub const EXIT_CASES: &[&str] = &["hypercall", "cpuid", "pio", "mmio"];

const WIDTH: u32 = 960;
const FONT: &str = "sans-serif";
/// Font sizes (plotters draws a size-s font at s / 1.24 px).
const TEXT: u32 = 17;
const SMALL: u32 = 16;
const CAPTION: u32 = 26;
/// Pixels per case in the ratio panel.
const ROW_HEIGHT: u32 = 40;
const COUNTS_HEIGHT: u32 = 360;
/// A case's band on the category axis, in its units (integers, which
/// plotters formats through a label formatter with chosen key points).
const BAND: i32 = 20;

const MICROV_COLOR: RGBColor = RGBColor(31, 119, 180);
const KVM_COLOR: RGBColor = RGBColor(255, 127, 14);
const FEWER_COLOR: RGBColor = RGBColor(44, 160, 44);
const MORE_COLOR: RGBColor = RGBColor(214, 39, 40);

/// A ratio as the table prints it.
pub fn ratio_label(r: f64) -> String {
    format!("{r:.2}")
}

/// The cases with a ratio, in the report's order.
fn ratios(report: &Report) -> Vec<(&str, f64)> {
    report
        .rows
        .iter()
        .filter_map(|r| Some((r.case.as_str(), r.ratio().filter(|v| *v > 0.0)?)))
        .collect()
}

/// The exit cases with a figure on both backends: (case, MicroV, KVM).
fn exit_counts(report: &Report) -> Vec<(&str, f64, f64)> {
    EXIT_CASES
        .iter()
        .filter_map(|c| {
            let row: &Row = report.rows.iter().find(|r| r.case == *c)?;
            Some((row.case.as_str(), row.microv.mean()?, row.kvm.mean()?))
        })
        .collect()
}

/// The chart as an SVG document. A report without any ratio gives a chart
/// that says so.
pub fn svg(report: &Report) -> Result<String> {
    let ratios = ratios(report);
    let counts = exit_counts(report);
    let ratio_height = 110 + ROW_HEIGHT * ratios.len().max(1) as u32;
    let height = ratio_height + if counts.is_empty() { 0 } else { COUNTS_HEIGHT };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(ratio_height);
        ratio_panel(&top, &ratios)?;
        if !counts.is_empty() {
            counts_panel(&bottom, &counts)?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

/// 1, 2 and 5 times the powers of ten within [lo, hi] (the labelled
/// ticks), and the other multiples (light lines).
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in 1..10 {
            let v = decade * f64::from(m);
            if v < lo * 0.999 || v > hi * 1.001 {
                continue;
            }
            if matches!(m, 1 | 2 | 5) {
                bold.push(v);
            } else {
                light.push(v);
            }
        }
        decade *= 10.0;
    }
    (bold, light)
}

/// The nearest of 1, 2 and 5 times a power of ten above (or below) v > 0.
fn nice(v: f64, up: bool) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    let steps = [1.0, 2.0, 5.0, 10.0].map(|m| decade * m);
    if up {
        steps
            .into_iter()
            .find(|&s| s >= v * 0.999)
            .unwrap_or(decade * 10.0)
    } else {
        steps
            .into_iter()
            .rev()
            .find(|&s| s <= v * 1.001)
            .unwrap_or(decade)
    }
}

fn tick_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        // 0.5, 0.2, 0.05 ...: as many decimals as the value needs.
        let decimals = (-v.log10()).ceil().max(1.0) as usize;
        format!("{v:.decimals$}")
    }
}

fn ratio_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, ratios: &[(&str, f64)]) -> Result<()> {
    if ratios.is_empty() {
        area.titled(TITLE, (FONT, CAPTION))
            .map_err(err)?
            .draw(&Text::new(
                "no case has a figure on both MicroV and KVM",
                (40, 30),
                (FONT, TEXT),
            ))
            .map_err(err)?;
        return Ok(());
    }
    let n = ratios.len();
    let min = ratios.iter().map(|r| r.1).fold(1.0, f64::min);
    let max = ratios.iter().map(|r| r.1).fold(1.0, f64::max);
    // Room for the labels at the bars' ends, at least 0.5 to 2, and ends
    // on labelled ticks.
    let lo = nice(min / 1.6, false).min(0.5);
    let hi = nice(max * 1.6, true).max(2.0);
    let (bold, light) = log_ticks(lo, hi);
    // Case i from the top: its band is row(i)..row(i) + BAND, its label at
    // the middle.
    let rows = n as i32;
    let row = |i: usize| (rows - 1 - i as i32) * BAND;
    let centers: Vec<i32> = (0..n).map(|i| row(i) + BAND / 2).collect();
    let name_of = |y: &i32| {
        let from_top = rows - 1 - y.div_euclid(BAND);
        match usize::try_from(from_top) {
            Ok(i) if y.rem_euclid(BAND) == BAND / 2 => {
                ratios.get(i).map_or(String::new(), |r| r.0.to_string())
            }
            _ => String::new(),
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(TITLE, (FONT, CAPTION))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(150)
        .build_cartesian_2d(
            (lo..hi)
                .log_scale()
                .with_key_points(bold)
                .with_light_points(light),
            (0..rows * BAND).with_key_points(centers),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("MicroV / KVM (log scale; left of 1: MicroV executes fewer instructions)")
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&name_of)
        .label_style((FONT, TEXT))
        .axis_desc_style((FONT, TEXT))
        .draw()
        .map_err(err)?;
    let band = chart.plotting_area().dim_in_pixel().1 / n as u32;
    let pad = band / 5;
    chart
        .draw_series(ratios.iter().enumerate().map(|(i, &(_, r))| {
            let color = if r <= 1.0 { FEWER_COLOR } else { MORE_COLOR };
            let mut bar = Rectangle::new([(1.0, row(i)), (r, row(i) + BAND)], color.filled());
            bar.set_margin(pad, pad, 0, 0);
            bar
        }))
        .map_err(err)?;
    // The 1.0 line over the bars.
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0), (1.0, rows * BAND)],
            BLACK.stroke_width(2),
        )))
        .map_err(err)?;
    chart
        .draw_series(ratios.iter().enumerate().map(|(i, &(_, r))| {
            let y = row(i) + BAND / 2;
            // Left of the bar's end when it extends left (1.00 and above: right).
            let (dx, h) = if r < 0.995 {
                (-6, HPos::Right)
            } else {
                (6, HPos::Left)
            };
            let style = TextStyle::from((FONT, TEXT)).pos(Pos::new(h, VPos::Center));
            EmptyElement::at((r, y)) + Text::new(ratio_label(r), (dx, 0), style)
        }))
        .map_err(err)?;
    Ok(())
}

fn counts_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    counts: &[(&str, f64, f64)],
) -> Result<()> {
    let n = counts.len();
    let top = counts.iter().map(|c| c.1.max(c.2)).fold(1.0, f64::max) * 1.15;
    let cols = n as i32;
    let centers: Vec<i32> = (0..cols).map(|i| i * BAND + BAND / 2).collect();
    let name_of = |x: &i32| match usize::try_from(x.div_euclid(BAND)) {
        Ok(i) if x.rem_euclid(BAND) == BAND / 2 => {
            counts.get(i).map_or(String::new(), |c| c.0.to_string())
        }
        _ => String::new(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(COUNTS_TITLE, (FONT, CAPTION))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(150)
        .build_cartesian_2d((0..cols * BAND).with_key_points(centers), 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(1)
        .x_label_formatter(&name_of)
        .y_label_formatter(&|v| count(*v))
        .label_style((FONT, TEXT))
        .axis_desc_style((FONT, TEXT))
        .draw()
        .map_err(err)?;
    // In each case's band: MicroV's bar left of the middle, KVM's right.
    let bars = [(3, 10, MICROV_COLOR, "MicroV"), (10, 17, KVM_COLOR, "KVM")];
    for (k, &(from, to, color, name)) in bars.iter().enumerate() {
        let value = |c: &(&str, f64, f64)| if k == 0 { c.1 } else { c.2 };
        chart
            .draw_series(counts.iter().enumerate().map(|(i, c)| {
                let x = i as i32 * BAND;
                let mut bar = Rectangle::new([(x + from, 0.0), (x + to, value(c))], color.filled());
                bar.set_margin(0, 0, 1, 1);
                bar
            }))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        chart
            .draw_series(counts.iter().enumerate().map(|(i, c)| {
                let x = i as i32 * BAND + (from + to) / 2;
                let style =
                    TextStyle::from((FONT, SMALL)).pos(Pos::new(HPos::Center, VPos::Bottom));
                EmptyElement::at((x, value(c))) + Text::new(count(value(c)), (0, -4), style)
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, TEXT))
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{Figures, Setup};

    fn figures(iterations: u64, tsc: &[u64]) -> Figures {
        Figures {
            runs: tsc.iter().map(|&t| (iterations, t)).collect(),
            idle_ns: vec![None; tsc.len()],
        }
    }

    fn row(case: &str, iterations: u64, microv: &[u64], kvm: &[u64]) -> Row {
        Row {
            case: case.into(),
            microv: figures(iterations, microv),
            kvm: figures(iterations, kvm),
            native: Figures::default(),
        }
    }

    fn report(rows: Vec<Row>) -> Report {
        Report {
            setup: Setup {
                qemu: String::new(),
                kernel: String::new(),
                repeats: 1,
                iterations: 1000,
            },
            rows,
            stats: Vec::new(),
            images: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn sample() -> Report {
        report(vec![
            row("hypercall", 1000, &[1_165_000], &[3_393_000]),
            row("cpuid", 1000, &[1_184_000], &[3_150_000]),
            row("pio", 1000, &[4_171_000], &[3_955_000]),
            row(
                "mmio",
                1000,
                &[6_643_000, 6_643_000],
                &[5_885_000, 5_885_000],
            ),
            row("linux-boot-init", 1, &[6_087_429_286], &[6_079_102_588]),
            row("vm-create-destroy", 5, &[545_170_575], &[71_990_180]),
            // KVM missing: left out of the ratios.
            row("linux-boot-exit", 1, &[6_131_861_801], &[]),
        ])
    }

    /// How plotters' SVG backend writes a text element's content.
    fn text(s: &str) -> String {
        format!(">\n{s}\n</text>")
    }

    fn well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
    }

    #[test]
    fn every_case_and_ratio_is_in_the_chart() {
        let r = sample();
        let svg = svg(&r).expect("chart");
        well_formed(&svg);
        assert!(svg.contains(TITLE), "{svg}");
        for (case, label) in [
            ("hypercall", "0.34"),
            ("cpuid", "0.38"),
            ("pio", "1.05"),
            ("mmio", "1.13"),
            ("linux-boot-init", "1.00"),
            ("vm-create-destroy", "7.57"),
        ] {
            assert!(svg.contains(&text(case)), "{case}: {svg}");
            assert!(svg.contains(&text(label)), "{label}: {svg}");
        }
        // No ratio for a case KVM did not give: it is not in the chart.
        assert!(!svg.contains(&text("linux-boot-exit")), "{svg}");
        // The second panel: both backends' counts of the exit cases.
        assert!(svg.contains(COUNTS_TITLE), "{svg}");
        for label in ["1,165", "3,393", "4,171", "3,955", "6,643", "5,885"] {
            assert!(svg.contains(&text(label)), "{label}: {svg}");
        }
        assert!(
            svg.contains(&text("MicroV")) && svg.contains(&text("KVM")),
            "{svg}"
        );
    }

    #[test]
    fn no_ratio_gives_a_chart_that_says_so() {
        let mut r = sample();
        for row in &mut r.rows {
            row.kvm = Figures::default();
        }
        let svg = svg(&r).expect("chart");
        well_formed(&svg);
        assert!(svg.contains("no case has a figure on both"), "{svg}");
        assert!(!svg.contains(COUNTS_TITLE), "{svg}");
        let svg = super::svg(&report(Vec::new())).expect("chart");
        well_formed(&svg);
        assert!(svg.contains("no case has a figure on both"), "{svg}");
    }

    #[test]
    fn log_ticks_are_one_two_five() {
        let (bold, light) = log_ticks(0.1, 10.0);
        assert_eq!(bold, [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert_eq!(light.len(), 12);
        assert_eq!(nice(0.21, false), 0.2);
        assert_eq!(nice(12.1, true), 20.0);
        assert_eq!(nice(0.34, true), 0.5);
        assert_eq!(nice(3.0, false), 2.0);
        assert_eq!(tick_label(0.2), "0.2");
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(5.0), "5");
        assert_eq!(count(1_234_567.0), "1,234,567");
    }
}
