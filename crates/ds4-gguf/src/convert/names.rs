//! Official DeepSeek checkpoint names ↔ ds4 GGUF names (spec gguf-layout.md §4.1, §4.2).

/// Global tensors: (GGUF name, HF name).
pub const TOP_MAP: [(&str, &str); 6] = [
    ("token_embd.weight", "embed.weight"),
    ("output_norm.weight", "norm.weight"),
    ("output.weight", "head.weight"),
    ("output_hc_base.weight", "hc_head_base"),
    ("output_hc_fn.weight", "hc_head_fn"),
    ("output_hc_scale.weight", "hc_head_scale"),
];

/// Per-layer tensors (also used for the MTP block): (GGUF suffix, HF suffix).
pub const LAYER_MAP: [(&str, &str); 32] = [
    ("hc_attn_base.weight", "hc_attn_base"),
    ("hc_attn_fn.weight", "hc_attn_fn"),
    ("hc_attn_scale.weight", "hc_attn_scale"),
    ("hc_ffn_base.weight", "hc_ffn_base"),
    ("hc_ffn_fn.weight", "hc_ffn_fn"),
    ("hc_ffn_scale.weight", "hc_ffn_scale"),
    ("attn_sinks.weight", "attn.attn_sink"),
    ("attn_q_a.weight", "attn.wq_a.weight"),
    ("attn_q_b.weight", "attn.wq_b.weight"),
    ("attn_q_a_norm.weight", "attn.q_norm.weight"),
    ("attn_kv.weight", "attn.wkv.weight"),
    ("attn_kv_a_norm.weight", "attn.kv_norm.weight"),
    ("attn_output_a.weight", "attn.wo_a.weight"),
    ("attn_output_b.weight", "attn.wo_b.weight"),
    ("attn_compressor_ape.weight", "attn.compressor.ape"),
    ("attn_compressor_kv.weight", "attn.compressor.wkv.weight"),
    (
        "attn_compressor_gate.weight",
        "attn.compressor.wgate.weight",
    ),
    ("attn_compressor_norm.weight", "attn.compressor.norm.weight"),
    ("indexer.attn_q_b.weight", "attn.indexer.wq_b.weight"),
    ("indexer.proj.weight", "attn.indexer.weights_proj.weight"),
    (
        "indexer_compressor_ape.weight",
        "attn.indexer.compressor.ape",
    ),
    (
        "indexer_compressor_kv.weight",
        "attn.indexer.compressor.wkv.weight",
    ),
    (
        "indexer_compressor_gate.weight",
        "attn.indexer.compressor.wgate.weight",
    ),
    (
        "indexer_compressor_norm.weight",
        "attn.indexer.compressor.norm.weight",
    ),
    ("attn_norm.weight", "attn_norm.weight"),
    ("ffn_norm.weight", "ffn_norm.weight"),
    ("ffn_gate_shexp.weight", "ffn.shared_experts.w1.weight"),
    ("ffn_up_shexp.weight", "ffn.shared_experts.w3.weight"),
    ("ffn_down_shexp.weight", "ffn.shared_experts.w2.weight"),
    ("ffn_gate_inp.weight", "ffn.gate.weight"),
    ("exp_probs_b.bias", "ffn.gate.bias"),
    ("ffn_gate_tid2eid.weight", "ffn.gate.tid2eid"),
];

/// Routed experts: (GGUF suffix, HF weight id). w1 = gate, w3 = up, w2 = down.
pub const EXPERT_MAP: [(&str, &str); 3] = [
    ("ffn_gate_exps.weight", "w1"),
    ("ffn_up_exps.weight", "w3"),
    ("ffn_down_exps.weight", "w2"),
];

/// Tensors only the MTP block has: (GGUF suffix, HF suffix), both under `mtp.0.`.
pub const MTP_EXTRA: [(&str, &str); 8] = [
    ("e_proj.weight", "e_proj.weight"),
    ("h_proj.weight", "h_proj.weight"),
    ("enorm.weight", "enorm.weight"),
    ("hnorm.weight", "hnorm.weight"),
    ("norm.weight", "norm.weight"),
    ("hc_head_fn.weight", "hc_head_fn"),
    ("hc_head_base.weight", "hc_head_base"),
    ("hc_head_scale.weight", "hc_head_scale"),
];

/// Where a GGUF tensor comes from in the official checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HfRef {
    /// One tensor (an FP8 `*.weight` also has its `*.scale` sibling).
    Tensor(String),
    /// Per-expert tensors `{prefix}.{E}.{wid}.weight` (+ `.scale`), stacked in expert order.
    Experts { prefix: String, wid: &'static str },
}

/// The HF-side prefix and GGUF suffix of a per-layer/MTP GGUF name.
fn split_block(gguf: &str) -> Option<(String, &str, bool)> {
    if let Some(rest) = gguf.strip_prefix("blk.") {
        let (l, suffix) = rest.split_once('.')?;
        if l.is_empty()
            || !l.bytes().all(|b| b.is_ascii_digit())
            || (l.len() > 1 && l.starts_with('0'))
        {
            return None;
        }
        return Some((format!("layers.{l}."), suffix, false));
    }
    if let Some(rest) = gguf.strip_prefix("mtp.") {
        let (l, suffix) = rest.split_once('.')?;
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return Some((format!("mtp.{l}."), suffix, true));
    }
    None
}

/// The checkpoint source of a GGUF tensor name, None for a name outside the layout.
pub fn gguf_to_hf(gguf: &str) -> Option<HfRef> {
    if let Some((_, hf)) = TOP_MAP.iter().find(|(g, _)| *g == gguf) {
        return Some(HfRef::Tensor(hf.to_string()));
    }
    let (hf_prefix, suffix, mtp) = split_block(gguf)?;
    if let Some((_, hf)) = LAYER_MAP.iter().find(|(g, _)| *g == suffix) {
        return Some(HfRef::Tensor(format!("{hf_prefix}{hf}")));
    }
    if let Some((_, wid)) = EXPERT_MAP.iter().find(|(g, _)| *g == suffix) {
        return Some(HfRef::Experts {
            prefix: format!("{hf_prefix}ffn.experts"),
            wid,
        });
    }
    if mtp {
        if let Some((_, hf)) = MTP_EXTRA.iter().find(|(g, _)| *g == suffix) {
            return Some(HfRef::Tensor(format!("{hf_prefix}{hf}")));
        }
    }
    None
}

/// HF name of expert `e` of an [`HfRef::Experts`] source.
pub fn expert_weight_name(prefix: &str, e: u64, wid: &str) -> String {
    format!("{prefix}.{e}.{wid}.weight")
}

/// The sibling block-scale name of an HF weight (`x.weight` → `x.scale`).
pub fn scale_name(weight: &str) -> Option<String> {
    weight
        .strip_suffix(".weight")
        .map(|base| format!("{base}.scale"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_globals_layers_experts_and_mtp() {
        assert_eq!(
            gguf_to_hf("token_embd.weight"),
            Some(HfRef::Tensor("embed.weight".into()))
        );
        assert_eq!(
            gguf_to_hf("blk.12.attn_q_a.weight"),
            Some(HfRef::Tensor("layers.12.attn.wq_a.weight".into()))
        );
        assert_eq!(
            gguf_to_hf("blk.3.exp_probs_b.bias"),
            Some(HfRef::Tensor("layers.3.ffn.gate.bias".into()))
        );
        assert_eq!(
            gguf_to_hf("blk.0.ffn_down_exps.weight"),
            Some(HfRef::Experts {
                prefix: "layers.0.ffn.experts".into(),
                wid: "w2"
            })
        );
        assert_eq!(
            gguf_to_hf("mtp.0.e_proj.weight"),
            Some(HfRef::Tensor("mtp.0.e_proj.weight".into()))
        );
        assert_eq!(
            gguf_to_hf("mtp.0.hc_head_fn.weight"),
            Some(HfRef::Tensor("mtp.0.hc_head_fn".into()))
        );
        assert_eq!(
            gguf_to_hf("mtp.0.indexer.proj.weight"),
            Some(HfRef::Tensor(
                "mtp.0.attn.indexer.weights_proj.weight".into()
            ))
        );
        // MTP-only names do not exist per layer; padded/unknown names map to nothing.
        assert_eq!(gguf_to_hf("blk.0.e_proj.weight"), None);
        assert_eq!(gguf_to_hf("blk.01.attn_norm.weight"), None);
        assert_eq!(gguf_to_hf("blk.x.attn_norm.weight"), None);
        assert_eq!(gguf_to_hf("nonsense"), None);
        assert_eq!(
            scale_name("layers.0.attn.wq_a.weight").as_deref(),
            Some("layers.0.attn.wq_a.scale")
        );
        assert_eq!(scale_name("hc_head_fn"), None);
    }
}
