use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "lehr", version, about = "Bilingual corpora to trained small language models, stage by stage")]
pub struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `lehr_coordinator=debug`.
    #[arg(long, global = true, env = "LEHR_LOG")]
    pub log: Option<String>,
    /// Log as JSON lines (for log collectors).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a local cluster: a coordinator and N worker processes, until interrupted.
    Up(UpArgs),
    /// Run the coordinator (gRPC service, durable state, status page).
    Coordinator(CoordinatorArgs),
    /// Run a worker against a coordinator: data tasks, or training ranks with --train.
    Worker(WorkerArgs),
    /// Corpus jobs: write a starter spec, build a corpus.
    #[command(subcommand)]
    Corpus(CorpusCommand),
    /// Deduplication tools: the LSH S-curve for choosing bands × rows.
    #[command(subcommand)]
    Dedup(DedupCommand),
    /// Tokenizers: train a byte-level BPE on a bilingual sample, with a compression report.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Run specs: stages, per-source token budgets, learning-rate phases.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// The stage mixer: what each stage's data mix is, planned and realized.
    #[command(subcommand)]
    Mix(MixCommand),
    /// Show jobs, or one job with its stages, shards, attempts; and workers.
    Status(StatusArgs),
    /// Cancel a job.
    Cancel(CancelArgs),
    /// Measure the coordinator and the pipeline (figures for docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Training (needs a build with `--features train`).
    #[command(subcommand)]
    Train(TrainCommand),
    /// Evaluate checkpoints (needs a build with `--features train`).
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Look inside model files.
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Write a checkpoint in another format.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Read a model from another format into a checkpoint directory.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Build a deeper or shallower model from a checkpoint's blocks (depth up-scaling).
    #[command(subcommand)]
    Grow(GrowCommand),
    /// Serve a checkpoint with the OpenAI HTTP API (/v1/completions, /v1/chat/completions,
    /// /v1/models, /health; streaming; batches concurrent requests).
    Serve(ModelServeArgs),
}

#[derive(Subcommand, Debug)]
pub enum GrowCommand {
    /// SOLAR's depth up-scaling: two copies of the stack, the first without its last M blocks,
    /// the second without its first M (2·(n − M) blocks).
    Dus(GrowDusArgs),
    /// Any block map: `--map "0-15,8-23"` stacks blocks 0..=15 then 8..=23 (Kiwi's selected
    /// layers; `--map 0-9` keeps the first ten, Inheritune's start).
    Layers(GrowLayersArgs),
}

#[derive(Args, Debug)]
pub struct GrowDusArgs {
    /// Checkpoint directory (config.json + model.safetensors: lehr's or a Hugging Face one).
    pub checkpoint: PathBuf,
    /// Blocks dropped at the seam from each copy.
    #[arg(long)]
    pub drop: usize,
    #[command(flatten)]
    pub common: GrowOutArgs,
}

#[derive(Args, Debug)]
pub struct GrowLayersArgs {
    pub checkpoint: PathBuf,
    /// Block k of the result is the k-th block listed: ranges a-b (inclusive) and single blocks.
    #[arg(long)]
    pub map: String,
    /// Repeated blocks start as identities: their output projections (o_proj, down_proj) are
    /// zero, so the grown model computes what the source does until training moves them.
    #[arg(long)]
    pub identity: bool,
    #[command(flatten)]
    pub common: GrowOutArgs,
}

#[derive(Args, Debug)]
pub struct GrowOutArgs {
    /// The new checkpoint directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Token shards held out: the loss before and right after the operation (where recovery
    /// training starts).
    #[arg(long)]
    pub eval_data: Option<String>,
    #[arg(long, default_value_t = 16_384)]
    pub eval_tokens: u64,
    #[arg(long, default_value_t = 512)]
    pub eval_seq_len: i64,
    /// cpu | cuda for the held-out loss.
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// A GGUF file (qwen2, qwen3, llama) as a Hugging Face checkpoint directory (F32 safetensors, config.json,
    /// tokenizer.json rebuilt from the GGUF's tokenizer).
    Gguf(ImportGgufArgs),
}

#[derive(Args, Debug)]
pub struct ImportGgufArgs {
    pub file: PathBuf,
    /// The checkpoint directory to write.
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// A checkpoint (lehr's, or a Hugging Face Qwen2/Qwen3/Llama directory) as GGUF files for llama.cpp.
    Gguf(ExportGgufArgs),
}

#[derive(Args, Debug)]
pub struct ExportGgufArgs {
    /// Checkpoint directory (config.json, model.safetensors, tokenizer.json): lehr's, or a
    /// Hugging Face Qwen2/Qwen3/Llama one.
    pub checkpoint: PathBuf,
    /// The GGUF file to write; with several types (`all`, or a comma list), a directory that
    /// receives NAME-TYPE.gguf for each.
    #[arg(short, long)]
    pub output: PathBuf,
    /// File type: f32, f16, bf16, q8_0, q6_k, q5_k_m, q5_1, q5_0, q4_k_m, q4_1, q4_0; `all` for
    /// the ladder f16, q8_0, q6_k, q5_k_m, q5_0, q4_k_m, q4_0; or a comma list. Norms and biases
    /// stay f32; see docs/export.md for each type's mix.
    #[arg(long = "type", default_value = "f16")]
    pub ty: String,
    /// A tokenizer.json to use instead of the checkpoint's.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Token shards held out for a perplexity per file (and for the checkpoint itself), printed
    /// as a table with each file's ratio to F16.
    #[arg(long)]
    pub eval_data: Option<String>,
    /// Predicted tokens per perplexity.
    #[arg(long, default_value_t = 16_384)]
    pub eval_tokens: u64,
    #[arg(long, default_value_t = 512)]
    pub eval_seq_len: i64,
    /// cpu | cuda for the perplexities (default: cuda when available).
    #[arg(long)]
    pub device: Option<String>,
    /// The files' base name with several types (default: the checkpoint directory's name).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum InspectCommand {
    /// A GGUF file's metadata and tensor table (types, shapes, sizes, bits per weight).
    Gguf(InspectGgufArgs),
}

#[derive(Args, Debug)]
pub struct InspectGgufArgs {
    pub file: PathBuf,
    /// Every metadata value in full (long arrays such as the vocabulary are summarized otherwise).
    #[arg(long)]
    pub full: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Perplexity and top-1 / top-5 next-token accuracy of a checkpoint (lehr's or a Hugging
    /// Face Qwen2 / Llama one: config.json + model.safetensors) on token shards.
    Ppl(EvalPplArgs),
    /// Benchmark tasks scored as lm-evaluation-harness scores them (multiple choice, multiple
    /// input, greedy match; few-shot drawn as lm-eval draws them), results in lm-eval's JSON
    /// layout. Built-in tasks: arc_easy, arc_challenge, hellaswag, piqa, boolq (fixture schema),
    /// openbookqa, sciq, winogrande, lambada_openai, kobest_boolq, ceval, cmmlu (their
    /// datasets' schemas); or task files (NAME.toml).
    Tasks(Box<EvalTasksArgs>),
    /// Draw a run's training loss, held-out loss and `[eval]` benchmark scores over steps, with
    /// stage boundaries marked (curve.svg, curve.png), and print the scores at each stage end.
    Curve(EvalCurveArgs),
    /// Compare runs at equal tokens: every run's held-out loss per source over tokens seen in
    /// one chart (compare.svg, compare.png), the first run's stage boundaries marked, and a
    /// table of each run's held-out loss at every stage end.
    Compare(EvalCompareArgs),
    /// Score one item shard of an `eval` job (what a train worker runs; prints its result).
    #[command(hide = true)]
    Shard(EvalShardArgs),
}

#[derive(Args, Debug)]
pub struct EvalShardArgs {
    /// The shard's task (JSON: `lehr_evals::job::EvalShardTask`).
    #[arg(required_unless_present = "serve")]
    pub task: Option<PathBuf>,
    /// Read tasks from stdin, one JSON per line, and answer each with a line
    /// (`{"ok": result}` or `{"error", "retryable"}`), keeping the last model loaded.
    #[arg(long, conflicts_with = "task")]
    pub serve: bool,
}

#[derive(Args, Debug)]
pub struct EvalCurveArgs {
    /// The run's output directory (`lehr train run --out`): metrics.jsonl, eval.jsonl.
    pub run_dir: PathBuf,
    /// Where curve.svg and curve.png go (default: the run directory).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print the series and stage boundaries as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ModelServeArgs {
    /// Checkpoint directory (lehr's, a Hugging Face Qwen2/Qwen3/Llama one, or an imported GGUF)
    /// with its tokenizer.json.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
    /// cpu | cuda (default: CUDA when there is one).
    #[arg(long)]
    pub device: Option<String>,
    /// Rows (requests × n) generated together at most.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// The model's name in the API (default: the checkpoint directory's name).
    #[arg(long)]
    pub model_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct EvalCompareArgs {
    /// Run output directories (`lehr train run --out`), two or more.
    #[arg(required = true, num_args = 2..)]
    pub runs: Vec<PathBuf>,
    /// Names for the runs, comma-separated, in order (default: the directories' names).
    #[arg(long)]
    pub labels: Option<String>,
    /// Where compare.svg and compare.png go.
    #[arg(short, long, default_value = ".")]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EvalTasksArgs {
    /// Checkpoint directory (lehr's, a Hugging Face Qwen2/Qwen3/Llama one, or an imported GGUF).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Comma-separated built-in task names or task files (*.toml).
    #[arg(long)]
    pub tasks: String,
    /// Where the tasks' <task>.jsonl files are.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Score only the first N documents of each task (as lm-eval's --limit).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Few-shot examples before each question (default: the task's, 0 for the built-ins),
    /// drawn as lm-eval draws them.
    #[arg(long)]
    pub num_fewshot: Option<usize>,
    /// Seed of the few-shot sampler (lm-eval's --fewshot_random_seed).
    #[arg(long, default_value_t = 1234)]
    pub fewshot_seed: u64,
    /// Questions per forward (a question's choices share one row), or `auto`: as many as fit
    /// a token budget for the device.
    #[arg(long, default_value = "auto")]
    pub batch_size: String,
    /// Compute precision: bf16 or fp32 (default: bf16 on CUDA, fp32 on CPU).
    #[arg(long)]
    pub precision: Option<String>,
    /// cpu | cuda (default: cuda when available).
    #[arg(long)]
    pub device: Option<String>,
    /// Write lm-eval's results JSON here.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print results and every document's log-likelihoods and choices as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run as an `eval` job on this coordinator: item shards scored by its train workers
    /// (`lehr worker --train`), merged into -o (required). Paths must be ones the
    /// coordinator and the workers see.
    #[arg(long, env = "LEHR_COORDINATOR")]
    pub coordinator: Option<String>,
    /// With --coordinator: rows per shard (a worker keeps its model loaded between shards).
    #[arg(long, default_value_t = 250)]
    pub items_per_shard: usize,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct EvalPplArgs {
    /// Checkpoint directory (config.json + model.safetensors), or its object-store URL. Repeat
    /// it to compare checkpoints in one table.
    #[arg(long, required = true)]
    pub checkpoint: Vec<PathBuf>,
    /// A directory of token shards (its .tokens.json files name the tokenizer). Repeat it for a
    /// column per data set (e.g. one per language: tokens/lang=en, tokens/lang=zh).
    #[arg(long, required = true)]
    pub data: Vec<String>,
    #[arg(long, default_value_t = 512)]
    pub seq_len: i64,
    /// Evaluate at most this many predicted tokens.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_tokens: u64,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// cpu | cuda (default: cuda when available).
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct AuthArgs {
    /// File holding the shared token (also: LEHR_TOKEN). Never logged.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// PEM certificate (or bundle) of the CA that signed the coordinator's TLS certificate, for
    /// an `https://` coordinator URL (also: LEHR_TLS_CA). Without it, the system's roots.
    #[arg(long, global = true, env = "LEHR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// How long a call to the coordinator waits for its answer (a worker's lease call: plus the
    /// wait it asks for) before it counts as unreachable (exit 3; with URL1,URL2 the next URL is
    /// tried). A stopped or cut-off coordinator keeps connections open and answers nothing.
    #[arg(long, global = true, env = "LEHR_CALL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub call_timeout: std::time::Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The coordinator's durable state: a directory (SQLite), or a PostgreSQL URL
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`) that several coordinators may share: one leads,
    /// the others wait as standbys and take over when it goes. From LEHR_STATE when not given
    /// (keeps a password out of the process list; never printed).
    #[arg(long, env = "LEHR_STATE", hide_env_values = true, default_value = ".lehr/state", value_parser = parse_state)]
    pub state: lehr_coordinator::store::StateLocation,
    /// gRPC address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// HTTP status page address (`none` to disable).
    #[arg(long, default_value = "127.0.0.1:7071")]
    pub http: String,
    /// Lease time-to-live: a worker silent this long loses its tasks.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// Attempts per task before its job fails.
    #[arg(long, default_value_t = 4)]
    pub max_attempts: u32,
    /// Serve a non-loopback address without a token (anyone who reaches it may submit jobs,
    /// read specs and report tasks). Without this flag such a coordinator refuses to start.
    #[arg(long)]
    pub insecure: bool,
    /// PEM certificate chain: serve gRPC and the HTTP page over TLS (with --tls-key; clients
    /// then use https:// URLs).
    #[arg(long, env = "LEHR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "LEHR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn parse_state(s: &str) -> Result<lehr_coordinator::store::StateLocation, String> {
    if s.trim().is_empty() {
        return Err("empty: give a directory or a postgres:// URL".into());
    }
    Ok(lehr_coordinator::store::StateLocation::parse(s))
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Worker processes to start.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Task slots per worker.
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Coordinator URL; `URL1,URL2` for coordinators sharing a PostgreSQL state (calls follow
    /// the one that leads).
    #[arg(long, env = "LEHR_COORDINATOR", default_value = "http://127.0.0.1:7070")]
    pub coordinator: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Name shown in status (default host:pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Run training ranks (`lehr train run --coordinator`) instead of data tasks: each rank is a
    /// child `lehr train run` process, one per slot (one per GPU with --gpus).
    #[arg(long)]
    pub train: bool,
    /// GPUs for training ranks, comma-separated (`0,1,2,3`); sets the slots. Default: CPU ranks.
    #[arg(long, value_delimiter = ',')]
    pub gpus: Vec<String>,
    /// The address other hosts reach this one at (rank 0 listens there). Default: this host's
    /// address on the route to the coordinator.
    #[arg(long, env = "LEHR_ADVERTISE")]
    pub advertise: Option<String>,
    /// The lehr binary with training support that runs the ranks (default: this one).
    #[arg(long)]
    pub train_exe: Option<PathBuf>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Subcommand, Debug)]
pub enum CorpusCommand {
    /// Print a commented starter pipeline spec for these inputs.
    Init(CorpusInitArgs),
    /// Run a pipeline spec: on a coordinator, or embedded with local workers.
    Build(CorpusBuildArgs),
    /// What the filters did: per language and rule, docs/bytes dropped, score quantiles,
    /// sample dropped documents; writes report.html, report.md and dropped.svg.
    Report(CorpusReportArgs),
}

#[derive(Subcommand, Debug)]
pub enum DedupCommand {
    /// Probability that MinHash-LSH with B bands × R rows catches a pair, against its true
    /// Jaccard similarity; optionally as an SVG chart.
    Curve(DedupCurveArgs),
}

#[derive(Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer (Qwen2 pre-tokenizer) on documents balanced across
    /// languages; report bytes per token per language against a reference tokenizer.
    Train(TokenizerTrainArgs),
}

#[derive(Args, Debug)]
pub struct TokenizerTrainArgs {
    /// Input documents: JSONL (.gz/.zst) or parquet paths, directories or globs. A document's
    /// language is its `lang` field, else the built-in detector's guess.
    #[arg(long = "input", required = true, num_args = 1..)]
    pub inputs: Vec<String>,
    /// Where to write tokenizer.json.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 32_000)]
    pub vocab_size: usize,
    /// Special tokens, first ones first (ids 0, 1, ...). Default: <|endoftext|>.
    #[arg(long = "special-token")]
    pub special_tokens: Vec<String>,
    /// Share of the training bytes per language, e.g. `--ratio zh=0.5 --ratio en=0.3 --ratio ko=0.2`
    /// (must sum to 1). Default: equal shares of every language found.
    #[arg(long = "ratio")]
    pub ratios: Vec<String>,
    /// At most this much text trains the tokenizer (e.g. 200MB).
    #[arg(long, default_value = "256MiB")]
    pub sample_size: String,
    /// Held-out text per language for the compression report (at most a fifth of it).
    #[arg(long, default_value = "2MiB")]
    pub eval_size: String,
    /// A merge must occur this often.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// Compare compression with this tokenizer.json (e.g. Qwen2.5's).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Print a commented starter run spec (`--list-presets` for the presets).
    Init(ScheduleInitArgs),
    /// Check a run spec (and, with --data, that the data suffices); print its plan.
    Validate(ScheduleValidateArgs),
    /// Convert YuLan-Mini's per-phase recipe JSON files into a run spec.
    ImportYulan(ImportYulanArgs),
}

#[derive(Args, Debug)]
pub struct ScheduleInitArgs {
    /// yulan-mini-like | gumini-like | demo (docs/schedules.md says where each preset's numbers
    /// come from).
    #[arg(long, default_value = "yulan-mini-like")]
    pub preset: String,
    /// Multiply every stage's tokens by this (e.g. 0.01 for a trial at 1% of the recipe).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    #[arg(long)]
    pub list_presets: bool,
}

#[derive(Args, Debug)]
pub struct ScheduleValidateArgs {
    pub spec: PathBuf,
    /// Data root: each source's token shards are under DATA/<path or name>.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImportYulanArgs {
    /// Directory of recipe files (NN_DATE_TIME.json).
    pub dir: PathBuf,
    /// Where to write the spec.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Leave out recipe files whose name contains this (e.g. one of two phase-26 variants).
    #[arg(long)]
    pub exclude: Vec<String>,
    #[arg(long, default_value = "yulan-mini")]
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum MixCommand {
    /// Per stage and source (or category): planned tokens, share, available tokens, epochs,
    /// warnings; a stacked-bar chart (PNG, SVG) and an HTML page. With --data --measure, the
    /// tokens a mixer run really reads beside the planned ones.
    Inspect(MixInspectArgs),
}

#[derive(Args, Debug)]
pub struct MixInspectArgs {
    pub spec: PathBuf,
    /// Data root of the sources' token shards.
    #[arg(long)]
    pub data: Option<String>,
    /// Group sources: `source` (default) or `category` (the sources' `category` key).
    #[arg(long, default_value = "source")]
    pub by: String,
    /// Run the mixer over every stage's real token shards and report the tokens read per source.
    #[arg(long, requires = "data")]
    pub measure: bool,
    /// Where to write mix.png, mix.svg and mix.html (default: mix-report/ next to the spec).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DedupCurveArgs {
    /// Bands (LSH buckets per document).
    #[arg(long, default_value_t = 14)]
    pub bands: u32,
    /// Hashes per band.
    #[arg(long, default_value_t = 8)]
    pub rows: u32,
    /// More settings to compare, as BxR (e.g. `--compare 20x13 --compare 9x13`).
    #[arg(long)]
    pub compare: Vec<String>,
    /// Write the curves as an SVG chart here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CorpusReportArgs {
    /// A finished job's output directory (or URL), or a job id on `--coordinator`.
    pub job_or_dir: String,
    /// Ask this coordinator for the job's output directory.
    #[arg(long, env = "LEHR_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Where to write report.html, report.md and dropped.svg (default: OUTPUT/report/).
    #[arg(long)]
    pub out: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct CorpusInitArgs {
    /// Input paths, directories, globs or URLs.
    #[arg(long = "input", required_unless_present = "list_presets", num_args = 1..)]
    pub inputs: Vec<String>,
    /// Output directory or URL.
    #[arg(long, required_unless_present = "list_presets", default_value = "")]
    pub output: String,
    /// basic | fineweb | fineweb-zh | fineweb-ko | bilingual | dedup-exact | dedup-minhash |
    /// decontaminate | tokenize | synth-qa | synth-rewrite | synth-reasoning (docs/presets.md;
    /// `--list-presets`).
    #[arg(long, default_value = "basic")]
    pub preset: String,
    /// Evaluation items (JSONL) for the `decontaminate` preset; repeat for several files.
    #[arg(long = "eval-set")]
    pub eval_sets: Vec<String>,
    /// The tokenizer.json for the `tokenize` preset.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// End-of-document token for the `tokenize` preset (default `<|endoftext|>`).
    #[arg(long)]
    pub eos: Option<String>,
    /// Use this fastText language-id model (e.g. lid.176.ftz) instead of the built-in detector.
    #[arg(long)]
    pub lid_model: Option<String>,
    /// OpenAI-compatible base URL for the `synth-*` presets (repeat for several endpoints).
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// The model name the endpoints serve, for the `synth-*` presets (default `lehr`).
    #[arg(long)]
    pub model: Option<String>,
    /// List the presets and exit.
    #[arg(long)]
    pub list_presets: bool,
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct CorpusBuildArgs {
    /// The pipeline spec (TOML).
    pub spec: PathBuf,
    /// Submit to this coordinator instead of running an embedded one (`URL1,URL2`: whichever
    /// leads).
    #[arg(long, env = "LEHR_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Embedded mode: local workers (default: CPU count).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Embedded mode: keep the coordinator state here (default: a temporary directory).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Submit and print the job id without waiting.
    #[arg(long)]
    pub detach: bool,
    /// Print the final report as JSON (no progress bars).
    #[arg(long)]
    pub json: bool,
    /// Synth stages neither read nor write their request cache (every request is sent).
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A job id; without it, every job and worker.
    pub job: Option<String>,
    #[arg(long, env = "LEHR_COORDINATOR", default_value = "http://127.0.0.1:7070")]
    pub coordinator: String,
    /// Also list the job's shards and their attempts.
    #[arg(long)]
    pub tasks: bool,
    /// Wait until the job ends; the exit code tells how it ended.
    #[arg(long)]
    pub wait: bool,
    /// Jobs listed, newest first (0: all).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Forget jobs that ended at least this long ago (`7d`, `12h`) and owe no more work, with
    /// their tasks; their outputs stay. Prints what was pruned.
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["job", "wait", "tasks"])]
    pub prune_older_than: Option<std::time::Duration>,
    /// With --tasks: the page of tasks, skip this many.
    #[arg(long, default_value_t = 0)]
    pub task_offset: u32,
    /// With --tasks: tasks shown (0: all).
    #[arg(long, default_value_t = 0)]
    pub task_limit: u32,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    pub job: String,
    #[arg(long, env = "LEHR_COORDINATOR", default_value = "http://127.0.0.1:7070")]
    pub coordinator: String,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Lease throughput: tasks leased and committed per second with many simulated workers.
    Coordinator(BenchCoordinatorArgs),
    /// End-to-end read → normalize → write throughput per worker.
    Pipeline(BenchPipelineArgs),
    /// The synth stage's client against a zero-latency OpenAI stub: requests/s and requests per
    /// client core-second, without and with the request cache (scripts/bench_synth.sh adds the
    /// official `openai` Python client for the ratio).
    Synth(BenchSynthArgs),
    /// The training step on a model preset (random tokens): tokens/s, MFU, peak memory. Needs
    /// a build with `--features train`; scripts/bench_train.sh adds PyTorch eager for the ratio.
    Train(BenchTrainArgs),
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// Model preset (lehr train run --model).
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Vocabulary size (Qwen2.5's tokenizer: 151,936).
    #[arg(long, default_value_t = 151_936)]
    pub vocab: i64,
    #[arg(long, default_value_t = 1024)]
    pub seq_len: i64,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub micro_batch: i64,
    /// Timed steps (after --warmup untimed ones).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// cpu | cuda (default: cuda when available).
    #[arg(long)]
    pub device: Option<String>,
    /// bf16 | fp32 (default: bf16 on CUDA, fp32 on CPU).
    #[arg(long)]
    pub precision: Option<String>,
    /// The device's peak TFLOP/s for MFU (H100 SXM dense bf16: 989; H200: 989).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    #[command(flatten)]
    pub knobs: ModelKnobArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchCoordinatorArgs {
    #[arg(long, default_value_t = 20_000)]
    pub tasks: u32,
    /// Simulated workers, each a lease → report loop of its own.
    #[arg(long, default_value_t = 64)]
    pub workers: u32,
    /// gRPC connections the simulated workers share (real workers have one each).
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// Tasks a worker asks for per lease call.
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Reports ride on the next lease call (as `lehr worker` sends them) instead of one
    /// ReportTask call each.
    #[arg(long)]
    pub piggyback: bool,
    /// Also measure through gRPC on loopback.
    #[arg(long)]
    pub grpc: bool,
    /// The coordinator's state: a `postgres://` URL of an empty database (or schema) to
    /// measure PostgreSQL; default: SQLite in a temporary directory.
    #[arg(long, conflicts_with = "coordinator")]
    pub state: Option<String>,
    /// Drive a running coordinator (`lehr coordinator`, on another machine or pinned to its own
    /// cores with `taskset`) over gRPC instead of an embedded one; its memory is not measured.
    #[arg(long, conflicts_with = "grpc")]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchSynthArgs {
    /// Requests per pass (one document, one template, one sample each).
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Also run the official `openai` client (AsyncOpenAI, scripts/bench_synth_openai.py) with
    /// this Python against the same stub.
    #[arg(long)]
    pub openai_python: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchPipelineArgs {
    /// Input files or globs (default: the sample corpus in examples/data).
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// Workers (in-process, one slot each).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    #[arg(long, default_value = "8MiB")]
    pub split_size: String,
    /// Process N copies of every input (local files only), for a longer measurement.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TrainCommand {
    /// Checks libtorch: a tiny forward/backward on CPU (and CUDA when present).
    Smoke(TrainSmokeArgs),
    /// Train a model following a run spec (stages, mixer, LR), here or (--coordinator) on a
    /// cluster's train workers; resumes from the latest checkpoint under --out.
    Run(Box<TrainRunArgs>),
    /// One rank from its config file (what a train worker starts; JSON events on stdout).
    #[command(hide = true)]
    Rank(TrainRankArgs),
    /// `lehr train SPEC.toml [options]`: the same as `lehr train run SPEC.toml [options]`.
    #[command(external_subcommand)]
    Spec(Vec<OsString>),
}

// Parses `lehr train SPEC.toml ...` as `lehr train run SPEC.toml ...`.
#[derive(Parser, Debug)]
#[command(name = "lehr train", about = "Train a model following a run spec (the same as `lehr train run`)")]
pub struct TrainShorthand {
    #[command(flatten)]
    pub run: TrainRunArgs,
}

#[derive(Args, Debug)]
pub struct TrainRunArgs {
    /// The run spec (lehr schedule init).
    pub spec: PathBuf,
    /// Data root of the sources' token shards.
    #[arg(long)]
    pub data: String,
    /// tiny | tiny-mup | small | qwen2.5-0.5b | qwen2.5-1.5b | yulan-mini (vocabulary from the
    /// data's tokenizer; default tiny). Not with `[init]`/--init-from: the model is that one's.
    #[arg(long)]
    pub model: Option<String>,
    /// Start from this checkpoint's weights and architecture (the spec's `[init] from`, all
    /// blocks; write `[init] layers = "0..K"` in the spec to inherit the first K).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Checkpoints and metrics.jsonl: a directory, or an object-store URL (s3://, gs://, az://)
    /// that each checkpoint is published to (work happens in --scratch).
    #[arg(long, default_value = ".lehr/train")]
    pub out: PathBuf,
    /// With a URL --out: the local working directory (default: a directory under the system's
    /// temporary directory named after the URL and rank).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub micro_batch: usize,
    /// Stop before this global step.
    #[arg(long)]
    pub stop_at: Option<u64>,
    /// Checkpoint every N steps (and at every stage end).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    /// Keep only the K newest interval checkpoints (the current one included; stage ends are
    /// always kept). 0: keep all.
    #[arg(long, default_value_t = 0)]
    pub keep_checkpoints: usize,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// cpu | cuda (default: cuda when available).
    #[arg(long)]
    pub device: Option<String>,
    /// Held-out token shards laid out like --data; per-source perplexity goes to OUT/eval.jsonl.
    #[arg(long)]
    pub eval_data: Option<String>,
    /// Evaluate every N steps (and at the end) when --eval-data is given.
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Predicted tokens per source per evaluation.
    #[arg(long, default_value_t = 65_536)]
    pub eval_tokens: u64,
    /// Data parallel: this process's rank (with --world and --rendezvous).
    #[arg(long, default_value_t = 0)]
    pub rank: usize,
    /// Data parallel: the number of ranks.
    #[arg(long, default_value_t = 1)]
    pub world: usize,
    /// Data parallel over TCP (CPU collective): rank 0 listens here, the others connect.
    #[arg(long)]
    pub rendezvous: Option<std::net::SocketAddr>,
    /// Data-parallel backend: tcp (CPU, any build) or nccl (GPUs; a build with `--features
    /// nccl`), bootstrapped at --rendezvous. Default: nccl on CUDA when built in, else tcp.
    #[arg(long)]
    pub collective: Option<String>,
    /// The device's peak TFLOP/s (e.g. 989 for an H100's dense bf16), for MFU in the metrics.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// bf16 (mixed precision: bf16 products, fp32 weights and optimizer) or fp32. Default:
    /// bf16 on CUDA, fp32 on CPU.
    #[arg(long)]
    pub precision: Option<String>,
    #[command(flatten)]
    pub knobs: ModelKnobArgs,
    /// Print every step's metrics as a JSON line.
    #[arg(long)]
    pub json: bool,
    /// Submit the run to this coordinator instead of training here: it places --world ranks on
    /// `lehr worker --train` processes, meets them, and restarts the gang from the latest
    /// checkpoint when one dies. --data and --out must be reachable from every worker.
    #[arg(long, env = "LEHR_COORDINATOR")]
    pub coordinator: Option<String>,
    /// With --coordinator: print the job id and return instead of following the job.
    #[arg(long)]
    pub detach: bool,
    /// With --coordinator: the job's name in `lehr status`.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Overrides of the model preset's µP-style knobs (docs/training.md).
#[derive(Args, Debug, Clone, Default)]
pub struct ModelKnobArgs {
    /// Multiply token embeddings by this (YuLan-Mini: 10).
    #[arg(long)]
    pub embedding_scale: Option<f64>,
    /// Scale residual branches by DEPTH_SCALE / sqrt(layers) (YuLan-Mini: 1.4).
    #[arg(long)]
    pub depth_scale: Option<f64>,
    /// Multiply the final hidden state by this before the output projection (µP width).
    #[arg(long)]
    pub logit_scale: Option<f64>,
    /// RMSNorm on queries and keys per head (exported as Qwen3).
    #[arg(long)]
    pub qk_norm: bool,
    /// z-loss coefficient (YuLan-Mini, PaLM: 1e-4).
    #[arg(long)]
    pub z_loss: Option<f64>,
    /// Standard deviation of the initial weights.
    #[arg(long)]
    pub init_std: Option<f64>,
    /// Transformer blocks instead of the preset's (e.g. `--model tiny --layers 8`; with growth
    /// stages, the depth the run starts at).
    #[arg(long)]
    pub layers: Option<i64>,
}

#[derive(Args, Debug)]
pub struct TrainRankArgs {
    /// The rank's config (JSON, lehr_schedules::rank::RankConfig).
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct TrainSmokeArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(format!("unknown unit in `{s}` (ms, s, m, h, d)")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}
