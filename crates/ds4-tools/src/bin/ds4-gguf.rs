//! ds4-gguf: inspect (and, later, synthesize / convert) GGUF files.
//!
//! Each subcommand is one `cmd_*` function taking its parsed arguments and the output
//! stream; errors go to stderr with exit status 1.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ds4_gguf::{GgufFile, Value};

type CmdResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(
    name = "ds4-gguf",
    version,
    about = "GGUF tools for DeepSeek V4 Flash files"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print header, metadata, tensor table and totals of a GGUF file.
    Inspect(InspectArgs),
    /// Convert DeepSeek's official checkpoint (safetensors shards + config.json +
    /// tokenizer.json) to the ds4 GGUF layout.
    Convert(ConvertArgs),
    /// Write a synthetic DeepSeek V4 Flash GGUF with deterministic random weights.
    Synth(SynthArgs),
}

#[derive(Args)]
struct InspectArgs {
    /// The GGUF file.
    file: PathBuf,
    /// Array elements shown per metadata array.
    #[arg(long, default_value_t = 8)]
    max_array: usize,
    /// Characters shown per metadata string (longer ones are cut, with their length).
    #[arg(long, default_value_t = 120)]
    max_string: usize,
    /// Skip the per-tensor table (header, metadata and totals only).
    #[arg(long)]
    no_tensors: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let r = match cli.cmd {
        Cmd::Inspect(a) => cmd_inspect(&a, &mut out),
        Cmd::Convert(a) => cmd_convert(&a, &mut out),
        Cmd::Synth(a) => cmd_synth(&a, &mut out),
    };
    let r = r.and_then(|()| out.flush().map_err(Into::into));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // `ds4-gguf inspect f | head` is not an error.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ds4-gguf: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string().into_bytes();
    let groups: Vec<&str> = digits
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or_default())
        .collect();
    groups.join(",")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn show_string(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

/// A metadata value for display: strings cut to `max_string` characters, arrays to
/// their element type, length and first `max_array` elements.
fn show_value(v: &Value, max_array: usize, max_string: usize) -> String {
    match v {
        Value::String(s) => show_string(s, max_string),
        Value::Array(t, items) => {
            let mut s = format!("[{t}; {}]", items.len());
            if !items.is_empty() && max_array > 0 {
                let shown: Vec<String> = items
                    .iter()
                    .take(max_array)
                    .map(|e| show_value(e, max_array, max_string))
                    .collect();
                s.push_str(&format!(" [{}", shown.join(", ")));
                if items.len() > max_array {
                    s.push_str(", ...");
                }
                s.push(']');
            }
            s
        }
        other => other.to_string(),
    }
}

fn type_name(t: &ds4_gguf::TensorInfo) -> String {
    match t.ggml_type {
        Some(ty) => ty.name().to_owned(),
        None => format!("unknown({})", t.type_id),
    }
}

fn cmd_inspect(a: &InspectArgs, out: &mut impl Write) -> CmdResult {
    let f = GgufFile::open(&a.file)?;
    writeln!(out, "file: {}", a.file.display())?;
    writeln!(out, "header:")?;
    writeln!(out, "  version      {}", f.version())?;
    writeln!(out, "  alignment    {}", f.alignment())?;
    writeln!(out, "  n_kv         {}", f.metadata().len())?;
    writeln!(out, "  n_tensors    {}", f.tensors().len())?;
    writeln!(out, "  data start   {}", thousands(f.data_start()))?;
    writeln!(
        out,
        "  file size    {} ({})",
        thousands(f.file_len()),
        human_bytes(f.file_len())
    )?;

    writeln!(out, "metadata ({}):", f.metadata().len())?;
    let key_w = f.metadata().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in f.metadata() {
        let ty = v.value_type().name();
        let shown = show_value(v, a.max_array, a.max_string);
        writeln!(out, "  {k:<key_w$}  {ty:<7}  {shown}")?;
    }

    if !a.no_tensors {
        writeln!(out, "tensors ({}):", f.tensors().len())?;
        let name_w = f.tensors().iter().map(|t| t.name.len()).max().unwrap_or(4);
        writeln!(
            out,
            "  {:>5}  {:<name_w$}  {:<8}  {:<24}  {:>16}  {:>16}",
            "#", "name", "type", "dims", "bytes", "offset"
        )?;
        for (i, t) in f.tensors().iter().enumerate() {
            let dims = format!("{:?}", t.dims);
            writeln!(
                out,
                "  {i:>5}  {:<name_w$}  {:<8}  {dims:<24}  {:>16}  {:>16}",
                t.name,
                type_name(t),
                thousands(t.n_bytes),
                thousands(t.offset),
            )?;
        }
    }

    // Totals and the per-type census (by type id, unknown types included).
    let mut census: BTreeMap<u32, (String, u64, u64, u64)> = BTreeMap::new();
    let (mut bytes, mut params) = (0u128, 0u128);
    for t in f.tensors() {
        let e = census
            .entry(t.type_id)
            .or_insert_with(|| (type_name(t), 0, 0, 0));
        e.1 += 1;
        e.2 += t.n_bytes;
        e.3 += t.n_elements;
        bytes += t.n_bytes as u128;
        params += t.n_elements as u128;
    }
    writeln!(out, "totals:")?;
    writeln!(out, "  tensors      {}", f.tensors().len())?;
    let as_u64 = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
    writeln!(
        out,
        "  bytes        {} ({})",
        thousands(as_u64(bytes)),
        human_bytes(as_u64(bytes))
    )?;
    writeln!(out, "  parameters   {}", thousands(as_u64(params)))?;
    writeln!(out, "  census:")?;
    for (name, count, b, n) in census.values() {
        writeln!(
            out,
            "    {name:<12} {count:>6} tensors  {:>20} bytes  {:>20} params",
            thousands(*b),
            thousands(*n)
        )?;
    }
    write_validation(&f, out)?;
    Ok(())
}

// ---- validation section of `inspect` and the `synth` subcommand (helper "layout") ----

/// The DeepSeek V4 validation verdict printed at the end of `inspect`.
fn write_validation(f: &GgufFile, out: &mut impl Write) -> CmdResult {
    let r = ds4_gguf::validate::validate(f);
    writeln!(out, "validation:")?;
    writeln!(out, "  variant      {}", r.summary())?;
    writeln!(
        out,
        "  result       {}",
        if r.is_ok() { "ok" } else { "INVALID" }
    )?;
    const SHOW: usize = 50;
    for (what, list) in [("error", &r.errors), ("warning", &r.warnings)] {
        for m in list.iter().take(SHOW) {
            writeln!(out, "  {what}: {m}")?;
        }
        if list.len() > SHOW {
            writeln!(out, "  ... {} more {what}s", list.len() - SHOW)?;
        }
    }
    Ok(())
}

#[derive(Args)]
struct SynthArgs {
    /// Output GGUF file of the main model (not needed with --dry-run).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// tiny: 5 layers, n_embd 256 (every code path); full: the published shape.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Layer count (the ratio schedule is extended / cut).
    #[arg(long)]
    layers: Option<u32>,
    /// Recipe: q2, q4, f16 or f32 (default f32 for tiny, q2 for full).
    #[arg(long)]
    quant: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the MTP file here.
    #[arg(long)]
    mtp: Option<PathBuf>,
    /// MTP recipe (default q4 for quantized main recipes, else the main recipe).
    #[arg(long)]
    mtp_quant: Option<String>,
    /// Type of the MTP plain tensors: f16 or f32.
    #[arg(long)]
    mtp_plain: Option<String>,
    /// Vocabulary: "real" (the DeepSeek V4 tokenizer) or a placeholder token count (>= 263).
    #[arg(long, default_value = "real")]
    vocab: String,
    /// general.alignment to write (default: key absent, alignment 32).
    #[arg(long)]
    alignment: Option<u32>,
    /// Model config override FIELD=VALUE (ds4_gguf::layout::ModelConfig field names;
    /// lists comma-separated), repeatable; e.g. --set sliding_window=16 --set n_expert=64.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Make one gate/up row in N large (std x20) so the SwiGLU clamps run; 0 turns it
    /// off (the default).
    #[arg(long)]
    hot_rows: Option<u32>,
    /// Print sizes and the type census without writing anything.
    #[arg(long)]
    dry_run: bool,
}

fn parse_recipe(s: &str) -> Result<ds4_gguf::layout::Recipe, String> {
    ds4_gguf::layout::Recipe::parse(s)
        .ok_or_else(|| format!("unknown recipe {s:?}: expected q2, q4, f16 or f32"))
}

fn synth_config(a: &SynthArgs) -> Result<ds4_gguf::synth::SynthConfig, String> {
    use ds4_gguf::synth::{SynthConfig, VocabSource};
    let mut c = match a.preset.as_str() {
        "tiny" => SynthConfig::tiny(),
        "full" => SynthConfig::full(),
        p => return Err(format!("unknown preset {p:?}: expected tiny or full")),
    };
    if let Some(q) = &a.quant {
        c.recipe = parse_recipe(q)?;
    }
    if let Some(q) = &a.mtp_quant {
        c.mtp_recipe = Some(parse_recipe(q)?);
    }
    c.mtp_plain = match a.mtp_plain.as_deref() {
        None => None,
        Some("f16") | Some("F16") => Some(ds4_gguf::GgmlType::F16),
        Some("f32") | Some("F32") => Some(ds4_gguf::GgmlType::F32),
        Some(x) => return Err(format!("--mtp-plain {x:?}: expected f16 or f32")),
    };
    c.seed = a.seed;
    c.alignment = a.alignment;
    c.vocab = if a.vocab == "real" {
        VocabSource::RealV4
    } else {
        let n = a
            .vocab
            .parse()
            .map_err(|_| format!("--vocab {:?}: expected \"real\" or a token count", a.vocab))?;
        VocabSource::Placeholder(n)
    };
    if let Some(n) = a.layers {
        c = c.with_layers(n);
    }
    match a.hot_rows {
        None => {}
        Some(0) => c.hot_rows = None,
        Some(n) => {
            c.hot_rows = Some(ds4_gguf::synth::HotRows {
                one_in: n,
                scale: 20.0,
            })
        }
    }
    for s in &a.set {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--set {s:?}: expected FIELD=VALUE"))?;
        c.model.set_field(k.trim(), v.trim())?;
    }
    Ok(c)
}

fn write_synth_stats(
    out: &mut impl Write,
    what: &str,
    path: Option<&std::path::Path>,
    s: &ds4_gguf::synth::SynthStats,
) -> CmdResult {
    match path {
        Some(p) => writeln!(out, "{what}: {}", p.display())?,
        None => writeln!(out, "{what}: (dry run)")?,
    }
    writeln!(out, "  tensors      {}", s.tensors)?;
    writeln!(out, "  header       {}", thousands(s.header_bytes))?;
    writeln!(
        out,
        "  tensor data  {} ({})",
        thousands(s.data_bytes),
        human_bytes(s.data_bytes)
    )?;
    writeln!(
        out,
        "  file         {} ({})",
        thousands(s.file_bytes),
        human_bytes(s.file_bytes)
    )?;
    let census: Vec<String> = s
        .census
        .iter()
        .map(|(t, n)| format!("{} {n}", t.name()))
        .collect();
    writeln!(out, "  census       {}", census.join(", "))?;
    if s.seconds > 0.0 {
        writeln!(
            out,
            "  written in   {:.2} s ({:.2} GB/s)",
            s.seconds,
            s.file_bytes as f64 / s.seconds / 1e9
        )?;
    }
    Ok(())
}

fn cmd_synth(a: &SynthArgs, out: &mut impl Write) -> CmdResult {
    use ds4_gguf::synth::{plan_main, plan_mtp, synth_main, synth_mtp};
    let c = synth_config(a)?;
    if a.dry_run {
        write_synth_stats(out, "main", None, &plan_main(&c)?)?;
        if a.mtp.is_some() {
            write_synth_stats(out, "mtp", None, &plan_mtp(&c)?)?;
        }
        return Ok(());
    }
    let Some(path) = &a.output else {
        return Err("synth: -o FILE is required (or --dry-run)".into());
    };
    let s = synth_main(&c, path)?;
    write_synth_stats(out, "main", Some(path), &s)?;
    if let Some(m) = &a.mtp {
        let s = synth_mtp(&c, m)?;
        write_synth_stats(out, "mtp", Some(m), &s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ds4_gguf::{GgmlType, GgufWriter};

    fn inspect_args(file: PathBuf) -> InspectArgs {
        InspectArgs {
            file,
            max_array: 3,
            max_string: 120,
            no_tensors: false,
        }
    }

    #[test]
    fn inspect_prints_header_metadata_tensors_and_totals() {
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", Value::String("deepseek4".into()));
        w.add_kv("deepseek4.block_count", Value::U32(43));
        w.add_kv(
            "tokenizer.ggml.tokens",
            Value::string_array((0..10).map(|i| format!("t{i}")).collect()),
        );
        w.add_tensor("a", GgmlType::F32, &[4, 2]);
        w.add_tensor("b", GgmlType::Q8_0, &[64, 3]);
        w.add_tensor("c", GgmlType::F32, &[5]);
        let dir = std::env::temp_dir().join(format!("ds4-gguf-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.gguf");
        let datas = [vec![0u8; 32], vec![1u8; 204], vec![2u8; 20]];
        let refs: Vec<&[u8]> = datas.iter().map(|d| &d[..]).collect();
        ds4_gguf::write_file(&path, &w, &refs).unwrap();
        let mut out = Vec::new();
        cmd_inspect(&inspect_args(path.clone()), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let f = GgufFile::open(&path).unwrap();
        for want in [
            "  version      3".to_owned(),
            "  n_kv         3".to_owned(),
            "  n_tensors    3".to_owned(),
            format!("  data start   {}", f.data_start()),
            format!("  file size    {} ", f.file_len()),
            "[STRING; 10] [\"t0\", \"t1\", \"t2\", ...]".to_owned(),
            "deepseek4.block_count  UINT32   43".to_owned(),
            "  bytes        256 (256 B)".to_owned(),
            "  parameters   205".to_owned(),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
        // Census: two F32 tensors (13 params, 52 bytes) and one Q8_0.
        let f32_line = text
            .lines()
            .find(|l| l.trim_start().starts_with("F32 "))
            .unwrap();
        let fields: Vec<&str> = f32_line.split_whitespace().collect();
        assert_eq!(
            fields,
            ["F32", "2", "tensors", "52", "bytes", "13", "params"]
        );
        // Tensor table row: offset of "c" is after a (32 -> 32) and b (204 -> 224).
        let c_row = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("c"))
            .unwrap();
        let fields: Vec<&str> = c_row.split_whitespace().collect();
        assert_eq!(fields, ["2", "c", "F32", "[5]", "20", "256"]);
        // An invalid file is an error, not a panic.
        std::fs::write(
            &path,
            b"GGUF\x02\0\0\0 and then some more bytes to reach 32",
        )
        .unwrap();
        let err = cmd_inspect(&inspect_args(path), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("only GGUF v3"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(86_720_111_488), "86,720,111,488");
    }

    #[test]
    fn strings_and_arrays_are_abbreviated() {
        assert_eq!(show_string("abc", 5), "\"abc\"");
        assert_eq!(show_string("äbcdef", 2), "\"äb\"... (7 bytes)");
        let v = Value::u32_array(&[1, 2, 3, 4]);
        assert_eq!(show_value(&v, 2, 10), "[UINT32; 4] [1, 2, ...]");
        assert_eq!(show_value(&v, 0, 10), "[UINT32; 4]");
        let v = Value::string_array(vec!["long string".into()]);
        assert_eq!(show_value(&v, 8, 4), "[STRING; 1] [\"long\"... (11 bytes)]");
    }
}

// ---- `convert` subcommand (helper "convert") ----

#[derive(Args)]
struct ConvertArgs {
    /// Checkpoint directory: model.safetensors.index.json + shards (or model.safetensors),
    /// config.json, tokenizer.json (tokenizer_config.json optional).
    #[arg(long = "hf", value_name = "DIR")]
    hf: PathBuf,
    /// Main GGUF file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Tensor types: q2 / q4 (the published families), f16 or f32.
    #[arg(long, default_value = "q2")]
    recipe: String,
    /// Also write the MTP block (mtp.0.* tensors) to this GGUF file.
    #[arg(long = "mtp-out", value_name = "FILE")]
    mtp_out: Option<PathBuf>,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No per-tensor progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Ignore checkpoint tensors the ds4 layout does not use (listed as a note) instead
    /// of failing.
    #[arg(long)]
    allow_unused: bool,
}

fn cmd_convert(a: &ConvertArgs, out: &mut impl Write) -> CmdResult {
    use ds4_gguf::convert::{convert, ConvertOptions};
    let recipe = ds4_gguf::layout::Recipe::parse(&a.recipe)
        .ok_or_else(|| format!("unknown recipe {:?}: expected q2, q4, f16 or f32", a.recipe))?;
    let mut opts = ConvertOptions::new(&a.hf, &a.output, recipe);
    opts.mtp_out = a.mtp_out.clone();
    opts.threads = a.threads;
    opts.allow_unused = a.allow_unused;
    let quiet = a.quiet;
    let rep = convert(&opts, &mut |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    })?;
    writeln!(
        out,
        "wrote {}: {} tensors, {} bytes of tensor data, recipe {recipe}",
        a.output.display(),
        rep.tensors,
        thousands(rep.data_bytes)
    )?;
    writeln!(
        out,
        "vocabulary: {:?}, {} layers, n_embd {}, vocab {}",
        rep.vocab, rep.config.n_layer, rep.config.n_embd, rep.config.vocab_size
    )?;
    if let Some(m) = &a.mtp_out {
        writeln!(
            out,
            "wrote {}: {} MTP tensors",
            m.display(),
            rep.mtp_tensors
        )?;
    }
    for n in &rep.notes {
        writeln!(out, "note: {n}")?;
    }
    let mut files = vec![a.output.clone()];
    files.extend(a.mtp_out.clone());
    for p in files {
        let v = ds4_gguf::validate::validate(&GgufFile::open(&p)?);
        writeln!(
            out,
            "validation of {}: {}",
            p.display(),
            if v.is_ok() { "ok" } else { "INVALID" }
        )?;
        if !v.is_ok() {
            return Err(
                format!("{} fails validation: {}", p.display(), v.errors.join("; ")).into(),
            );
        }
    }
    Ok(())
}
