//! `lehr schedule init | validate | import-yulan` and `lehr mix inspect`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lehr_pipeline::mix::{available, realized_tokens, Available, StageReader};
use lehr_pipeline::store;
use lehr_pipeline::text::escape_xml;
use lehr_schedules::spec::LrPhase;
use lehr_schedules::{Plan, RunSpec, StagePlan};
use serde::Serialize;

use super::{CmdResult, Failure, EXIT_OK};
use crate::chart::StackedBars;
use crate::cli::{
    ImportYulanArgs, MixCommand, MixInspectArgs, ScheduleCommand, ScheduleInitArgs, ScheduleValidateArgs,
};

pub async fn run(cmd: ScheduleCommand) -> CmdResult {
    match cmd {
        ScheduleCommand::Init(a) => init(a),
        ScheduleCommand::Validate(a) => validate(a).await,
        ScheduleCommand::ImportYulan(a) => import_yulan(a),
    }
}

pub async fn mix(cmd: MixCommand) -> CmdResult {
    match cmd {
        MixCommand::Inspect(a) => inspect(a).await,
    }
}

fn init(args: ScheduleInitArgs) -> CmdResult {
    use lehr_schedules::presets::{preset, PRESETS};
    if args.list_presets {
        for (name, what) in PRESETS {
            println!("{name:<16} {what}");
        }
        return Ok(EXIT_OK);
    }
    let text = preset(&args.preset).and_then(|t| lehr_schedules::presets::scaled(&t, args.scale));
    print!("{}", text.map_err(|e| Failure::usage(anyhow::anyhow!(e)))?);
    Ok(EXIT_OK)
}

fn load_spec(path: &Path) -> Result<RunSpec, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(Failure::usage)?;
    RunSpec::from_toml(&text).map_err(|e| Failure::usage(anyhow::anyhow!("{}: {e}", path.display())))
}

fn data_root(data: &str) -> Result<store::Location, Failure> {
    let cwd = std::env::current_dir().context("no current directory")?;
    store::resolve(&store::absolutize(data, &cwd)).map_err(|e| Failure::usage(anyhow::anyhow!(e)))
}

/// The plan, checked against the data when given.
async fn plan_with_data(
    spec: &RunSpec,
    data: Option<&str>,
) -> Result<(Plan, Option<(store::Location, Available)>), Failure> {
    let avail = match data {
        Some(d) => {
            let root = data_root(d)?;
            let a = available(&root, spec).await.map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
            Some((root, a))
        }
        None => None,
    };
    let plan = Plan::new(spec, avail.as_ref().map(|a| &a.1.tokens)).map_err(|e| {
        // Name the directories that hold nothing: usually a wrong --data or `path`.
        let empty: Vec<String> = avail
            .as_ref()
            .map(|(_, a)| {
                a.shards.iter().filter(|(_, n)| **n == 0).map(|(s, _)| format!("{s:?} ({})", a.locations[s])).collect()
            })
            .unwrap_or_default();
        if empty.is_empty() {
            Failure::usage(anyhow::anyhow!(e))
        } else {
            Failure::usage(anyhow::anyhow!("{e}\nno token shards found for: {}", empty.join(", ")))
        }
    })?;
    Ok((plan, avail))
}

fn lr_text(st: &StagePlan) -> String {
    let lr = &st.lr;
    match lr.phase {
        LrPhase::Warmup => format!("warmup {:.2}->{:.2}", lr.from_factor(), lr.to_factor()),
        LrPhase::Stable => match lr.warmup_steps {
            Some(w) => format!("stable x{:.2} (warmup {w} steps)", lr.from_factor()),
            None => format!("stable x{:.2}", lr.from_factor()),
        },
        LrPhase::Decay => format!(
            "decay {} {:.2}->{:.2}",
            serde_json::to_value(lr.decay_shape())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            lr.from_factor(),
            lr.to_factor()
        ),
    }
}

async fn validate(args: ScheduleValidateArgs) -> CmdResult {
    let spec = load_spec(&args.spec)?;
    let (plan, _) = plan_with_data(&spec, args.data.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan).context("json")?);
        return Ok(EXIT_OK);
    }
    println!(
        "{}: valid; {} stages, {} steps, {:.3}B tokens, peak lr {}",
        args.spec.display(),
        plan.stages.len(),
        plan.total_steps(),
        plan.stages.iter().map(|s| s.tokens).sum::<u64>() as f64 / 1e9,
        plan.peak_lr
    );
    if let Some(i) = &spec.init {
        println!("  starts from {} (blocks {})", i.from, i.layers.as_deref().unwrap_or("all"));
    }
    if let Some(d) = &spec.distill {
        let stages = if d.stages.is_empty() { "all stages".to_string() } else { d.stages.join(", ") };
        println!(
            "  distills from {} (alpha {}, T {}, {:?}{}) in {stages}",
            d.teacher,
            d.alpha,
            d.temperature,
            d.kind,
            d.top_k.map(|k| format!(", top-{k}")).unwrap_or_default()
        );
    }
    for st in &plan.stages {
        let s = &spec.stages[st.index];
        let depth = match (s.layers, s.grow) {
            (Some(l), Some(g)) => format!("  {l} blocks ({})", g.name()),
            (Some(l), None) => format!("  {l} blocks"),
            _ => String::new(),
        };
        println!(
            "  {:>2}. {:<24} {:>16} tokens  steps {:>9}..{:<9} {:<28} lr {:.3e} -> {:.3e}{depth}",
            st.index + 1,
            st.name,
            group_digits(st.tokens),
            st.first_step,
            st.first_step + st.steps,
            lr_text(st),
            plan.lr_at(st.first_step),
            plan.lr_at(st.first_step + st.steps.saturating_sub(1)),
        );
    }
    for w in &plan.warnings {
        println!("warning: {w}");
    }
    Ok(EXIT_OK)
}

fn import_yulan(args: ImportYulanArgs) -> CmdResult {
    use lehr_schedules::yulan::{read_dir, render, to_spec};
    let recipes = read_dir(&args.dir, &args.exclude).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let (spec, notes) = to_spec(&recipes, &args.name);
    spec.validate().map_err(|e| anyhow::anyhow!("the imported spec is invalid (a bug): {e}"))?;
    let text = render(&spec, &notes);
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&args.output, &text).with_context(|| format!("cannot write {}", args.output.display()))?;
    let stages: Vec<serde_json::Value> = recipes
        .iter()
        .zip(&spec.stages)
        .map(|(r, s)| {
            serde_json::json!({
                "stage": s.name,
                "file": r.file.display().to_string(),
                "sources": s.budgets.len(),
                "tokens": s.budgets.values().map(|b| b.0).sum::<u64>(),
                "recipe_total_tokens": r.total_tokens(),
                "phase": if s.lr.phase == LrPhase::Decay { "decay" } else { "stable" },
            })
        })
        .collect();
    if args.json {
        let v = serde_json::json!({"output": args.output.display().to_string(), "sources": spec.sources.len(), "stages": stages, "notes": notes});
        println!("{}", serde_json::to_string_pretty(&v).context("json")?);
    } else {
        println!("wrote {} ({} stages, {} sources)", args.output.display(), spec.stages.len(), spec.sources.len());
        for s in &stages {
            println!(
                "  {:<22} {:>3} sources {:>18} tokens  {}",
                s["stage"].as_str().unwrap_or(""),
                s["sources"],
                group_digits(s["tokens"].as_u64().unwrap_or(0)),
                s["phase"].as_str().unwrap_or("")
            );
        }
        for n in notes.iter().filter(|n| n.contains("Total Tokens")) {
            println!("note: {n}");
        }
    }
    Ok(EXIT_OK)
}

pub fn group_digits(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Serialize, Clone)]
struct Row {
    group: String,
    sources: usize,
    planned_tokens: u64,
    /// Sequences × sequence length.
    tokens: u64,
    share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<u64>,
    /// Passes over the data at the end of the stage (the most of the group's sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs_after: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    realized_tokens: Option<u64>,
}

#[derive(Serialize)]
struct StageView {
    index: usize,
    name: String,
    lr: String,
    first_step: u64,
    steps: u64,
    sequence_length: u32,
    sequences: u64,
    planned_tokens: u64,
    tokens: u64,
    rows: Vec<Row>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct InspectReport {
    spec: String,
    by: String,
    stages: Vec<StageView>,
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokenizer_sha256: Option<String>,
    files: Vec<String>,
}

async fn inspect(args: MixInspectArgs) -> CmdResult {
    let by_category = match args.by.as_str() {
        "source" => false,
        "category" => true,
        other => return Err(Failure::usage(anyhow::anyhow!("--by {other}: use `source` or `category`"))),
    };
    let spec = load_spec(&args.spec)?;
    let (plan, data) = plan_with_data(&spec, args.data.as_deref()).await?;
    // Realized tokens per stage and source, from a mixer run over the real shards.
    let mut realized: Vec<Option<BTreeMap<String, u64>>> = vec![None; plan.stages.len()];
    if args.measure {
        let (root, _) = data.as_ref().expect("clap: --measure requires --data");
        let bar = crate::progress::Progress::new(args.json, plan.stages.iter().map(|s| s.sequences).sum(), "sequences");
        for (i, st) in plan.stages.iter().enumerate() {
            let mut reader =
                StageReader::open(root, &spec, st).await.map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
            let counts = tokio::task::block_in_place(|| realized_tokens(&mut reader));
            bar.inc(st.sequences);
            realized[i] = Some(counts);
        }
        bar.finish();
    }
    let mut stages = Vec::new();
    for (st, real) in plan.stages.iter().zip(&realized) {
        let mut groups: BTreeMap<String, Row> = BTreeMap::new();
        let mut warnings = Vec::new();
        for sp in &st.sources {
            let key =
                if by_category { sp.category.clone().unwrap_or_else(|| "(none)".into()) } else { sp.name.clone() };
            let row = groups.entry(key.clone()).or_insert(Row {
                group: key,
                sources: 0,
                planned_tokens: 0,
                tokens: 0,
                share: 0.0,
                available: sp.available.map(|_| 0),
                epochs_after: None,
                realized_tokens: real.as_ref().map(|_| 0),
            });
            row.sources += 1;
            row.planned_tokens += sp.planned_tokens;
            row.tokens += sp.tokens;
            if let (Some(a), Some(b)) = (&mut row.available, sp.available) {
                *a += b;
            }
            row.epochs_after = match (row.epochs_after, sp.epochs_after) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let (Some(r), Some(counts)) = (&mut row.realized_tokens, real) {
                let got = counts.get(&sp.name).copied().unwrap_or(0);
                *r += got;
                if got.abs_diff(sp.planned_tokens) > st.sequence_length as u64 {
                    warnings.push(format!(
                        "{}: read {got} tokens, planned {}: more than one sequence apart",
                        sp.name, sp.planned_tokens
                    ));
                }
            }
            if let Some(e) = sp.epochs_after.filter(|e| *e > 1.0) {
                warnings.push(format!("{} repeats data: {e:.2} passes by the end of this stage", sp.name));
            }
        }
        let mut rows: Vec<Row> = groups.into_values().collect();
        for r in &mut rows {
            r.share = if st.tokens == 0 { 0.0 } else { r.tokens as f64 / st.tokens as f64 };
        }
        rows.sort_by(|a, b| b.tokens.cmp(&a.tokens).then_with(|| a.group.cmp(&b.group)));
        stages.push(StageView {
            index: st.index,
            name: st.name.clone(),
            lr: lr_text(st),
            first_step: st.first_step,
            steps: st.steps,
            sequence_length: st.sequence_length,
            sequences: st.sequences,
            planned_tokens: st.planned_tokens,
            tokens: st.tokens,
            rows,
            warnings,
        });
    }
    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let stem = args.spec.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "spec".into());
            args.spec.parent().map(Path::to_path_buf).unwrap_or_default().join(format!("{stem}-mix"))
        }
    };
    let files = write_charts(&out_dir, &args.spec, &stages, &plan.warnings, by_category)?;
    let report = InspectReport {
        spec: args.spec.display().to_string(),
        by: args.by.clone(),
        stages,
        warnings: plan.warnings.clone(),
        tokenizer_sha256: data.as_ref().and_then(|d| d.1.tokenizer_sha256.clone()),
        files,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("json")?);
    } else {
        print_report(&report);
    }
    Ok(EXIT_OK)
}

fn print_report(r: &InspectReport) {
    for st in &r.stages {
        println!(
            "stage {}/{} {:?}: {}, steps {}..{} ({}), {} tokens planned in {} sequences of {}",
            st.index + 1,
            r.stages.len(),
            st.name,
            st.lr,
            st.first_step,
            st.first_step + st.steps,
            st.steps,
            group_digits(st.planned_tokens),
            group_digits(st.sequences),
            st.sequence_length
        );
        let w = st.rows.iter().map(|x| x.group.len()).max().unwrap_or(6).clamp(6, 60);
        println!(
            "  {:<w$} {:>16} {:>8} {:>16} {:>7} {:>16} {:>8}",
            r.by, "planned", "share", "available", "epochs", "realized", "delta"
        );
        for row in &st.rows {
            let opt = |v: Option<u64>| v.map(group_digits).unwrap_or_else(|| "-".into());
            let delta = row
                .realized_tokens
                .map(|x| format!("{:+}", x as i64 - row.planned_tokens as i64))
                .unwrap_or_else(|| "-".into());
            println!(
                "  {:<w$} {:>16} {:>7.2}% {:>16} {:>7} {:>16} {:>8}",
                row.group,
                group_digits(row.planned_tokens),
                row.share * 100.0,
                opt(row.available),
                row.epochs_after.map(|e| format!("{e:.3}")).unwrap_or_else(|| "-".into()),
                opt(row.realized_tokens),
                delta
            );
        }
        for w in &st.warnings {
            println!("  warning: {w}");
        }
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    for f in &r.files {
        println!("wrote {f}");
    }
}

/// Series for the chart: every group, or the 11 largest and "other" when there are more than 12.
fn series(stages: &[StageView]) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for st in stages {
        for r in &st.rows {
            *totals.entry(&r.group).or_default() += r.tokens;
        }
    }
    let mut names: Vec<&str> = totals.keys().copied().collect();
    names.sort_by(|a, b| totals[b].cmp(&totals[a]).then(a.cmp(b)));
    let (keep, rest) = if names.len() > 12 { names.split_at(11) } else { (&names[..], &[][..]) };
    let mut out: Vec<(String, Vec<f64>)> = keep
        .iter()
        .map(|g| {
            let v = stages.iter().map(|st| st.rows.iter().find(|r| r.group == *g).map_or(0.0, |r| r.share)).collect();
            (g.to_string(), v)
        })
        .collect();
    if !rest.is_empty() {
        let v = stages
            .iter()
            .map(|st| st.rows.iter().filter(|r| rest.contains(&r.group.as_str())).map(|r| r.share).sum())
            .collect();
        out.push((format!("other ({} groups)", rest.len()), v));
    }
    (stages.iter().map(|s| s.name.clone()).collect(), out)
}

fn write_charts(
    dir: &Path,
    spec: &Path,
    stages: &[StageView],
    warnings: &[String],
    by_category: bool,
) -> Result<Vec<String>, Failure> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (columns, series) = series(stages);
    let title = format!("share of tokens per stage, by {}", if by_category { "category" } else { "source" });
    let scene = StackedBars { title: &title, columns: &columns, series: &series }.scene();
    let svg = scene.to_svg();
    let png = scene.to_png().map_err(|e| anyhow::anyhow!("png: {e}"))?;
    let paths: Vec<PathBuf> = ["mix.svg", "mix.png", "mix.html"].iter().map(|f| dir.join(f)).collect();
    std::fs::write(&paths[0], &svg).with_context(|| format!("cannot write {}", paths[0].display()))?;
    std::fs::write(&paths[1], &png).with_context(|| format!("cannot write {}", paths[1].display()))?;
    // HTML: warnings, the chart, the share of each group per stage, then every stage's table.
    let mut h = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>lehr mix: {s}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style>\
         <h1>Data mix of {s}</h1>",
        s = escape_xml(&spec.display().to_string())
    );
    if !warnings.is_empty() {
        h.push_str("<h2>Warnings</h2><ul>");
        for w in warnings {
            h.push_str(&format!("<li>{}</li>", escape_xml(w)));
        }
        h.push_str("</ul>");
    }
    h.push_str(&svg);
    h.push_str("<h2>Share of tokens per stage (%)</h2><table><tr><th>group</th>");
    for (i, c) in columns.iter().enumerate() {
        h.push_str(&format!("<th title=\"{}\">{}</th>", escape_xml(c), i + 1));
    }
    h.push_str("</tr>");
    for (name, values) in &series {
        h.push_str(&format!("<tr><td>{}</td>", escape_xml(name)));
        for v in values {
            h.push_str(&format!("<td>{:.2}</td>", v * 100.0));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    for st in stages {
        h.push_str(&format!(
            "<h3>{}. {} — {}, steps {}–{}, {} tokens planned</h3><table><tr><th>group</th><th>planned</th><th>share %</th><th>available</th><th>epochs after</th><th>realized</th></tr>",
            st.index + 1,
            escape_xml(&st.name),
            escape_xml(&st.lr),
            st.first_step,
            st.first_step + st.steps,
            group_digits(st.planned_tokens)
        ));
        for r in &st.rows {
            let opt = |v: Option<u64>| v.map(group_digits).unwrap_or_else(|| "–".into());
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape_xml(&r.group),
                group_digits(r.planned_tokens),
                r.share * 100.0,
                opt(r.available),
                r.epochs_after.map(|e| format!("{e:.3}")).unwrap_or_else(|| "–".into()),
                opt(r.realized_tokens)
            ));
        }
        h.push_str("</table>");
        for w in &st.warnings {
            h.push_str(&format!("<p>warning: {}</p>", escape_xml(w)));
        }
    }
    std::fs::write(&paths[2], h).with_context(|| format!("cannot write {}", paths[2].display()))?;
    Ok(paths.iter().map(|p| p.display().to_string()).collect())
}
