//! The SVG chart of an HTTP bench run: one panel per mode and metric
//! (requests/s on top, CPU time per request below), one bar per server.
//!
//! Drawn with plotters' SVG backend only: text goes into the SVG as `<text>`
//! elements, so no font is loaded at build or run time.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One panel: a title, a unit, and one value per server (`None`: no data).
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// How to print a value on its bar.
    pub format: fn(f64) -> String,
    /// `(server, value)`, in bar order.
    pub bars: Vec<(String, Option<f64>)>,
}

/// Bar colours, by position (the same server gets the same colour in every panel).
const COLOURS: [RGBColor; 5] = [
    RGBColor(214, 96, 39),
    RGBColor(66, 110, 180),
    RGBColor(110, 160, 70),
    RGBColor(150, 100, 170),
    RGBColor(120, 120, 120),
];

/// Draws `panels` in a grid of `columns` columns into an SVG file at `path`.
pub fn draw(path: &Path, title: &str, panels: &[Panel], columns: usize) -> Result<(), String> {
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (470 * columns as u32, 60 + 300 * rows as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let body = root
        .titled(title, ("sans-serif", 24))
        .map_err(|e| e.to_string())?;
    let areas = body.split_evenly((rows, columns));
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw_panel(area, panel).map_err(|e| format!("drawing {}: {e}", panel.title))?;
    }
    root.present()
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), Box<dyn std::error::Error + 'static>>
where
    DB::ErrorType: 'static,
{
    let count = panel.bars.len().max(1);
    let top = panel
        .bars
        .iter()
        .filter_map(|(_, v)| *v)
        .fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.2 } else { 1.0 };
    let names: Vec<String> = panel.bars.iter().map(|(name, _)| name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 19))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(48)
        .build_cartesian_2d((0..count - 1).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_max_light_lines(1)
        .x_labels(count)
        .x_label_style(("sans-serif", 13))
        .x_label_formatter(&|value| match value {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_style(("sans-serif", 14))
        .y_label_formatter(&|v| (panel.format)(*v))
        .draw()?;
    for (i, (_, value)) in panel.bars.iter().enumerate() {
        let Some(value) = *value else { continue };
        let colour = COLOURS[i % COLOURS.len()];
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(colour.filled())
                .margin(12)
                .data([(i, value)]),
        )?;
        let label = TextStyle::from(("sans-serif", 14).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(std::iter::once(Text::new(
            (panel.format)(value),
            (SegmentValue::CenterOf(i), value),
            label,
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_every_label() {
        let dir = std::env::temp_dir().join(format!("forkless-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("chart.svg");
        let panel = Panel {
            title: "requests/s".into(),
            format: |v| format!("{v:.0}"),
            bars: vec![("forkless".into(), Some(120.0)), ("peer".into(), None)],
        };
        draw(&path, "test run", &[panel.clone(), panel], 2).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("forkless"));
        assert!(svg.contains("test run"));
        assert!(svg.contains("\n120\n"), "the bar is labelled");
    }
}
