//! The ranked result of a grid search, written as CSV and markdown.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{GridPoint, Score};
use crate::error::{Result, TrainError};

/// One row of the ranked table.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRow {
    /// 1-based rank (1 = best).
    pub rank: usize,
    /// The settings.
    pub point: GridPoint,
    /// The score.
    pub score: Score,
    /// Whether background normalisation inverted the image.
    pub inverted: bool,
    /// Wall-clock seconds spent generating the image.
    pub generate_seconds: f64,
    /// The saved (normalised) image, relative to the output folder.
    pub image_file: Option<PathBuf>,
    /// The saved SVG, relative to the output folder.
    pub svg_file: Option<PathBuf>,
}

/// The ranked result of [`grid_search`](super::grid_search)(super::grid_search).
#[derive(Debug, Clone, PartialEq)]
pub struct GridReport {
    /// The scorer's name.
    pub scorer: String,
    /// Rows, best first.
    pub rows: Vec<GridRow>,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

impl GridReport {
    /// The best valid row.
    pub fn best(&self) -> Option<&GridRow> {
        self.rows.first().filter(|r| r.score.valid)
    }

    /// Metric names, in order of first appearance.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for r in &self.rows {
            for (n, _) in &r.score.metrics {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names
    }

    fn metric(row: &GridRow, name: &str) -> String {
        row.score
            .metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| format!("{v}"))
            .unwrap_or_default()
    }

    /// The table as CSV (header + one line per row, best first).
    pub fn to_csv(&self) -> String {
        let metrics = self.metric_names();
        let mut out = String::from(
            "rank,index,prompt,subject,scheduler,steps,seed,guidance_scale,score,valid,inverted",
        );
        for m in &metrics {
            out.push(',');
            out.push_str(&csv_field(m));
        }
        out.push_str(",generate_seconds,image,svg\n");
        for r in &self.rows {
            let p = &r.point;
            let _ = write!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}",
                r.rank,
                p.index,
                csv_field(&p.prompt),
                csv_field(&p.subject),
                p.scheduler,
                p.steps,
                p.seed,
                p.guidance_scale,
                r.score.value,
                r.score.valid,
                r.inverted
            );
            for m in &metrics {
                out.push(',');
                out.push_str(&Self::metric(r, m));
            }
            let path = |f: &Option<PathBuf>| {
                f.as_ref()
                    .map(|p| csv_field(&p.to_string_lossy()))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                out,
                ",{:.3},{},{}",
                r.generate_seconds,
                path(&r.image_file),
                path(&r.svg_file)
            );
        }
        out
    }

    /// The table as markdown, with the images inlined (paths relative to the output folder).
    pub fn to_markdown(&self) -> String {
        let metrics = self.metric_names();
        let mut out = format!(
            "# Grid search ({} images, scorer `{}`)\n\n",
            self.rows.len(),
            self.scorer
        );
        out.push_str("| rank | image | prompt | scheduler | steps | seed | guidance | score |");
        for m in &metrics {
            let _ = write!(out, " {} |", md_cell(m));
        }
        out.push_str("\n|---:|---|---|---|---:|---:|---:|---:|");
        for _ in &metrics {
            out.push_str("---:|");
        }
        out.push('\n');
        for r in &self.rows {
            let p = &r.point;
            let image = r
                .image_file
                .as_ref()
                .map(|f| format!("![{}]({})", p.index, f.to_string_lossy().replace('\\', "/")))
                .unwrap_or_default();
            let score = if r.score.valid {
                format!("{:.4}", r.score.value)
            } else {
                format!("{:.4} (invalid)", r.score.value)
            };
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.rank,
                image,
                md_cell(&p.prompt),
                p.scheduler,
                p.steps,
                p.seed,
                p.guidance_scale,
                score
            );
            for m in &metrics {
                let v = r
                    .score
                    .metrics
                    .iter()
                    .find(|(n, _)| n == m)
                    .map(|(_, v)| *v);
                let cell = match v {
                    Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
                    Some(v) => format!("{v:.4}"),
                    None => String::new(),
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out
    }

    /// Writes `results.csv` and `results.md` into `dir`.
    ///
    /// # Errors
    /// [`TrainError::Io`] when a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        for (name, text) in [
            ("results.csv", self.to_csv()),
            ("results.md", self.to_markdown()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
        }
        Ok(())
    }
}
