//! Command-line flags of `ds4` (ds4.c names and defaults, spec §3.1) and of
//! `ds4 download`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};

/// Default system text of the CLI (no trailing period, as in ds4.c).
pub const DEFAULT_SYSTEM: &str = "You are a helpful assistant";
/// `-n` when not given (ds4's default).
pub const DEFAULT_TOKENS: u64 = 50000;
/// `-n` when not given on the embedded demo model: its output is noise, so a session ends soon.
pub const DEMO_TOKENS: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendName {
    /// CUDA where a GPU and its driver are present, else the CPU.
    Auto,
    Cpu,
    Cuda,
    Metal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NumericsArg {
    /// f32 everywhere (what the transformers oracle computes).
    Exact,
    /// FP8/FP4 round trips of the reference implementation.
    Official,
}

impl From<NumericsArg> for ds4_model::Numerics {
    fn from(n: NumericsArg) -> Self {
        match n {
            NumericsArg::Exact => ds4_model::Numerics::Exact,
            NumericsArg::Official => ds4_model::Numerics::Official,
        }
    }
}

fn parse_unit(s: &str) -> Result<f32, String> {
    parse_range(s, 0.0, 1.0)
}

fn parse_temp(s: &str) -> Result<f32, String> {
    parse_range(s, 0.0, 100.0)
}

fn parse_range(s: &str, lo: f32, hi: f32) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(lo..=hi).contains(&v) {
        return Err(format!("{v} is outside [{lo}, {hi}]"));
    }
    Ok(v)
}

/// `ds4`: DeepSeek V4 Flash on the command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ds4",
    version,
    about = "DeepSeek V4 Flash: one-shot generation (-p) or interactive chat",
    after_help = "Subcommand:\n  ds4 download q2-imatrix|q4-imatrix|q2|q4|mtp [--token TOKEN]   fetch a model (see ds4 download --help)\n\nWithout -m, ./ds4flash.gguf is used when it exists, else the embedded demo model (random weights)."
)]
pub struct Cli {
    /// Model GGUF file (default: ./ds4flash.gguf if present, else the embedded demo model).
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    pub model: Option<PathBuf>,

    /// Context size in tokens.
    #[arg(short = 'c', long = "ctx", value_name = "N", default_value_t = 32768,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ctx: u64,

    /// Use the CPU backend.
    #[arg(long, action = ArgAction::SetTrue)]
    pub cpu: bool,
    /// Use the CUDA backend.
    #[arg(long, action = ArgAction::SetTrue)]
    pub cuda: bool,
    /// Use the Metal backend.
    #[arg(long, action = ArgAction::SetTrue)]
    pub metal: bool,
    /// Backend by name.
    #[arg(long, value_enum, value_name = "NAME")]
    pub backend: Option<BackendName>,

    /// Worker threads (default: min(CPUs, 12), or DS4_THREADS).
    #[arg(short = 't', long = "threads", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=512))]
    pub threads: Option<u64>,

    /// Prompt text (one-shot mode).
    #[arg(
        short = 'p',
        long = "prompt",
        value_name = "TEXT",
        conflicts_with = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from a file (one-shot mode).
    #[arg(long = "prompt-file", value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,

    /// System text ("" for none). Also spelled -sys.
    #[arg(long = "system", value_name = "TEXT", default_value = DEFAULT_SYSTEM)]
    pub system: String,

    /// Maximum generated tokens (clamped to the context) [default: 50000; 64 on the demo model].
    #[arg(short = 'n', long = "tokens", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub tokens: Option<u64>,

    /// Temperature in [0, 100]; 0 = greedy.
    #[arg(long = "temp", value_name = "F", default_value_t = 1.0, value_parser = parse_temp)]
    pub temp: f32,
    /// Nucleus sampling threshold in [0, 1].
    #[arg(long = "top-p", value_name = "F", default_value_t = 1.0, value_parser = parse_unit)]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 = no cap).
    #[arg(long = "top-k", value_name = "K", default_value_t = 0,
          value_parser = clap::value_parser!(i32).range(0..))]
    pub top_k: i32,
    /// Minimum probability relative to the best token, in [0, 1].
    #[arg(long = "min-p", value_name = "F", default_value_t = 0.05, value_parser = parse_unit)]
    pub min_p: f32,
    /// Sampling seed (> 0; default: time-based).
    #[arg(long = "seed", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub seed: Option<u64>,

    /// Thinking mode, effort high (default).
    #[arg(long = "think", action = ArgAction::SetTrue, overrides_with_all = ["nothink", "think_max"])]
    pub think: bool,
    /// Think Max (needs --ctx >= 393216, else high).
    #[arg(long = "think-max", action = ArgAction::SetTrue, overrides_with_all = ["nothink", "think"])]
    pub think_max: bool,
    /// No thinking: answer directly.
    #[arg(long = "nothink", action = ArgAction::SetTrue, overrides_with_all = ["think", "think_max"])]
    pub nothink: bool,

    /// Load the model, print a summary and exit.
    #[arg(long, action = ArgAction::SetTrue)]
    pub inspect: bool,

    /// Tokenize the prompt as written (special strings recognised), print the ids and exit.
    #[arg(long = "dump-tokens", action = ArgAction::SetTrue)]
    pub dump_tokens: bool,
    /// Greedy run writing the top log-probabilities of every step as JSON to FILE.
    #[arg(long = "dump-logprobs", value_name = "FILE")]
    pub dump_logprobs: Option<PathBuf>,
    /// Alternatives per step for --dump-logprobs (capped at 128).
    #[arg(long = "logprobs-top-k", value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub logprobs_top_k: u64,
    /// Evaluate the ids of --prompt-tokens and write every position's logits as float32 .npy [T, vocab].
    #[arg(
        long = "dump-logits",
        value_name = "FILE.npy",
        requires = "prompt_tokens"
    )]
    pub dump_logits: Option<PathBuf>,
    /// Token ids (comma- or whitespace-separated) for --dump-logits.
    #[arg(long = "prompt-tokens", value_name = "FILE")]
    pub prompt_tokens: Option<PathBuf>,
    /// Score the raw text of FILE (first 32 tokens as context) and print its perplexity.
    #[arg(long = "perplexity-file", value_name = "FILE", conflicts_with_all = ["prompt", "prompt_file"])]
    pub perplexity_file: Option<PathBuf>,
    /// Numerics of the forward pass.
    #[arg(long = "numerics", value_enum, value_name = "MODE")]
    pub numerics: Option<NumericsArg>,
    /// Render an OpenAI chat-completions request body to the exact prompt text and exit.
    #[arg(long = "dump-prompt", value_name = "REQUEST.json")]
    pub dump_prompt: Option<PathBuf>,

    /// Skip the up-front memory check.
    #[arg(long = "no-mem-check", action = ArgAction::SetTrue)]
    pub no_mem_check: bool,
    /// Read the whole model file once at startup (with progress) so the first tokens do not stall.
    #[arg(long = "warm-weights", action = ArgAction::SetTrue)]
    pub warm_weights: bool,

    /// (Not here: use ds4-server.)
    #[arg(long, action = ArgAction::SetTrue, hide = true)]
    pub server: bool,
}

/// Think mode requested on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkFlag {
    High,
    Max,
    Off,
}

impl Cli {
    /// The generation cap: `-n`, else the default for the model in use.
    pub fn max_tokens(&self, demo: bool) -> u64 {
        self.tokens
            .unwrap_or(if demo { DEMO_TOKENS } else { DEFAULT_TOKENS })
    }

    pub fn think_flag(&self) -> ThinkFlag {
        if self.nothink {
            ThinkFlag::Off
        } else if self.think_max {
            ThinkFlag::Max
        } else {
            ThinkFlag::High
        }
    }

    /// The single backend requested (auto when none is named).
    pub fn backend(&self) -> Result<BackendName, String> {
        let mut named: Vec<BackendName> = Vec::new();
        if self.cpu {
            named.push(BackendName::Cpu);
        }
        if self.cuda {
            named.push(BackendName::Cuda);
        }
        if self.metal {
            named.push(BackendName::Metal);
        }
        if let Some(b) = self.backend {
            named.push(b);
        }
        named.dedup();
        match named.as_slice() {
            [] => Ok(BackendName::Auto),
            [b] => Ok(*b),
            _ => Err("more than one backend selected".to_string()),
        }
    }
}

/// ds4.c spells the system flag `-sys`; clap has no multi-letter short
/// flags, so it is rewritten to `--system` (also `-sys=TEXT`).
pub fn normalize_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    args.into_iter()
        .map(|a| {
            if a == "-sys" {
                OsString::from("--system")
            } else if let Some(rest) = a.to_str().and_then(|s| s.strip_prefix("-sys=")) {
                OsString::from(format!("--system={rest}"))
            } else {
                a
            }
        })
        .collect()
}

/// `ds4 download`: fetch a model from Hugging Face.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ds4 download",
    about = "Download a DeepSeek V4 Flash GGUF from the Hugging Face repo antirez/deepseek-v4-gguf",
    after_help = "Targets:\n  q2-imatrix  2-bit routed experts, ~81 GB (preferred for 96-128 GB RAM)\n  q4-imatrix  4-bit routed experts, ~153 GB (preferred for >= 256 GB RAM)\n  q2          legacy 2-bit (non-imatrix), ~81 GB\n  q4          legacy 4-bit (non-imatrix), ~153 GB\n  mtp         optional MTP speculative-decoding file, ~3.5 GB\n\nFiles go to $DS4_GGUF_DIR (default ./gguf) as FILE.part, renamed when complete;\nrunning the same command again resumes. Model targets update ./ds4flash.gguf.\nToken: --token, else HF_TOKEN, else the Hugging Face token cache."
)]
pub struct DownloadCli {
    /// What to download.
    #[arg(value_name = "TARGET", value_parser = ["q2-imatrix", "q4-imatrix", "q2", "q4", "mtp"])]
    pub target: String,
    /// Hugging Face token.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Automatic resume attempts after a dropped connection.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut v = vec![OsString::from("ds4")];
        v.extend(args.iter().map(OsString::from));
        Cli::try_parse_from(normalize_args(v))
    }

    #[test]
    fn defaults_match_ds4() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.ctx, 32768);
        assert_eq!(c.max_tokens(false), 50000);
        assert_eq!(c.max_tokens(true), DEMO_TOKENS);
        assert_eq!(c.temp, 1.0);
        assert_eq!(c.top_p, 1.0);
        assert_eq!(c.top_k, 0);
        assert_eq!(c.min_p, 0.05);
        assert_eq!(c.seed, None);
        assert_eq!(c.system, DEFAULT_SYSTEM);
        assert_eq!(c.logprobs_top_k, 20);
        assert_eq!(c.think_flag(), ThinkFlag::High);
        assert_eq!(c.backend(), Ok(BackendName::Auto));
    }

    #[test]
    fn ds4_spellings() {
        let c = parse(&[
            "-sys",
            "S",
            "-n",
            "7",
            "-c",
            "99",
            "-t",
            "3",
            "--temp",
            "0",
            "--nothink",
        ])
        .unwrap();
        assert_eq!(c.system, "S");
        assert_eq!((c.tokens, c.ctx, c.threads), (Some(7), 99, Some(3)));
        assert_eq!((c.max_tokens(false), c.max_tokens(true)), (7, 7));
        assert_eq!(c.think_flag(), ThinkFlag::Off);
        let c = parse(&["--nothink", "--think-max"]).unwrap();
        assert_eq!(c.think_flag(), ThinkFlag::Max);
        let c = parse(&["-sys="]).unwrap();
        assert_eq!(c.system, "");
        assert_eq!(parse(&["--cuda"]).unwrap().backend(), Ok(BackendName::Cuda));
        assert!(parse(&["--cpu", "--backend", "metal"])
            .unwrap()
            .backend()
            .is_err());
    }

    #[test]
    fn bad_values_rejected() {
        for bad in [
            &["-n", "0"][..],
            &["--ctx", "-5"],
            &["--temp", "101"],
            &["--top-p", "1.5"],
            &["--min-p", "x"],
            &["--seed", "0"],
            &["-p", "a", "--prompt-file", "f"],
            &["--dump-logits", "x.npy"],
            &["--bogus"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
