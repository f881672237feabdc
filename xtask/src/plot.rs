//! The report figures, drawn with plotters once per backend: SVG (`SVGBackend`) and PNG
//! (`BitMapBackend` into an RGB buffer, encoded by the `image` crate).
//!
//! Text goes through plotters' `ab_glyph` feature with a TrueType font found on the system
//! (DejaVu Sans, Liberation Sans, or any `.ttf` under the usual font folders; `SPARKNET_PLOT_FONT`
//! names one explicitly). Without any font the figures are still drawn, without text, and the
//! report says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Figure size in pixels (SVG user units too).
const SIZE: (u32, u32) = (960, 600);

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// A polyline with a dot at every point.
    Line,
    /// Large hollow markers only (measured checks on top of model curves).
    Points,
}

/// One named series of (x, y) points.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) mark: Mark,
    /// Index into the colour cycle (series that belong together share one).
    pub(crate) color: usize,
}

/// One accuracy curve per run: `(x(point), accuracy)` at each test point of the run's log, a
/// colour per run (the accuracy-vs-iterations and accuracy-vs-time figures of both benches).
pub(crate) fn accuracy_series<'a>(
    runs: impl Iterator<Item = (&'a str, &'a crate::train::RunLog)>,
    x: &dyn Fn(&crate::train::Point) -> f64,
) -> Vec<Series> {
    runs.enumerate()
        .map(|(i, (label, log))| Series {
            name: label.to_string(),
            points: log.points().iter().filter_map(|p| p.accuracy.map(|a| (x(p), a))).collect(),
            mark: Mark::Line,
            color: i,
        })
        .collect()
}

/// An x-y chart of several series.
#[derive(Clone, Debug)]
pub(crate) struct LineChart {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    pub(crate) series: Vec<Series>,
    /// Fit the y range to the data instead of starting at 0, legend at the lower right (for
    /// accuracy curves, which rise to the top right).
    pub(crate) zoom_y: bool,
}

/// Stacked bars: one bar per category, one stacked part per component.
#[derive(Clone, Debug)]
pub(crate) struct StackedBars {
    pub(crate) title: String,
    pub(crate) y_label: String,
    pub(crate) categories: Vec<String>,
    /// (component name, one value per category).
    pub(crate) parts: Vec<(String, Vec<f64>)>,
}

/// A figure of either kind.
#[derive(Clone, Debug)]
pub(crate) enum Figure {
    Lines(LineChart),
    Bars(StackedBars),
}

static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Registers a font with plotters once; false when none could be found (figures without text).
pub(crate) fn text_available() -> bool {
    font_in_use().is_some()
}

/// The font file registered with plotters (found on first use), for the report.
pub(crate) fn font_in_use() -> Option<PathBuf> {
    FONT.get_or_init(register_font).clone()
}

fn font_candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        std::env::var_os("SPARKNET_PLOT_FONT").map(PathBuf::from).into_iter().collect();
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ] {
        out.push(PathBuf::from(p));
    }
    // Any other TrueType file under the usual folders, in a stable order.
    for dir in ["/usr/share/fonts", "/usr/local/share/fonts"] {
        let mut found = Vec::new();
        collect_ttf(Path::new(dir), 0, &mut found);
        found.sort();
        out.extend(found);
    }
    out
}

fn collect_ttf(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && depth < 4 {
            collect_ttf(&p, depth + 1, out);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
}

fn register_font() -> Option<PathBuf> {
    for path in font_candidates() {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
            let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, bytes);
            return Some(path);
        }
    }
    None
}

/// Writes `<dir>/<stem>.svg` and `<dir>/<stem>.png`; returns their paths.
pub(crate) fn save(figure: &Figure, dir: &Path, stem: &str) -> Result<[PathBuf; 2]> {
    let text = text_available();
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(figure, &root, text).map_err(|e| anyhow!("drawing {}: {e}", svg.display()))?;
        root.present().map_err(|e| anyhow!("writing {}: {e}", svg.display()))?;
    }
    let png = dir.join(format!("{stem}.png"));
    let (w, h) = SIZE;
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        draw(figure, &root, text).map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
        root.present().map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
    }
    image::save_buffer_with_format(
        &png,
        &buf,
        w,
        h,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .with_context(|| format!("writing {}", png.display()))?;
    Ok([svg, png])
}

fn draw<DB: DrawingBackend>(
    figure: &Figure,
    root: &DrawingArea<DB, Shift>,
    text: bool,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    match figure {
        Figure::Lines(c) => draw_lines(c, root, text),
        Figure::Bars(b) => draw_bars(b, root, text),
    }
}

/// A range that contains every value, padded a little; never empty.
fn span(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-12 {
        hi = lo + if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 1.0 };
    }
    let pad = (hi - lo) * 0.05;
    (if from_zero && lo >= 0.0 { lo } else { lo - pad }, hi + pad)
}

fn draw_lines<DB: DrawingBackend>(
    c: &LineChart,
    root: &DrawingArea<DB, Shift>,
    text: bool,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let all = || c.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = span(all().map(|p| p.0), true);
    let (y0, y1) = span(all().map(|p| p.1), !c.zoom_y);
    let mut builder = ChartBuilder::on(root);
    builder.margin(16);
    if text {
        builder.caption(&c.title, ("sans-serif", 22)).x_label_area_size(48).y_label_area_size(64);
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(e)?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc(&c.x_label).y_desc(&c.y_label).label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(e)?;
    for s in &c.series {
        let color = COLORS[s.color % COLORS.len()];
        let drawn = match s.mark {
            Mark::Line => {
                let style = color.stroke_width(2);
                let line = chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), style))
                    .map_err(e)?;
                line.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(e)?
            }
            Mark::Points => chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 7, color.stroke_width(3))))
                .map_err(e)?,
        };
        if s.mark == Mark::Points {
            drawn
                .label(s.name.clone())
                .legend(move |(x, y)| Circle::new((x + 10, y), 6, color.stroke_width(3)));
        }
    }
    if text && !c.series.is_empty() {
        let at = if c.zoom_y {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        };
        chart
            .configure_series_labels()
            .position(at)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

fn draw_bars<DB: DrawingBackend>(
    b: &StackedBars,
    root: &DrawingArea<DB, Shift>,
    text: bool,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let n = b.categories.len().max(1);
    let totals: Vec<f64> = (0..n)
        .map(|i| b.parts.iter().map(|(_, v)| v.get(i).copied().unwrap_or(0.0).max(0.0)).sum())
        .collect();
    let (_, y1) = span(totals.iter().copied(), true);
    let mut builder = ChartBuilder::on(root);
    builder.margin(16);
    if text {
        builder.caption(&b.title, ("sans-serif", 22)).x_label_area_size(56).y_label_area_size(64);
    }
    let mut chart = builder
        .build_cartesian_2d((0..n as i32 - 1).into_segmented(), 0.0..y1 * 1.15)
        .map_err(e)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh().light_line_style(RGBColor(235, 235, 235));
    if text {
        let cats = b.categories.clone();
        let name = move |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                cats.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        };
        mesh.y_desc(&b.y_label)
            .x_labels(n)
            .x_label_formatter(&name)
            .label_style(("sans-serif", 12));
        mesh.draw().map_err(e)?;
    }
    // Without text there is no mesh to label: the bars alone.
    let mut base = vec![0.0f64; n];
    for (k, (name, values)) in b.parts.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let bars: Vec<_> = (0..n)
            .map(|i| {
                let v = values.get(i).copied().unwrap_or(0.0).max(0.0);
                let (lo, hi) = (base[i], base[i] + v);
                base[i] = hi;
                let mut r = Rectangle::new(
                    [(SegmentValue::Exact(i as i32), lo), (SegmentValue::Exact(i as i32 + 1), hi)],
                    color.filled(),
                );
                r.set_margin(0, 0, 10, 10);
                r
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

/// Checks that `path` is a non-empty SVG document.
pub(crate) fn check_svg(path: &Path) -> Result<()> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let head = s.trim_start();
    if !(head.starts_with("<svg") || head.starts_with("<?xml")) || !s.trim_end().ends_with("</svg>")
    {
        anyhow::bail!("{} is not an SVG document", path.display());
    }
    if !s.contains("<polyline") && !s.contains("<rect") && !s.contains("<circle") {
        anyhow::bail!("{} has no drawn elements", path.display());
    }
    Ok(())
}

/// Checks that `path` is a PNG with the figure's size.
pub(crate) fn check_png(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 100 || !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        anyhow::bail!("{} is not a PNG file", path.display());
    }
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .with_context(|| format!("decoding {}", path.display()))?;
    if (img.width(), img.height()) != SIZE {
        anyhow::bail!(
            "{} is {}x{}, expected {}x{}",
            path.display(),
            img.width(),
            img.height(),
            SIZE.0,
            SIZE.1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Vec<Figure> {
        let line = |name: &str, k: f64, mark| Series {
            name: name.into(),
            points: (0..10).map(|i| (f64::from(i), k * f64::from(i).sqrt())).collect(),
            mark,
            color: k as usize,
        };
        vec![
            Figure::Lines(LineChart {
                title: "t".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                series: vec![line("a", 1.0, Mark::Line), line("b", 2.0, Mark::Points)],
                zoom_y: true,
            }),
            Figure::Bars(StackedBars {
                title: "b".into(),
                y_label: "s".into(),
                categories: vec!["K=1".into(), "K=2 tau=10".into()],
                parts: vec![
                    ("compute".into(), vec![1.0, 2.0]),
                    ("allreduce".into(), vec![0.0, 0.5]),
                ],
            }),
            Figure::Bars(StackedBars {
                title: "one".into(),
                y_label: "s".into(),
                categories: vec!["K=1".into()],
                parts: vec![("compute".into(), vec![0.0])],
            }),
            // Degenerate input still draws.
            Figure::Lines(LineChart {
                title: "e".into(),
                x_label: "".into(),
                y_label: "".into(),
                series: vec![],
                zoom_y: false,
            }),
        ]
    }

    #[test]
    fn figures_save_and_check() {
        let dir = std::env::temp_dir().join(format!("xtask-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, f) in figures().iter().enumerate() {
            let [svg, png] = save(f, &dir, &format!("f{i}")).unwrap();
            check_svg(&svg).unwrap();
            check_png(&png).unwrap();
        }
        // XTASK_KEEP_PLOTS=1 keeps the figures to look at.
        if std::env::var_os("XTASK_KEEP_PLOTS").is_none() {
            std::fs::remove_dir_all(&dir).unwrap();
        } else {
            eprintln!("figures kept in {}", dir.display());
        }
    }

    #[test]
    fn figures_draw_without_text() {
        let (w, h) = SIZE;
        let mut buf = vec![0u8; w as usize * h as usize * 3];
        for f in figures() {
            let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
            draw(&f, &root, false).unwrap();
        }
    }

    #[test]
    fn checks_reject_other_files() {
        let dir = std::env::temp_dir().join(format!("xtask-plot-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.svg");
        std::fs::write(&p, "hello").unwrap();
        assert!(check_svg(&p).is_err());
        assert!(check_png(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
