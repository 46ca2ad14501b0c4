//! Interactive chat (spec §3.3): one transcript of tokens and one live
//! session kept between turns (each turn prefills only the new suffix),
//! line editing and history, commands, Ctrl+C to stop a generation.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use ds4_chat::{ThinkMode, THINK_MAX_MIN_CONTEXT};
use ds4_engine::{Engine, Finish, SamplingParams};
use ds4_tokenizer::Tokenizer;
use rustyline::error::ReadlineError;

use crate::chat::Transcript;
use crate::gen::{self, Loaded, TurnEnd};
use crate::printer::Printer;

pub const HELP: &str = "\
Commands:
  /help          Show this help.
  /think         Use normal thinking mode.
  /think-max     Use Think Max only when context is at least 393216 tokens.
  /nothink       Disable thinking mode.
  /ctx N         Set context size for following prompts.
  /read FILE     Read a prompt from FILE and run it.
  /quit, /exit   Leave the prompt.
  Ctrl+C         Stop generation and return to the prompt.";

/// Settings of the interactive session.
pub struct ReplConfig {
    pub system: String,
    pub mode: ThinkMode,
    pub ctx: usize,
    pub max_tokens: usize,
    pub params: SamplingParams,
    pub history: Option<PathBuf>,
}

/// A parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Think,
    ThinkMax,
    NoThink,
    Ctx(usize),
    Read(String),
    Quit,
    /// A message for the model.
    Message(String),
    /// Nothing to do (empty line).
    Empty,
    /// A command that could not be used; the text says why.
    Invalid(String),
}

/// Parses one input line.
pub fn parse_line(line: &str) -> Command {
    let t = line.trim();
    if t.is_empty() {
        return Command::Empty;
    }
    if !t.starts_with('/') {
        return Command::Message(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let (cmd, arg) = match t.split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim()),
        None => (t, ""),
    };
    match cmd {
        "/help" => Command::Help,
        "/think" => Command::Think,
        "/think-max" => Command::ThinkMax,
        "/nothink" => Command::NoThink,
        "/quit" | "/exit" => Command::Quit,
        "/ctx" => match arg.parse::<usize>() {
            Ok(n) if n > 0 => Command::Ctx(n),
            _ => Command::Invalid(format!(
                "ds4: /ctx needs a positive number of tokens, got {arg:?}"
            )),
        },
        "/read" if arg.is_empty() => Command::Invalid("ds4: /read needs a file name".into()),
        "/read" => Command::Read(arg.to_string()),
        other => Command::Invalid(format!(
            "ds4: unknown command: {other} (type /help for the commands)"
        )),
    }
}

fn mode_name(m: ThinkMode) -> &'static str {
    match m {
        ThinkMode::Off => "off",
        ThinkMode::High => "high",
        ThinkMode::Max => "max",
    }
}

struct Repl {
    loaded: Loaded,
    engine: Engine,
    tok: &'static Tokenizer,
    transcript: Transcript,
    cfg: ReplConfig,
    interrupt: Arc<AtomicBool>,
}

impl Repl {
    fn effective_mode(&self) -> ThinkMode {
        self.cfg.mode.for_context(self.cfg.ctx)
    }

    fn set_ctx(&mut self, n: usize) -> Result<()> {
        self.engine.shutdown();
        self.engine = gen::start_engine(&self.loaded, n)?;
        self.cfg.ctx = n;
        Ok(())
    }

    fn turn(&mut self, text: &str) -> Result<()> {
        let mode = self.effective_mode();
        self.transcript
            .set_max_prefix(self.tok, mode == ThinkMode::Max);
        let mark = self.transcript.mark();
        self.transcript.push_user_turn(self.tok, text, mode);
        let n_prompt = self.transcript.tokens.len();
        if n_prompt + 1 >= self.cfg.ctx {
            self.transcript.rollback(mark);
            eprintln!(
                "ds4: prompt processing failed: the conversation has {n_prompt} tokens, but the context size is {} tokens (use /ctx N)",
                self.cfg.ctx
            );
            return Ok(());
        }
        let max_tokens = self.cfg.max_tokens.min(self.cfg.ctx - n_prompt - 1);
        self.interrupt.store(false, Ordering::SeqCst);
        let stdout = std::io::stdout();
        let color = stdout.is_terminal();
        let mut printer = Printer::new(stdout.lock(), mode.is_thinking(), color);
        let turn = gen::run_turn(
            &self.engine,
            self.transcript.text.clone(),
            self.transcript.tokens.clone(),
            self.cfg.params,
            max_tokens,
            &mut printer,
            Some(&self.interrupt),
        )?;
        drop(printer);
        let interrupted = self.interrupt.swap(false, Ordering::SeqCst);
        match &turn.end {
            TurnEnd::Failed(msg) => {
                self.transcript.rollback(mark);
                eprintln!("ds4: prompt processing failed: {msg}");
                return Ok(());
            }
            TurnEnd::CancelledBeforeStart => {
                self.transcript.rollback(mark);
                eprintln!("ds4: interrupted");
                return Ok(());
            }
            TurnEnd::Done { finish, usage } => {
                if let Finish::Error(e) = finish {
                    self.transcript.rollback(mark);
                    eprintln!("ds4: decode failed: {e}");
                    return Ok(());
                }
                if *finish == Finish::Cancelled && usage.completion_tokens == 0 {
                    self.transcript.rollback(mark);
                    eprintln!("ds4: interrupted");
                } else {
                    self.transcript.push_generated(self.tok, &turn.text);
                    self.transcript.push_eos(self.tok);
                    if interrupted || *finish == Finish::Cancelled {
                        eprintln!("ds4: interrupted");
                    }
                }
            }
        }
        eprintln!(
            "ds4: prompt {} tokens ({} reused, {} new)",
            turn.prompt_tokens, turn.cached_tokens, turn.prefill_tokens
        );
        eprintln!("{}", gen::rates_line(&turn));
        Ok(())
    }

    /// Runs one command; `Ok(false)` leaves the loop.
    fn command(&mut self, c: Command) -> Result<bool> {
        match c {
            Command::Empty => {}
            Command::Help => println!("{HELP}"),
            Command::Quit => return Ok(false),
            Command::Think => {
                self.cfg.mode = ThinkMode::High;
                self.transcript.set_max_prefix(self.tok, false);
                println!("Thinking mode: high");
            }
            Command::ThinkMax => {
                self.cfg.mode = ThinkMode::Max;
                if self.cfg.ctx < THINK_MAX_MIN_CONTEXT {
                    eprintln!(
                        "ds4: Think Max needs a context of at least {THINK_MAX_MIN_CONTEXT} tokens (now {}); it applies after /ctx {THINK_MAX_MIN_CONTEXT}",
                        self.cfg.ctx
                    );
                    println!("Thinking mode: high (ctx below {THINK_MAX_MIN_CONTEXT})");
                } else {
                    println!("Thinking mode: max");
                }
            }
            Command::NoThink => {
                self.cfg.mode = ThinkMode::Off;
                println!("Thinking mode: off");
            }
            Command::Ctx(n) => {
                self.set_ctx(n)?;
                println!(
                    "Context size: {n} tokens (KV cache cleared; the conversation is kept, {} tokens)",
                    self.transcript.tokens.len()
                );
                if self.cfg.mode == ThinkMode::Max {
                    println!("Thinking mode: {}", mode_name(self.effective_mode()));
                }
            }
            Command::Read(path) => match std::fs::read_to_string(&path) {
                Ok(text) if text.trim().is_empty() => eprintln!("ds4: {path} is empty"),
                Ok(text) => self.turn(&text)?,
                Err(e) => eprintln!("ds4: cannot read {path}: {e}"),
            },
            Command::Invalid(msg) => eprintln!("{msg}"),
            Command::Message(text) => self.turn(&text)?,
        }
        Ok(true)
    }
}

const HISTORY_MAX: usize = 512;

/// Reads one line with editing and history; `None` at EOF. Ctrl+C at the
/// prompt is ignored (a new prompt is shown).
fn read_line(
    entries: &mut Vec<String>,
    history: Option<&std::path::Path>,
) -> Result<Option<String>> {
    let rl_cfg = rustyline::Config::builder()
        .max_history_size(HISTORY_MAX)
        .map_err(|e| anyhow!("line editor: {e}"))?
        .auto_add_history(false)
        .build();
    let mut rl =
        rustyline::DefaultEditor::with_config(rl_cfg).map_err(|e| anyhow!("line editor: {e}"))?;
    for e in entries.iter() {
        let _ = rl.add_history_entry(e.as_str());
    }
    loop {
        match rl.readline("ds4> ") {
            Ok(line) => {
                let entry = line.trim_end().to_string();
                if !entry.trim().is_empty() && entries.last() != Some(&entry) {
                    entries.push(entry);
                    if entries.len() > HISTORY_MAX {
                        entries.drain(..entries.len() - HISTORY_MAX);
                    }
                    if let Some(h) = history {
                        let _ = save_history(h, entries);
                    }
                }
                return Ok(Some(line));
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(anyhow!("reading input: {e}")),
        }
    }
}

/// Writes the history (one entry per line) through a temporary file.
fn save_history(path: &std::path::Path, entries: &[String]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut text = entries
        .iter()
        .filter(|e| !e.contains('\n'))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    text.push('\n');
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// History file `$HOME/.ds4_history`.
pub fn default_history() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".ds4_history"))
}

/// Runs the interactive chat until `/quit` or EOF.
pub fn run(loaded: Loaded, cfg: ReplConfig) -> Result<()> {
    let tok = Tokenizer::shared_v4();
    let interrupt = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupt.clone())
        .map_err(|e| anyhow!("installing the Ctrl+C handler: {e}"))?;
    let engine = gen::start_engine(&loaded, cfg.ctx)?;
    let transcript = Transcript::begin(tok, &cfg.system, false);
    let history = cfg.history.clone();
    let mut repl = Repl {
        loaded,
        engine,
        tok,
        transcript,
        cfg,
        interrupt,
    };
    // The line editor exists only while a line is read: rustyline replaces
    // the SIGINT handler for its lifetime, and during a generation Ctrl+C
    // must reach ours (which cancels the job).
    let mut entries: Vec<String> = Vec::new();
    if let Some(h) = &history {
        if let Ok(text) = std::fs::read_to_string(h) {
            entries = text.lines().map(str::to_string).collect();
        }
    }
    println!("{HELP}");
    let _ = std::io::stdout().flush();
    let result = loop {
        let line = match read_line(&mut entries, history.as_deref()) {
            Ok(l) => l,
            Err(e) => break Err(e),
        };
        let Some(line) = line else { break Ok(()) };
        match repl.command(parse_line(&line)) {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    repl.engine.shutdown();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_line("  "), Command::Empty);
        assert_eq!(parse_line("/help"), Command::Help);
        assert_eq!(parse_line("/think"), Command::Think);
        assert_eq!(parse_line("/think-max"), Command::ThinkMax);
        assert_eq!(parse_line("/nothink "), Command::NoThink);
        assert_eq!(parse_line("/ctx 4096"), Command::Ctx(4096));
        assert!(matches!(parse_line("/ctx 0"), Command::Invalid(_)));
        assert!(matches!(parse_line("/ctx"), Command::Invalid(_)));
        assert_eq!(parse_line("/read a b.txt"), Command::Read("a b.txt".into()));
        assert!(matches!(parse_line("/read"), Command::Invalid(_)));
        assert_eq!(parse_line("/exit"), Command::Quit);
        assert_eq!(parse_line("/quit"), Command::Quit);
        match parse_line("/bogus x") {
            Command::Invalid(m) => assert!(m.contains("unknown command: /bogus")),
            c => panic!("{c:?}"),
        }
        assert_eq!(
            parse_line(" hi there "),
            Command::Message(" hi there ".into())
        );
    }
}
