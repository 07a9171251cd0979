//! `lehr corpus report`: what the filters did, per language and per rule, from a finished job's
//! manifest and attributes files (no document is read again).
//!
//! The report holds, per language: documents and bytes read, kept and dropped; per language and
//! rule: documents and bytes dropped (by the first rule that fired) and documents the rule would
//! have dropped on its own (`fired`, with `score-dropped`); per stage score: quantiles per
//! language; and a few sample dropped documents (their preview) per rule. It renders as text,
//! JSON, Markdown and HTML with an SVG chart of documents dropped per rule per language.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::error::{PipelineError, PipelineResult};
use crate::manifest::{Manifest, MANIFEST_NAME};
use crate::store::Location;
use crate::task::ATTRIBUTES_DIR;
use crate::text::escape_xml;

/// Quantiles reported for every score.
pub const QUANTILES: [f64; 7] = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99];
/// Sample dropped documents kept per (language, rule).
pub const SAMPLES_PER_RULE: usize = 3;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub name: Option<String>,
    pub output: String,
    pub docs_read: u64,
    pub docs_kept: u64,
    pub bytes_read: u64,
    pub bytes_kept: u64,
    pub languages: Vec<LangReport>,
    /// Manifest view per stage (all languages): in, kept, dropped by rule.
    pub stages: Vec<crate::manifest::StageSummary>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LangReport {
    pub lang: String,
    pub docs: u64,
    pub bytes: u64,
    pub kept_docs: u64,
    pub kept_bytes: u64,
    pub rules: Vec<RuleReport>,
    pub scores: Vec<ScoreReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleReport {
    /// Stage label (`gopher-quality-zh`).
    pub stage: String,
    pub rule: String,
    /// Documents this rule dropped (it was the first to fire).
    pub dropped_docs: u64,
    pub dropped_bytes: u64,
    /// Documents on which the rule fired, including those an earlier rule had dropped.
    pub fired_docs: u64,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub id: String,
    pub preview: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    /// `stage.score` column name.
    pub column: String,
    pub count: u64,
    pub mean: f64,
    /// `(q, value)` for each of [`QUANTILES`].
    pub quantiles: Vec<(f64, f64)>,
}

/// Per (stage, rule): dropped docs, dropped bytes, docs fired on, samples.
#[derive(Default)]
struct RuleAcc {
    dropped: u64,
    bytes: u64,
    fired: u64,
    samples: Vec<Sample>,
}

#[derive(Default)]
struct LangAcc {
    docs: u64,
    bytes: u64,
    kept_docs: u64,
    kept_bytes: u64,
    rules: BTreeMap<(String, String), RuleAcc>,
    scores: BTreeMap<String, Vec<f64>>,
}

/// Builds the report of the job whose output directory is `out`.
#[cfg(feature = "parquet")]
pub async fn build(out: &Location, output_display: &str) -> PipelineResult<Report> {
    use polars::prelude::*;
    let manifest_bytes = out.get(MANIFEST_NAME).await?.ok_or_else(|| {
        PipelineError::Other(format!(
            "{output_display} has no {MANIFEST_NAME}: not the output directory of a finished corpus job"
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| PipelineError::Other(format!("{output_display}/{MANIFEST_NAME} is not a lehr manifest: {e}")))?;
    let mut langs: BTreeMap<String, LangAcc> = BTreeMap::new();
    let attr_files: Vec<_> =
        manifest.files.iter().filter(|f| f.name.starts_with(&format!("{ATTRIBUTES_DIR}/"))).collect();
    if attr_files.is_empty() {
        return Err(PipelineError::Other(format!(
            "{output_display} has no attributes files: run the job with `attributes = true` in [output]"
        )));
    }
    for f in attr_files {
        let bytes = out.get(&f.name).await?.ok_or_else(|| {
            PipelineError::Other(format!("{output_display}/{} is listed in the manifest but missing", f.name))
        })?;
        let err = |e: PolarsError| PipelineError::Parquet { location: f.name.clone(), message: e.to_string() };
        let df = ParquetReader::new(std::io::Cursor::new(bytes)).finish().map_err(err)?;
        let col_str = |name: &str| -> PipelineResult<Vec<Option<String>>> {
            Ok(df.column(name).map_err(err)?.str().map_err(err)?.iter().map(|v| v.map(String::from)).collect())
        };
        let ids = col_str("id")?;
        let lang = col_str("lang")?;
        let dropped_by = col_str("dropped_by")?;
        let rule = col_str("rule")?;
        let preview = col_str("preview")?;
        let bytes_col: Vec<u64> =
            df.column("bytes").map_err(err)?.u64().map_err(err)?.iter().map(|v| v.unwrap_or(0)).collect();
        let kept: Vec<bool> =
            df.column("kept").map_err(err)?.bool().map_err(err)?.iter().map(|v| v.unwrap_or(false)).collect();
        // per-stage rule columns and score columns
        let mut rule_cols: Vec<(String, Vec<Option<String>>)> = Vec::new();
        let mut score_cols: Vec<(String, Vec<Option<f64>>)> = Vec::new();
        for c in df.columns() {
            let name = c.name().to_string();
            if let Some(stage) = name.strip_suffix(".rule") {
                rule_cols.push((stage.to_string(), col_str(&name)?));
            } else if name.contains('.') {
                if let Ok(ca) = c.f64() {
                    score_cols.push((name.clone(), ca.iter().collect()));
                }
            }
        }
        for i in 0..ids.len() {
            let l = lang[i].clone().unwrap_or_else(|| "unknown".into());
            let acc = langs.entry(l).or_default();
            acc.docs += 1;
            acc.bytes += bytes_col[i];
            if kept[i] {
                acc.kept_docs += 1;
                acc.kept_bytes += bytes_col[i];
            } else if let (Some(stage), Some(r)) = (&dropped_by[i], &rule[i]) {
                let e = acc.rules.entry((stage.clone(), r.clone())).or_default();
                e.dropped += 1;
                e.bytes += bytes_col[i];
                if e.samples.len() < SAMPLES_PER_RULE {
                    e.samples.push(Sample {
                        id: ids[i].clone().unwrap_or_default(),
                        preview: preview[i].clone().unwrap_or_default(),
                    });
                }
            }
            for (stage, col) in &rule_cols {
                if let Some(r) = &col[i] {
                    acc.rules.entry((stage.clone(), r.clone())).or_default().fired += 1;
                }
            }
            for (name, col) in &score_cols {
                if let Some(v) = col[i].filter(|v| v.is_finite()) {
                    acc.scores.entry(name.clone()).or_default().push(v);
                }
            }
        }
    }
    let mut report = Report {
        name: manifest.name.clone(),
        output: output_display.to_string(),
        stages: manifest.stages.clone(),
        ..Default::default()
    };
    for (lang, acc) in langs {
        report.docs_read += acc.docs;
        report.bytes_read += acc.bytes;
        report.docs_kept += acc.kept_docs;
        report.bytes_kept += acc.kept_bytes;
        let mut rules: Vec<RuleReport> = acc
            .rules
            .into_iter()
            .map(|((stage, rule), a)| RuleReport {
                stage,
                rule,
                dropped_docs: a.dropped,
                dropped_bytes: a.bytes,
                fired_docs: a.fired,
                samples: a.samples,
            })
            .collect();
        rules.sort_by(|a, b| b.dropped_docs.cmp(&a.dropped_docs).then(b.fired_docs.cmp(&a.fired_docs)));
        let scores = acc
            .scores
            .into_iter()
            .map(|(column, mut v)| {
                v.sort_by(|a, b| a.total_cmp(b));
                let n = v.len();
                ScoreReport {
                    column,
                    count: n as u64,
                    mean: v.iter().sum::<f64>() / n as f64,
                    quantiles: QUANTILES.iter().map(|q| (*q, quantile(&v, *q))).collect(),
                }
            })
            .collect();
        report.languages.push(LangReport {
            lang,
            docs: acc.docs,
            bytes: acc.bytes,
            kept_docs: acc.kept_docs,
            kept_bytes: acc.kept_bytes,
            rules,
            scores,
        });
    }
    // biggest languages first; stray labels (a mojibake page detected as `af`) last
    report.languages.sort_by(|a, b| b.docs.cmp(&a.docs).then(a.lang.cmp(&b.lang)));
    Ok(report)
}

/// Nearest-rank quantile of sorted values (not empty).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

fn mb(b: u64) -> String {
    format!("{:.2} MB", b as f64 / 1e6)
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    if s.chars().count() > max {
        format!("{flat}…")
    } else {
        flat
    }
}

impl Report {
    /// Plain-text summary for the terminal.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} docs read, {} kept ({:.1}%); {} read, {} kept ({:.1}%)",
            self.name.as_deref().unwrap_or(&self.output),
            self.docs_read,
            self.docs_kept,
            pct(self.docs_kept, self.docs_read),
            mb(self.bytes_read),
            mb(self.bytes_kept),
            pct(self.bytes_kept, self.bytes_read)
        );
        for l in &self.languages {
            let _ = writeln!(
                s,
                "\n[{}] {} docs, kept {} ({:.1}%), {} of {} kept",
                l.lang,
                l.docs,
                l.kept_docs,
                pct(l.kept_docs, l.docs),
                mb(l.kept_bytes),
                mb(l.bytes)
            );
            let _ = writeln!(s, "  {:<28} {:<30} {:>8} {:>10} {:>8}", "stage", "rule", "dropped", "bytes", "fired");
            for r in &l.rules {
                let _ = writeln!(
                    s,
                    "  {:<28} {:<30} {:>8} {:>10} {:>8}",
                    r.stage,
                    r.rule,
                    r.dropped_docs,
                    mb(r.dropped_bytes),
                    r.fired_docs
                );
                for smp in r.samples.iter().take(1) {
                    let _ = writeln!(s, "      e.g. {}: {}", smp.id, one_line(&smp.preview, 90));
                }
            }
            if !l.scores.is_empty() {
                let _ = writeln!(
                    s,
                    "  {:<40} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    "score", "n", "p10", "p25", "p50", "p75", "p90"
                );
                for sc in &l.scores {
                    let q = |x: f64| {
                        sc.quantiles.iter().find(|(k, _)| (*k - x).abs() < 1e-9).map(|p| p.1).unwrap_or(f64::NAN)
                    };
                    let _ = writeln!(
                        s,
                        "  {:<40} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                        sc.column,
                        sc.count,
                        q(0.1),
                        q(0.25),
                        q(0.5),
                        q(0.75),
                        q(0.9)
                    );
                }
            }
        }
        s
    }

    /// Markdown report (the chart is linked as `dropped.svg`).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Corpus report: {}\n", self.name.as_deref().unwrap_or(&self.output));
        let _ = writeln!(s, "Output: `{}`\n", self.output);
        let _ = writeln!(
            s,
            "| language | docs | kept docs | kept % | bytes | kept bytes |\n|---|---:|---:|---:|---:|---:|"
        );
        for l in &self.languages {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} | {} | {} |",
                l.lang,
                l.docs,
                l.kept_docs,
                pct(l.kept_docs, l.docs),
                mb(l.bytes),
                mb(l.kept_bytes)
            );
        }
        let _ = writeln!(s, "\n![documents dropped per rule per language](dropped.svg)\n");
        for l in &self.languages {
            let _ = writeln!(s, "## {}\n", l.lang);
            let _ = writeln!(s, "| stage | rule | dropped docs | dropped bytes | fired on |\n|---|---|---:|---:|---:|");
            for r in &l.rules {
                let _ = writeln!(
                    s,
                    "| {} | `{}` | {} | {} | {} |",
                    r.stage,
                    r.rule,
                    r.dropped_docs,
                    mb(r.dropped_bytes),
                    r.fired_docs
                );
            }
            if !l.scores.is_empty() {
                let head: Vec<String> = QUANTILES.iter().map(|q| format!("p{}", (q * 100.0).round())).collect();
                let _ = writeln!(
                    s,
                    "\n| score | n | mean | {} |\n|---|---:|---:|{}",
                    head.join(" | "),
                    "---:|".repeat(head.len())
                );
                for sc in &l.scores {
                    let qs: Vec<String> = sc.quantiles.iter().map(|(_, v)| format!("{v:.3}")).collect();
                    let _ = writeln!(s, "| {} | {} | {:.3} | {} |", sc.column, sc.count, sc.mean, qs.join(" | "));
                }
            }
            let _ = writeln!(s, "\nSample dropped documents:\n");
            for r in l.rules.iter().filter(|r| !r.samples.is_empty()) {
                for smp in &r.samples {
                    let _ = writeln!(
                        s,
                        "- **{} / {}** `{}`: {}",
                        r.stage,
                        r.rule,
                        smp.id,
                        one_line(&smp.preview, 200).replace('|', "\\|")
                    );
                }
            }
            let _ = writeln!(s);
        }
        s
    }

    /// Horizontal bar chart: documents dropped per (stage, rule), one bar per language.
    pub fn chart_svg(&self) -> String {
        let mut keys: Vec<(String, String)> = Vec::new();
        for l in &self.languages {
            for r in &l.rules {
                let k = (r.stage.clone(), r.rule.clone());
                if r.dropped_docs > 0 && !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        let langs: Vec<&LangReport> = self.languages.iter().collect();
        let palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"];
        let max = langs.iter().flat_map(|l| l.rules.iter().map(|r| r.dropped_docs)).max().unwrap_or(1).max(1) as f64;
        let bar_h = 12.0;
        let group_h = bar_h * langs.len().max(1) as f64 + 10.0;
        let (left, width) = (330.0, 420.0);
        let height = 50.0 + group_h * keys.len() as f64 + 20.0;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="11">"#,
            w = left + width + 80.0
        );
        let _ = write!(
            s,
            r#"<text x="10" y="18" font-size="14" font-weight="bold">Documents dropped per rule, per language</text>"#
        );
        for (i, l) in langs.iter().enumerate() {
            let x = left + 110.0 * i as f64;
            let _ = write!(
                s,
                r#"<rect x="{x}" y="28" width="10" height="10" fill="{}"/><text x="{}" y="37">{}</text>"#,
                palette[i % palette.len()],
                x + 14.0,
                escape_xml(&l.lang)
            );
        }
        for (k, (stage, rule)) in keys.iter().enumerate() {
            let y0 = 50.0 + group_h * k as f64;
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{} / {}</text>"#,
                left - 6.0,
                y0 + group_h / 2.0,
                escape_xml(stage),
                escape_xml(rule)
            );
            for (i, l) in langs.iter().enumerate() {
                let n =
                    l.rules.iter().find(|r| &r.stage == stage && &r.rule == rule).map(|r| r.dropped_docs).unwrap_or(0);
                let w = width * n as f64 / max;
                let y = y0 + bar_h * i as f64;
                let _ = write!(
                    s,
                    r#"<rect x="{left}" y="{y}" width="{w:.1}" height="{}" fill="{}"><title>{}: {n}</title></rect>"#,
                    bar_h - 2.0,
                    palette[i % palette.len()],
                    escape_xml(&l.lang)
                );
                if n > 0 {
                    let _ = write!(s, r#"<text x="{:.1}" y="{}">{n}</text>"#, left + w + 4.0, y + bar_h - 3.0);
                }
            }
        }
        s.push_str("</svg>\n");
        s
    }

    /// Self-contained HTML page: summary table, chart, per-language tables, samples.
    pub fn to_html(&self) -> String {
        let mut s = String::new();
        let title = escape_xml(self.name.as_deref().unwrap_or(&self.output));
        let _ = write!(
            s,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>lehr report: {title}</title><style>\
             body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}\
             td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}td.n{{text-align:right}}\
             .s{{color:#555;font-size:12px}}</style></head><body><h1>Corpus report: {title}</h1>\
             <p>Output <code>{}</code>: {} documents read, {} kept ({:.1}%); {} read, {} kept.</p>",
            escape_xml(&self.output),
            self.docs_read,
            self.docs_kept,
            pct(self.docs_kept, self.docs_read),
            mb(self.bytes_read),
            mb(self.bytes_kept)
        );
        s.push_str("<table><tr><th>language</th><th>docs</th><th>kept</th><th>kept %</th><th>bytes</th><th>kept bytes</th></tr>");
        for l in &self.languages {
            let _ = write!(
                s,
                "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.1}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                escape_xml(&l.lang),
                l.docs,
                l.kept_docs,
                pct(l.kept_docs, l.docs),
                mb(l.bytes),
                mb(l.kept_bytes)
            );
        }
        s.push_str("</table>");
        s.push_str(&self.chart_svg());
        for l in &self.languages {
            let _ = write!(s, "<h2>{}</h2><table><tr><th>stage</th><th>rule</th><th>dropped</th><th>bytes</th><th>fired on</th><th>sample</th></tr>", escape_xml(&l.lang));
            for r in &l.rules {
                let sample = r
                    .samples
                    .first()
                    .map(|x| format!("<b>{}</b>: {}", escape_xml(&x.id), escape_xml(&one_line(&x.preview, 160))))
                    .unwrap_or_default();
                let _ = write!(
                    s,
                    "<tr><td>{}</td><td><code>{}</code></td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=s>{sample}</td></tr>",
                    escape_xml(&r.stage),
                    escape_xml(&r.rule),
                    r.dropped_docs,
                    mb(r.dropped_bytes),
                    r.fired_docs
                );
            }
            s.push_str("</table>");
            if !l.scores.is_empty() {
                s.push_str("<table><tr><th>score</th><th>n</th><th>mean</th>");
                for q in QUANTILES {
                    let _ = write!(s, "<th>p{}</th>", (q * 100.0).round());
                }
                s.push_str("</tr>");
                for sc in &l.scores {
                    let _ = write!(
                        s,
                        "<tr><td>{}</td><td class=n>{}</td><td class=n>{:.3}</td>",
                        escape_xml(&sc.column),
                        sc.count,
                        sc.mean
                    );
                    for (_, v) in &sc.quantiles {
                        let _ = write!(s, "<td class=n>{v:.3}</td>");
                    }
                    s.push_str("</tr>");
                }
                s.push_str("</table>");
            }
        }
        s.push_str("</body></html>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 0.01), 1.0);
        assert_eq!(quantile(&[3.0], 0.9), 3.0);
    }

    #[test]
    fn renders_escape_markup() {
        let r = Report {
            name: Some("a<b".into()),
            output: "o".into(),
            languages: vec![LangReport {
                lang: "en".into(),
                docs: 2,
                kept_docs: 1,
                rules: vec![RuleReport {
                    stage: "c4".into(),
                    rule: "curly_bracket".into(),
                    dropped_docs: 1,
                    dropped_bytes: 10,
                    fired_docs: 1,
                    samples: vec![Sample { id: "x".into(), preview: "<script>{".into() }],
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let html = r.to_html();
        assert!(html.contains("a&lt;b") && html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(r.chart_svg().contains("c4 / curly_bracket"));
        assert!(r.to_markdown().contains("| c4 | `curly_bracket` | 1 |"));
    }
}
