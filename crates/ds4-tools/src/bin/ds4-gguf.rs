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
