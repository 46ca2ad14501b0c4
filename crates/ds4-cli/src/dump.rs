//! Diagnostics: `--dump-tokens`, `--dump-logprobs`, `--dump-logits`,
//! `--dump-prompt` (spec §3.1-3.2, output formats of ds4.c).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ds4_engine::Model;
use ds4_tokenizer::Tokenizer;

/// `--dump-tokens`: the text tokenized as written (special strings become
/// their ids), `[id, id, …]` then one `%6d  <vocab string>` line per token.
pub fn dump_tokens(tok: &Tokenizer, text: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let ids = tok.encode(text);
    let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    writeln!(out, "[{}]", list.join(", "))?;
    for &id in &ids {
        if let Some(s) = tok.token_string(id) {
            writeln!(out, "{id:6}  {s}")?;
        }
    }
    Ok(())
}

/// Parses token ids separated by commas and/or whitespace (optionally
/// wrapped in `[` `]`, as `--dump-tokens` prints them).
pub fn parse_ids(text: &str, vocab: usize) -> Result<Vec<u32>> {
    let body = text.trim();
    let body = body
        .strip_prefix('[')
        .map(|b| b.strip_suffix(']').unwrap_or(b))
        .unwrap_or(body);
    let mut ids = Vec::new();
    for (i, part) in body
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let id: u32 = part
            .parse()
            .with_context(|| format!("token #{i}: {part:?} is not a token id"))?;
        if id as usize >= vocab {
            bail!("token #{i}: id {id} is outside the vocabulary (0..{vocab})");
        }
        ids.push(id);
    }
    if ids.is_empty() {
        bail!("no token ids found");
    }
    Ok(ids)
}

/// `--dump-logits`: evaluates exactly `ids` with the model file and writes
/// every position's logits as float32 `.npy` `[T, vocab]`.
pub fn dump_logits(
    model_path: &Path,
    ids: &[u32],
    numerics: ds4_model::Numerics,
    out: &Path,
) -> Result<()> {
    ds4_model::dump_logits(model_path, ids, numerics, out)
        .with_context(|| format!("dumping logits to {}", out.display()))
}

/// `--dump-prompt`: the exact prompt text of an OpenAI chat request body.
pub fn dump_prompt(request: &Path, ctx: usize) -> Result<String> {
    let bytes = fs::read(request).with_context(|| format!("reading {}", request.display()))?;
    ds4_chat::dump_prompt(&bytes, ctx).map_err(|e| anyhow::anyhow!("{}: {e}", request.display()))
}

/// C's `printf("%.*g", prec, v)`.
pub fn fmt_g(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return if v.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    let p = prec.max(1);
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Exponent after rounding to p significant digits.
    let e_repr = format!("{:.*e}", p - 1, v);
    let (mant, exp) = e_repr.split_once('e').expect("exponent form");
    let x: i32 = exp.parse().expect("exponent");
    if x < -4 || x >= p as i32 {
        let mant = strip_zeros(mant);
        let sign = if x < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", x.abs())
    } else {
        let decimals = (p as i32 - 1 - x).max(0) as usize;
        strip_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// ds4.c's `json_write_string`: `"` `\` escaped, `\n` `\r` `\t`, other
/// controls as `\u00XX`; when the bytes are not valid UTF-8, every byte
/// ≥ 0x80 is written as `\u00XX` (the `bytes` array is authoritative).
pub fn json_token_text(bytes: &[u8]) -> String {
    let valid = std::str::from_utf8(bytes).is_ok();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len() + 2);
    out.push(b'"');
    for &c in bytes {
        match c {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(c);
            }
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 || (!valid && c >= 0x80) => {
                out.extend_from_slice(format!("\\u{:04x}", c).as_bytes())
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
    // Valid: either the input was valid UTF-8 or every high byte was escaped.
    String::from_utf8(out).expect("escaped JSON text is UTF-8")
}

fn json_token(tok: &Tokenizer, id: u32) -> String {
    let bytes = tok.token_bytes(id).unwrap_or(&[]);
    let list: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
    format!(
        "{{\"id\":{id},\"text\":{},\"bytes\":[{}]}}",
        json_token_text(bytes),
        list.join(",")
    )
}

/// One alternative of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub id: u32,
    pub logit: f32,
    pub logprob: f32,
}

/// ds4.c's `ds4_session_top_logprobs`: the `k` largest finite logits (first
/// index wins ties), with log-probabilities from a float64 log-sum-exp.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<Scored> {
    let k = k.min(logits.len());
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    let mut max = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        if v > max {
            max = v;
        }
        if top.len() == k && top.last().is_some_and(|&(_, w)| v <= w) {
            continue;
        }
        let at = top.iter().position(|&(_, w)| v > w).unwrap_or(top.len());
        top.insert(at, (i as u32, v));
        top.truncate(k);
    }
    if !max.is_finite() {
        return Vec::new();
    }
    let sum: f64 = logits
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v as f64 - max as f64).exp())
        .sum();
    let logsum = max as f64 + sum.ln();
    top.into_iter()
        .map(|(id, logit)| Scored {
            id,
            logit,
            logprob: (logit as f64 - logsum) as f32,
        })
        .collect()
}

/// `--dump-logprobs`: a greedy run from `prompt` writing ds4.c's JSON.
/// Stops after the EOS step or `max_tokens` steps (clamped to the context).
pub fn dump_logprobs(
    model: &dyn Model,
    tok: &Tokenizer,
    prompt: &[u32],
    ctx: usize,
    max_tokens: usize,
    top_k: usize,
    out: &Path,
) -> Result<usize> {
    if prompt.is_empty() {
        bail!("empty prompt");
    }
    if prompt.len() >= ctx {
        bail!(
            "prompt has {} tokens, but the context size is {ctx} tokens",
            prompt.len()
        );
    }
    let k = top_k.clamp(1, 128);
    let mut session = model
        .new_session(ctx)
        .map_err(|e| anyhow::anyhow!("creating a session: {e}"))?;
    let mut logits = session
        .eval(prompt, true)
        .map_err(|e| anyhow::anyhow!("prompt processing failed: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("the model returned no logits"))?;
    let room = ctx - prompt.len();
    let max_tokens = if room <= 1 {
        0
    } else {
        max_tokens.min(room - 1)
    };
    let mut json = format!(
        "{{\n  \"source\":\"ds4\",\n  \"prompt_tokens\":{},\n  \"ctx\":{ctx},\n  \"top_k\":{k},\n  \"steps\":[\n",
        prompt.len()
    );
    let eos = tok.eos_id();
    let mut steps = 0;
    for step in 0..max_tokens {
        let scores = top_logprobs(&logits, k);
        let token = ds4_engine::sampling::argmax(&logits);
        if step > 0 {
            json.push_str(",\n");
        }
        json.push_str(&format!(
            "    {{\"step\":{step},\"selected\":{},\"top_logprobs\":[",
            json_token(tok, token)
        ));
        for (i, s) in scores.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!(
                "{{\"token\":{},\"logit\":{},\"logprob\":{}}}",
                json_token(tok, s.id),
                fmt_g(s.logit as f64, 9),
                fmt_g(s.logprob as f64, 9)
            ));
        }
        json.push_str("]}");
        steps += 1;
        if token == eos {
            break;
        }
        logits = session
            .eval(&[token], true)
            .map_err(|e| anyhow::anyhow!("decode failed while dumping logprobs: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("the model returned no logits"))?;
    }
    json.push_str("\n  ]\n}\n");
    fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
    Ok(steps)
}

/// Tokens of context before `--perplexity-file` starts scoring (ds4.c).
pub const PERPLEXITY_PREFIX: usize = 32;

/// Result of `--perplexity-file`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    pub tokens: usize,
    pub scored: usize,
    pub nll: f64,
}

impl Perplexity {
    pub fn avg_nll(&self) -> f64 {
        self.nll / self.scored as f64
    }
    pub fn ppl(&self) -> f64 {
        self.avg_nll().exp()
    }
    /// ds4.c's output line.
    pub fn line(&self) -> String {
        format!(
            "tokens={} scored={} nll={:.9} avg_nll={:.9} ppl={:.9}",
            self.tokens,
            self.scored,
            self.nll,
            self.avg_nll(),
            self.ppl()
        )
    }
}

/// Log-probability of `id` under `logits` (f64 log-sum-exp over the finite logits).
pub fn token_logprob(logits: &[f32], id: u32) -> Option<f64> {
    let max = logits
        .iter()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let v = *logits.get(id as usize)?;
    if !max.is_finite() || !v.is_finite() {
        return None;
    }
    let sum: f64 = logits
        .iter()
        .filter(|v| v.is_finite())
        .map(|&x| (x as f64 - max as f64).exp())
        .sum();
    Some(v as f64 - (max as f64 + sum.ln()))
}

/// `--perplexity-file`: the text as plain BPE; the first
/// [`PERPLEXITY_PREFIX`] tokens are context, the following ones (at most
/// `max_tokens`, and what fits in `ctx`) are scored.
pub fn perplexity(
    model: &dyn Model,
    tok: &Tokenizer,
    text: &str,
    ctx: usize,
    max_tokens: usize,
) -> Result<Perplexity> {
    let ids = tok.encode_ordinary(text);
    if ids.len() <= PERPLEXITY_PREFIX {
        bail!(
            "--perplexity-file needs more than {PERPLEXITY_PREFIX} tokens (the file has {})",
            ids.len()
        );
    }
    let scored = (ids.len() - PERPLEXITY_PREFIX)
        .min(max_tokens)
        .min(ctx.saturating_sub(PERPLEXITY_PREFIX));
    if scored == 0 {
        bail!("context too small for perplexity scoring");
    }
    let mut session = model
        .new_session(ctx)
        .map_err(|e| anyhow::anyhow!("creating a session: {e}"))?;
    let mut logits = session
        .eval(&ids[..PERPLEXITY_PREFIX], true)
        .map_err(|e| anyhow::anyhow!("perplexity context failed: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("the model returned no logits"))?;
    let mut nll = 0.0;
    for j in 0..scored {
        let i = PERPLEXITY_PREFIX + j;
        let lp = token_logprob(&logits, ids[i])
            .ok_or_else(|| anyhow::anyhow!("failed to score token {i}"))?;
        nll -= lp;
        if j + 1 < scored {
            logits = session
                .eval(&ids[i..i + 1], true)
                .map_err(|e| anyhow::anyhow!("perplexity decode failed at token {i}: {e}"))?
                .ok_or_else(|| anyhow::anyhow!("the model returned no logits"))?;
        }
    }
    Ok(Perplexity {
        tokens: ids.len(),
        scored,
        nll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_g_matches_printf() {
        // Expected strings are what glibc printf("%.9g") prints.
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (123456789.0, "123456789"),
            (1234567890.0, "1.23456789e+09"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.000123456789012, "-0.000123456789"),
            (std::f64::consts::PI, "3.14159265"),
            (-11.8607178, "-11.8607178"),
            (99999999.95, "100000000"),
            (999999999.5, "1e+09"),
            (1e100, "1e+100"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for &(v, want) in cases {
            assert_eq!(fmt_g(v, 9), want, "{v}");
        }
        assert_eq!(fmt_g(0.5, 1), "0.5");
        assert_eq!(fmt_g(1234.0, 2), "1.2e+03");
    }

    #[test]
    fn token_text_escapes() {
        assert_eq!(
            json_token_text(b"a\"b\\\n\t\x01"),
            "\"a\\\"b\\\\\\n\\t\\u0001\""
        );
        assert_eq!(json_token_text("é".as_bytes()), "\"é\"");
        assert_eq!(
            json_token_text(&[0xF0, 0x9F, 0x8E]),
            "\"\\u00f0\\u009f\\u008e\""
        );
    }

    #[test]
    fn ids_parse() {
        assert_eq!(parse_ids("1, 2,3\n 4\t5", 10).unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(parse_ids("[0, 9]\n", 10).unwrap(), vec![0, 9]);
        assert!(parse_ids("1 10", 10)
            .unwrap_err()
            .to_string()
            .contains("outside"));
        assert!(parse_ids("1 x", 10)
            .unwrap_err()
            .to_string()
            .contains("not a token id"));
        assert!(parse_ids(" \n", 10).is_err());
    }

    #[test]
    fn top_logprobs_is_log_softmax() {
        let logits = [1.0f32, 3.0, f32::NAN, 3.0, -1.0, f32::NEG_INFINITY];
        let t = top_logprobs(&logits, 3);
        assert_eq!(t.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 3, 0]);
        let z: f64 = [1.0f64, 3.0, 3.0, -1.0].iter().map(|v| v.exp()).sum();
        for s in &t {
            let want = (s.logit as f64).exp() / z;
            assert!(((s.logprob as f64).exp() - want).abs() < 1e-6);
        }
        assert!(top_logprobs(&[f32::NAN], 2).is_empty());
    }

    #[test]
    fn dump_tokens_format() {
        let tok = Tokenizer::shared_v4();
        let mut out = Vec::new();
        dump_tokens(
            tok,
            "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜></think>",
            &mut out,
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        let mut lines = s.lines();
        // spec chat-and-tools.md §1.8
        assert_eq!(
            lines.next().unwrap(),
            "[0, 128803, 3085, 344, 223, 20, 13, 20, 33, 128804, 128822]"
        );
        assert_eq!(lines.next().unwrap(), "     0  <｜begin▁of▁sentence｜>");
        assert_eq!(lines.nth(1).unwrap(), "  3085  What");
        assert_eq!(lines.next().unwrap(), "   344  Ġis");
        assert_eq!(s.lines().count(), 12);
    }
}
