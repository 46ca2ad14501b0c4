//! Validator for DeepSeek V4 Flash GGUF files (spec gguf-layout.md §1, §2, §5, §7).
//!
//! Generic checks apply to every file (published or scaled): key presence and types with
//! ds4's strict getter rules, the architecture, the compress-ratio schedule, the tensor
//! directory derived from the metadata (names, n_dims, dims, types per family, routed
//! gate/up type equality, hash-layer routing tensors, tid2eid values) and the tokenizer
//! keys. When the file claims the real shape (`block_count == 43`, or an MTP file without
//! model keys) the strict published-shape equalities of §5 and ds4's exact per-tensor type
//! rules apply too; a scaled model may use any float or quant type that fits its dims
//! (reported as a warning where ds4 would reject it).

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::layout::{
    expected_mtp_tensors, expected_tensors, keys, type_desc, Family, ModelConfig, Recipe,
    TensorSpec, ARCH, MTP_ARCH, ROUTED_EXPERT_TYPES,
};
use crate::synth::{SPECIAL_TOKENS, SYNTH_SEED_KEY};
use crate::{GgmlType, GgufFile, Value, ValueType};

/// Which file a GGUF matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Published q2 layout (IQ2_XXS gate/up, Q2_K down), no imatrix keys.
    Q2,
    /// Published q2 layout with `quantize.imatrix.*` keys.
    Q2Imatrix,
    /// Published q4 layout (Q4_K experts), no imatrix keys.
    Q4,
    /// Published q4 layout with `quantize.imatrix.*` keys.
    Q4Imatrix,
    /// The MTP (speculative draft) file.
    Mtp,
    /// A scaled-down (or otherwise non-published-shape) main model that passes the
    /// generic checks.
    Scaled,
    /// Does not match any of the above (see the errors).
    Unknown,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Q2 => "q2",
            Variant::Q2Imatrix => "q2-imatrix",
            Variant::Q4 => "q4",
            Variant::Q4Imatrix => "q4-imatrix",
            Variant::Mtp => "mtp",
            Variant::Scaled => "scaled",
            Variant::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The outcome of [`validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationReport {
    /// Problems that make the file unloadable; each names the key or tensor, what was
    /// expected and what was found.
    pub errors: Vec<String>,
    /// Deviations a loader tolerates (extra tensors, types ds4 would reject in a scaled
    /// model, missing optional keys, ...).
    pub warnings: Vec<String>,
    pub variant: Variant,
    /// The metadata claims the published shape, so the strict §5 equalities were applied.
    pub is_published_shape: bool,
    /// The file carries the `ds4rs.synth.seed` key of a synthetic file.
    pub synthetic: bool,
    /// The model config read from the metadata (the published one for an MTP file
    /// without model keys), if it could be read.
    pub config: Option<ModelConfig>,
    /// Per-tensor "type ds4 would reject" notes of a scaled model; summarised into one
    /// warning (the first note plus a count).
    pub lenient: Vec<String>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// One line describing the variant, e.g. `q2 (published shape)` or
    /// `scaled (synthetic, 5 layers, n_embd 256)`.
    pub fn summary(&self) -> String {
        let mut s = self.variant.name().to_string();
        let mut tags = Vec::new();
        if self.synthetic {
            tags.push("synthetic".to_string());
        }
        if self.is_published_shape {
            tags.push("published shape".to_string());
        } else if let Some(c) = &self.config {
            tags.push(format!("{} layers, n_embd {}", c.n_layer, c.n_embd));
        }
        if !tags.is_empty() {
            s.push_str(&format!(" ({})", tags.join(", ")));
        }
        s
    }
}

/// Types a scaled model may use for a tensor of rank ≥ 2 (dims permitting).
const GENERIC_MATRIX_TYPES: [GgmlType; 7] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q4K,
    GgmlType::Iq2Xxs,
];

fn type_list(ts: &[GgmlType]) -> String {
    let names: Vec<&str> = ts.iter().map(|t| t.name()).collect();
    match names.len() {
        0 => String::new(),
        1 => names[0].to_string(),
        n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

/// Validate a GGUF file as a DeepSeek V4 Flash main model or MTP file.
pub fn validate(f: &GgufFile) -> ValidationReport {
    let mut r = ValidationReport {
        errors: Vec::new(),
        warnings: Vec::new(),
        variant: Variant::Unknown,
        is_published_shape: false,
        synthetic: f.get(SYNTH_SEED_KEY).is_some(),
        config: None,
        lenient: Vec::new(),
    };
    let md = f.metadata();

    // ---- architecture and file kind
    let has_mtp_tensors = f.tensors().iter().any(|t| t.name.starts_with("mtp.0."));
    let has_blk_tensors = f.tensors().iter().any(|t| t.name.starts_with("blk."));
    let is_mtp = match f.get(keys::ARCHITECTURE) {
        Some(Value::String(a)) if a == ARCH => false,
        Some(Value::String(a)) if a == MTP_ARCH => true,
        Some(Value::String(a)) => {
            r.errors.push(format!(
                "general.architecture is {a:?}, expected {ARCH:?} (or {MTP_ARCH:?} for the MTP file): not a DeepSeek V4 Flash file"
            ));
            return r;
        }
        Some(v) => {
            r.errors.push(format!(
                "metadata key general.architecture has type {}, expected STRING",
                type_desc(v)
            ));
            return r;
        }
        None => {
            r.warnings.push(format!(
                "general.architecture is absent (ds4 does not read it; llama.cpp needs {ARCH:?})"
            ));
            has_mtp_tensors && !has_blk_tensors
        }
    };

    // ---- model keys
    let has_model_keys = md.iter().any(|(k, _)| k.starts_with(crate::layout::PREFIX));
    let cfg = if is_mtp && !has_model_keys {
        r.warnings.push(
            "MTP file carries no deepseek4.* keys (ds4 reads none from it); checked against the published shape"
                .into(),
        );
        Some(ModelConfig::published())
    } else {
        match ModelConfig::read_all(md) {
            Ok(c) => Some(c),
            Err(es) => {
                r.errors.extend(es.into_iter().map(|e| e.to_string()));
                None
            }
        }
    };
    let Some(cfg) = cfg else {
        return r;
    };
    r.is_published_shape = cfg.claims_published_shape();
    if r.is_published_shape {
        r.errors.extend(cfg.published_mismatches());
    } else {
        if cfg.hc_count != 4 {
            r.warnings.push(format!(
                "hyper_connection.count={} (ds4 hard-wires 4 streams and 24-wide mix buffers)",
                cfg.hc_count
            ));
        }
        if cfg.indexer_head_dim != 128 {
            r.warnings.push(format!(
                "attention.indexer.key_length={} (ds4's indexer applies a fixed 128-point Hadamard)",
                cfg.indexer_head_dim
            ));
        }
        let n = cfg.n_layer as usize;
        let alternating = cfg.compress_ratios[..n]
            .iter()
            .enumerate()
            .all(|(l, &got)| {
                let want = crate::layout::published_ratio(l as u32);
                got == want || (want == 128 && got != 0 && got != crate::layout::CSA_RATIO)
            });
        if !alternating {
            r.warnings.push(format!(
                "attention.compress_ratios {:?} does not follow the published pattern 0, 0, then 4 / HCA alternating",
                &cfg.compress_ratios[..n]
            ));
        }
    }
    if !is_mtp {
        check_tokenizer(f, &cfg, &mut r);
    }

    // ---- tensor directory
    let specs = if is_mtp {
        expected_mtp_tensors(&cfg, Recipe::Q4)
    } else {
        expected_tensors(&cfg, Recipe::Q2)
    };
    check_tensors(f, &cfg, &specs, r.is_published_shape, is_mtp, &mut r);
    match r.lenient.len() {
        0 => {}
        1 => r.warnings.push(r.lenient[0].clone()),
        n => r.warnings.push(format!(
            "{}; and {} more tensors with types ds4 rejects",
            r.lenient[0],
            n - 1
        )),
    }

    // ---- variant
    r.config = Some(cfg.clone());
    r.variant = if !r.errors.is_empty() {
        Variant::Unknown
    } else if is_mtp {
        Variant::Mtp
    } else if !r.is_published_shape {
        Variant::Scaled
    } else {
        let imatrix = md.iter().any(|(k, _)| k.starts_with(keys::IMATRIX_PREFIX));
        let ty = |n: String| f.tensor(&n).and_then(|t| t.ggml_type);
        let all = |gate: GgmlType, down: GgmlType| {
            (0..cfg.n_layer).all(|l| {
                ty(format!("blk.{l}.ffn_gate_exps.weight")) == Some(gate)
                    && ty(format!("blk.{l}.ffn_up_exps.weight")) == Some(gate)
                    && ty(format!("blk.{l}.ffn_down_exps.weight")) == Some(down)
            })
        };
        if all(GgmlType::Iq2Xxs, GgmlType::Q2K) {
            if imatrix {
                Variant::Q2Imatrix
            } else {
                Variant::Q2
            }
        } else if all(GgmlType::Q4K, GgmlType::Q4K) {
            if imatrix {
                Variant::Q4Imatrix
            } else {
                Variant::Q4
            }
        } else {
            r.warnings.push(
                "routed expert types match neither the q2 (IQ2_XXS gate/up, Q2_K down) nor the q4 (Q4_K) family"
                    .into(),
            );
            Variant::Unknown
        }
    };
    r
}

fn check_tokenizer(f: &GgufFile, cfg: &ModelConfig, r: &mut ValidationReport) {
    let string_array = |key: &str, r: &mut ValidationReport| -> Option<Vec<String>> {
        match f.get(key) {
            None => {
                r.errors.push(format!(
                    "required metadata key {key} is missing (expected ARRAY of STRING)"
                ));
                None
            }
            Some(Value::Array(ValueType::String, items)) => Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            Some(v) => {
                r.errors.push(format!(
                    "metadata key {key} has type {}, expected ARRAY of STRING",
                    type_desc(v)
                ));
                None
            }
        }
    };
    if let Some(tokens) = string_array(keys::TOKENS, r) {
        if tokens.len() as u64 != cfg.vocab_size as u64 {
            r.errors.push(format!(
                "{} has {} entries, expected vocab_size={}",
                keys::TOKENS,
                tokens.len(),
                cfg.vocab_size
            ));
        }
        let set: HashSet<&str> = tokens.iter().map(String::as_str).collect();
        for s in SPECIAL_TOKENS {
            if !set.contains(s) {
                r.errors
                    .push(format!("required tokenizer token is missing: {s}"));
            }
        }
    }
    if let Some(merges) = string_array(keys::MERGES, r) {
        if let Some((i, m)) = merges
            .iter()
            .enumerate()
            .find(|(_, m)| m.split(' ').count() != 2)
        {
            r.warnings.push(format!(
                "{} entry {i} ({m:?}) is not \"LEFT RIGHT\"",
                keys::MERGES
            ));
        }
    }
}

fn check_tensors(
    f: &GgufFile,
    cfg: &ModelConfig,
    specs: &[TensorSpec],
    strict: bool,
    is_mtp: bool,
    r: &mut ValidationReport,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in f.tensors() {
        *seen.entry(t.name.as_str()).or_default() += 1;
    }
    for (name, n) in &seen {
        if *n > 1 {
            r.warnings.push(format!(
                "tensor {name} appears {n} times (the first one is used)"
            ));
        }
    }
    let expected: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();

    for s in specs {
        let Some(t) = f.tensor(&s.name) else {
            r.errors
                .push(format!("required tensor is missing: {}", s.name));
            continue;
        };
        if t.dims.len() != s.dims.len() {
            r.errors.push(format!(
                "tensor {} has {} dimensions, expected {} (dims {:?}, expected {:?})",
                s.name,
                t.dims.len(),
                s.dims.len(),
                t.dims,
                s.dims
            ));
        } else {
            for (i, (&got, &want)) in t.dims.iter().zip(&s.dims).enumerate() {
                if got != want {
                    r.errors.push(format!(
                        "tensor {} has dim[{i}]={got}, expected {want}",
                        s.name
                    ));
                }
            }
        }
        let Some(ty) = t.ggml_type else {
            r.errors.push(format!(
                "tensor {} has unknown GGUF type {}, expected {}",
                s.name,
                t.type_id,
                type_list(&s.allowed)
            ));
            continue;
        };
        check_type(s, t.dims.first().copied().unwrap_or(0), ty, strict, r);
    }

    // routed gate/up equality and tid2eid contents
    let prefixes: Vec<(String, String)> = if is_mtp {
        vec![("mtp.0.".into(), "MTP".into())]
    } else {
        (0..cfg.n_layer)
            .map(|l| (format!("blk.{l}."), format!("layer {l}")))
            .collect()
    };
    for (p, what) in &prefixes {
        let gate = f.tensor(&format!("{p}ffn_gate_exps.weight"));
        let up = f.tensor(&format!("{p}ffn_up_exps.weight"));
        if let (Some(g), Some(u)) = (gate, up) {
            if g.type_id != u.type_id {
                r.errors.push(format!(
                    "routed gate/up experts use different quant types in {what}: gate {}, up {}",
                    tname(g.ggml_type, g.type_id),
                    tname(u.ggml_type, u.type_id)
                ));
            }
        }
    }
    if !is_mtp {
        for l in 0..cfg.n_layer {
            let kind = cfg.layer_kind(l);
            let bias = format!("blk.{l}.exp_probs_b.bias");
            if kind.hash && f.tensor(&bias).is_some() {
                r.errors.push(format!(
                    "tensor {bias} is present in hash layer {l} (hash layers route by ffn_gate_tid2eid and have no selection bias)"
                ));
            }
            if kind.hash {
                check_tid2eid(f, cfg, l, r);
            }
        }
    }

    // extra tensors
    let mut extra: Vec<&str> = seen
        .keys()
        .copied()
        .filter(|n| !expected.contains(n) && !n.ends_with("exp_probs_b.bias"))
        .collect();
    extra.sort();
    for n in extra {
        r.warnings.push(format!(
            "unexpected tensor {n} (not part of the layout; ignored by ds4)"
        ));
    }
}

fn tname(t: Option<GgmlType>, id: u32) -> String {
    t.map(|t| t.name().to_string())
        .unwrap_or_else(|| format!("type {id}"))
}

fn check_type(s: &TensorSpec, ne0: u64, ty: GgmlType, strict: bool, r: &mut ValidationReport) {
    let name = &s.name;
    let be = ty.block_elems() as u64;
    if !ne0.is_multiple_of(be) {
        r.errors.push(format!(
            "tensor {name} has type {ty} whose {be}-element blocks do not divide its row length ne0={ne0}"
        ));
        return;
    }
    if s.allowed.contains(&ty) {
        return;
    }
    let ds4_expect = if s.family.is_routed_expert() {
        format!(
            "a routed expert quant type ({})",
            type_list(&ROUTED_EXPERT_TYPES)
        )
    } else {
        type_list(&s.allowed)
    };
    let generic_ok = match s.family {
        Family::Tid2Eid => ty == GgmlType::I32,
        _ if s.dims.len() == 1 => ty == GgmlType::F32,
        _ => GENERIC_MATRIX_TYPES.contains(&ty),
    };
    if strict || !generic_ok {
        r.errors.push(format!(
            "tensor {name} has type {ty}, expected {ds4_expect}"
        ));
    } else {
        r.lenient.push(format!(
            "tensor {name} has type {ty}; ds4 expects {ds4_expect} (accepted for a scaled model)"
        ));
    }
}

fn check_tid2eid(f: &GgufFile, cfg: &ModelConfig, l: u32, r: &mut ValidationReport) {
    let name = format!("blk.{l}.ffn_gate_tid2eid.weight");
    let Some(t) = f.tensor(&name) else { return };
    let used = cfg.n_expert_used as usize;
    if t.ggml_type != Some(GgmlType::I32)
        || t.dims != [cfg.n_expert_used as u64, cfg.vocab_size as u64]
        || used == 0
    {
        return; // reported by the type/dims checks
    }
    let data = f.tensor_data(t);
    let mut dup_rows = 0u64;
    let mut row = Vec::with_capacity(used);
    for (tok, chunk) in data.chunks_exact(4 * used).enumerate() {
        row.clear();
        for c in chunk.chunks_exact(4) {
            row.push(i32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        if let Some(&bad) = row
            .iter()
            .find(|&&e| e < 0 || e as u64 >= cfg.n_expert as u64)
        {
            r.errors.push(format!(
                "tensor {name} row {tok} holds expert id {bad}, expected a value in [0, {})",
                cfg.n_expert
            ));
            return;
        }
        row.sort_unstable();
        if row.windows(2).any(|w| w[0] == w[1]) {
            dup_rows += 1;
        }
    }
    if dup_rows > 0 {
        r.warnings.push(format!(
            "tensor {name} has {dup_rows} rows that repeat an expert id"
        ));
    }
}
