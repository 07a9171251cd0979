//! `lehr dedup curve`: the MinHash-LSH S-curve, to choose bands × rows before a dedup run.

use anyhow::Context;
use lehr_pipeline::dedup::{catch_probability, lsh_threshold};

use super::{CmdResult, Failure, EXIT_OK};
use crate::cli::{DedupCommand, DedupCurveArgs};

pub fn run(cmd: DedupCommand) -> CmdResult {
    match cmd {
        DedupCommand::Curve(a) => curve(a),
    }
}

fn parse_setting(s: &str) -> Result<(u32, u32), String> {
    let (b, r) = s.split_once(['x', 'X', '×']).ok_or_else(|| format!("`{s}`: write bands x rows, e.g. 14x8"))?;
    let b: u32 = b.trim().parse().map_err(|_| format!("`{s}`: bands is not a number"))?;
    let r: u32 = r.trim().parse().map_err(|_| format!("`{s}`: rows is not a number"))?;
    check(b, r).map(|_| (b, r))
}

fn check(b: u32, r: u32) -> Result<(), String> {
    if !(1..=64).contains(&b) || !(1..=64).contains(&r) {
        return Err(format!("{b}x{r}: bands and rows must be within 1..=64"));
    }
    Ok(())
}

/// The similarity at which the catch probability reaches `p` (bisection on the monotone curve).
fn similarity_at(p: f64, b: u32, r: u32) -> f64 {
    let (mut lo, mut hi) = (0.0, 1.0);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if catch_probability(mid, b, r) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

fn curve(args: DedupCurveArgs) -> CmdResult {
    check(args.bands, args.rows).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let mut settings = vec![(args.bands, args.rows)];
    for c in &args.compare {
        settings.push(parse_setting(c).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?);
    }
    let grid: Vec<f64> = (0..=20).map(|i| i as f64 / 20.0).collect();
    if args.json {
        let out: Vec<serde_json::Value> = settings
            .iter()
            .map(|&(b, r)| {
                serde_json::json!({
                    "bands": b,
                    "rows": r,
                    "hashes": b * r,
                    "threshold": lsh_threshold(b, r),
                    "similarity_at_p10": similarity_at(0.1, b, r),
                    "similarity_at_p90": similarity_at(0.9, b, r),
                    "curve": grid.iter().map(|&j| serde_json::json!([j, catch_probability(j, b, r)])).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    } else {
        println!("P(pair caught) = 1 - (1 - J^rows)^bands");
        print!("{:>6}", "J");
        for (b, r) in &settings {
            print!("  {:>9}", format!("{b}x{r}"));
        }
        println!();
        for &j in &grid {
            print!("{j:>6.2}");
            for &(b, r) in &settings {
                print!("  {:>9.4}", catch_probability(j, b, r));
            }
            println!();
        }
        for &(b, r) in &settings {
            println!(
                "{b}x{r} ({} hashes): threshold ≈ {:.3} (P = 0.5 at J = {:.3}); P = 0.1 at J = {:.3}, P = 0.9 at J = {:.3}",
                b * r,
                lsh_threshold(b, r),
                similarity_at(0.5, b, r),
                similarity_at(0.1, b, r),
                similarity_at(0.9, b, r)
            );
        }
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&settings)).with_context(|| format!("cannot write {}", path.display()))?;
        if !args.json {
            println!("chart: {}", path.display());
        }
    }
    Ok(EXIT_OK)
}

const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/// A plain SVG line chart of the curves (no chart library: a few lines of markup).
pub fn svg(settings: &[(u32, u32)]) -> String {
    let (w, h, left, top, pw, ph) = (640.0, 420.0, 60.0, 20.0, 540.0, 340.0);
    let x = |j: f64| left + j * pw;
    let y = |p: f64| top + (1.0 - p) * ph;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for i in 0..=10 {
        let v = i as f64 / 10.0;
        s += &format!(
            "<line x1=\"{:.1}\" y1=\"{top}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\n",
            x(v), x(v), top + ph, y(v), left + pw, y(v)
        );
        s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v:.1}</text>\n", x(v), top + ph + 16.0);
        s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>\n", left - 6.0, y(v) + 4.0);
    }
    s += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">true Jaccard similarity</text>\n",
        left + pw / 2.0,
        h - 8.0
    );
    s += &format!(
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">P(caught)</text>\n",
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (i, &(b, r)) in settings.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = (0..=200)
            .map(|k| {
                let j = k as f64 / 200.0;
                format!("{:.1},{:.1}", x(j), y(catch_probability(j, b, r)))
            })
            .collect();
        s += &format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n", pts.join(" "));
        let t = lsh_threshold(b, r);
        s += &format!(
            "<line x1=\"{:.1}\" y1=\"{top}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"4 3\"/>\n",
            x(t),
            x(t),
            top + ph
        );
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{b}×{r} (threshold {t:.2})</text>\n",
            left + 10.0,
            top + 16.0 + 16.0 * i as f64
        );
    }
    s + "</svg>\n"
}
