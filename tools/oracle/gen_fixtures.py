#!/usr/bin/env python3
"""Generate the exact-mode oracle fixtures of crates/ds4-model.

For each fixture the Rust generator (`cargo run --example tiny_weights`) writes
a deterministic random-weight tiny DeepSeek V4 model from a seed; this script
loads those weights into transformers' DeepseekV4ForCausalLM (float32, CPU,
eager attention), runs one full-sequence forward over a fixed token sequence
and stores the logits of every position plus the weights' fingerprint.

Usage: python tools/oracle/gen_fixtures.py [a] [b]
Needs: pip install -r tools/oracle/requirements.txt ; cargo on PATH.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
from transformers.masking_utils import create_sliding_window_causal_mask
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mdv4

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "crates", "ds4-model", "tests", "fixtures")

# fixtures that also get MTP-block logits
MTP_FIXTURES = ("a",)

# name -> (seed, number of tokens)
FIXTURE_SPECS = {
    "a": (1234, 100),
    "b": (5678, 2200),
    "c": (4242, 160),
}

# fixtures whose weights come from a GGUF written by ds4_gguf::synth, read with gguf-py
GGUF_FIXTURES = ("c",)


def run_generator(which, seed, out_dir):
    cmd = ["cargo", "run", "-q", "-p", "ds4-model", "--release", "--example", "tiny_weights", "--", which, str(seed), out_dir]
    subprocess.run(cmd, cwd=os.environ.get("DS4_WORKSPACE", ROOT), check=True)
    with open(os.path.join(out_dir, "manifest.json")) as f:
        manifest = json.load(f)
    blob = np.fromfile(os.path.join(out_dir, "weights.bin"), dtype=np.uint8)
    tensors = {}
    for name, e in manifest["tensors"].items():
        raw = blob[e["offset"]: e["offset"] + e["bytes"]]
        dt = {"F32": np.float32, "I32": np.int32}[e["type"]]
        # GGUF dims are fastest-first; numpy wants the reverse
        tensors[name] = raw.view(dt).reshape(list(reversed(e["dims"]))).copy()
    return manifest, tensors


def run_synth(seed, out_dir):
    path = os.path.join(out_dir, "synth.gguf")
    cmd = ["cargo", "run", "-q", "-p", "ds4-model", "--release", "--example", "synth_oracle", "--", str(seed), path]
    res = subprocess.run(cmd, cwd=os.environ.get("DS4_WORKSPACE", ROOT), check=True, capture_output=True, text=True)
    manifest = json.loads(res.stdout)
    import gguf  # gguf-py, the reference GGUF reader

    reader = gguf.GGUFReader(path)
    tensors = {}
    for t in reader.tensors:
        if t.tensor_type == gguf.GGMLQuantizationType.F32 or t.tensor_type == gguf.GGMLQuantizationType.I32:
            tensors[t.name] = np.array(t.data).copy()  # gguf-py already reverses the dims
        else:
            raise SystemExit(f"{t.name}: type {t.tensor_type.name}; fixture C expects the F32 recipe")
    return manifest, tensors


def hf_config(c):
    types = []
    for r in c["compress_ratios"]:
        types.append({0: "sliding_attention", 4: "compressed_sparse_attention"}.get(r, "heavily_compressed_attention"))
    hca = sorted({r for r in c["compress_ratios"] if r not in (0, 4)})
    assert len(hca) <= 1, "transformers has one HCA rate per model"
    assert len(set(c["swiglu_limit"])) == 1, "transformers has one swiglu limit per model"
    return DeepseekV4Config(
        vocab_size=c["vocab"],
        hidden_size=c["dim"],
        num_hidden_layers=c["n_layers"],
        num_attention_heads=c["n_heads"],
        num_key_value_heads=1,
        head_dim=c["head_dim"],
        qk_rope_head_dim=c["rope_dim"],
        q_lora_rank=c["q_lora"],
        o_groups=c["o_groups"],
        o_lora_rank=c["o_lora"],
        n_routed_experts=c["n_experts"],
        num_experts_per_tok=c["n_experts_used"],
        n_shared_experts=1,
        moe_intermediate_size=c["ffn_dim"],
        routed_scaling_factor=c["routed_scale"],
        swiglu_limit=c["swiglu_limit"][0],
        num_hash_layers=c["n_hash"],
        sliding_window=c["window"],
        layer_types=types,
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": hca[0] if hca else 128},
        index_n_heads=c["idx_heads"],
        index_head_dim=c["idx_dim"],
        index_topk=c["idx_topk"],
        hc_mult=c["n_hc"],
        hc_sinkhorn_iters=c["sinkhorn_iters"],
        hc_eps=c["hc_eps"],
        rms_norm_eps=c["rms_eps"],
        rope_theta=c["rope_theta"],
        compress_rope_theta=c["compress_rope_theta"],
        rope_parameters={
            "rope_type": "yarn",
            "factor": c["yarn_factor"],
            "original_max_position_embeddings": c["yarn_orig_ctx"],
            "beta_fast": c["yarn_beta_fast"],
            "beta_slow": c["yarn_beta_slow"],
        },
        max_position_embeddings=1048576,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )


def layer_state_dict(c, t, src_prefix, dst_prefix, ratio, hash_layer):
    """GGUF tensors of one block -> transformers DeepseekV4DecoderLayer parameters."""
    b = lambda s: t[src_prefix + s]
    p = dst_prefix
    sd = {}
    for hc, g in (("attn_hc", "hc_attn"), ("ffn_hc", "hc_ffn")):
        sd[p + hc + ".fn"] = b(f"{g}_fn.weight")
        sd[p + hc + ".base"] = b(f"{g}_base.weight")
        sd[p + hc + ".scale"] = b(f"{g}_scale.weight")
    sd[p + "input_layernorm.weight"] = b("attn_norm.weight")
    sd[p + "post_attention_layernorm.weight"] = b("ffn_norm.weight")
    a = p + "self_attn."
    sd[a + "q_a_proj.weight"] = b("attn_q_a.weight")
    sd[a + "q_a_norm.weight"] = b("attn_q_a_norm.weight")
    sd[a + "q_b_proj.weight"] = b("attn_q_b.weight")
    sd[a + "kv_proj.weight"] = b("attn_kv.weight")
    sd[a + "kv_norm.weight"] = b("attn_kv_a_norm.weight")
    sd[a + "sinks"] = b("attn_sinks.weight")
    sd[a + "o_a_proj.weight"] = b("attn_output_a.weight")
    sd[a + "o_b_proj.weight"] = b("attn_output_b.weight")
    if ratio != 0:
        cp = a + "compressor."
        sd[cp + "kv_proj.weight"] = b("attn_compressor_kv.weight")
        sd[cp + "gate_proj.weight"] = b("attn_compressor_gate.weight")
        # GGUF [width, ratio] -> numpy [ratio, width]: row p mod ratio is added to the gate
        sd[cp + "position_bias"] = b("attn_compressor_ape.weight")
        sd[cp + "kv_norm.weight"] = b("attn_compressor_norm.weight")
        if ratio == 4:
            ip = cp + "indexer."
            sd[ip + "kv_proj.weight"] = b("indexer_compressor_kv.weight")
            sd[ip + "gate_proj.weight"] = b("indexer_compressor_gate.weight")
            sd[ip + "position_bias"] = b("indexer_compressor_ape.weight")
            sd[ip + "kv_norm.weight"] = b("indexer_compressor_norm.weight")
            sd[ip + "q_b_proj.weight"] = b("indexer.attn_q_b.weight")
            sd[ip + "scorer.weights_proj.weight"] = b("indexer.proj.weight")
    m = p + "mlp."
    sd[m + "gate.weight"] = b("ffn_gate_inp.weight")
    if hash_layer:
        sd[m + "gate.tid2eid"] = b("ffn_gate_tid2eid.weight").astype(np.int64)
    else:
        sd[m + "gate.e_score_correction_bias"] = b("exp_probs_b.bias")
    # transformers packs [gate; up] along the output dim; chunk(2) splits them back
    sd[m + "experts.gate_up_proj"] = np.concatenate([b("ffn_gate_exps.weight"), b("ffn_up_exps.weight")], axis=1)
    sd[m + "experts.down_proj"] = b("ffn_down_exps.weight")
    sd[m + "shared_experts.gate_proj.weight"] = b("ffn_gate_shexp.weight")
    sd[m + "shared_experts.up_proj.weight"] = b("ffn_up_shexp.weight")
    sd[m + "shared_experts.down_proj.weight"] = b("ffn_down_shexp.weight")
    return sd


def to_torch(sd):
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def state_dict(c, t):
    sd = {"model.embed_tokens.weight": t["token_embd.weight"]}
    for l in range(c["n_layers"]):
        sd.update(layer_state_dict(c, t, f"blk.{l}.", f"model.layers.{l}.", c["compress_ratios"][l], l < c["n_hash"]))
    sd["model.norm.weight"] = t["output_norm.weight"]
    sd["model.hc_head.hc_fn"] = t["output_hc_fn.weight"]
    sd["model.hc_head.hc_base"] = t["output_hc_base.weight"]
    sd["model.hc_head.hc_scale"] = t["output_hc_scale.weight"]
    sd["lm_head.weight"] = t["output.weight"]
    return to_torch(sd)


def mtp_logits(c, cfg, t, hidden, tokens):
    """The MTP block (spec/model.md §6.2) built from transformers modules.

    transformers does not instantiate the MTP block; it is one more decoder layer
    (sliding attention, top-k routed MoE) with DeepSeek's e_proj / h_proj input
    mixing and its own HC head and norm, sharing the embedding and LM head. Inputs:
    the main model's final HC states h_i (before its HC head) paired with the next
    token t_{i+1}, i = 0..T-2, run as one sequence at MTP positions 0..T-2."""
    cfg1 = hf_config({**c, "n_layers": 1, "compress_ratios": [0], "n_hash": 0, "swiglu_limit": [c["swiglu_limit"][-1]]})
    cfg1._attn_implementation = "eager"
    layer = mdv4.DeepseekV4DecoderLayer(cfg1, 0).float().eval()
    layer.load_state_dict(to_torch(layer_state_dict(c, t, "mtp.0.", "", 0, False)), strict=True)
    head = mdv4.DeepseekV4HyperHead(cfg1).float().eval()
    head.load_state_dict(to_torch({
        "hc_fn": t["mtp.0.hc_head_fn.weight"],
        "hc_base": t["mtp.0.hc_head_base.weight"],
        "hc_scale": t["mtp.0.hc_head_scale.weight"],
    }))
    rope = mdv4.DeepseekV4RotaryEmbedding(cfg1)
    eps = c["rms_eps"]
    def rms(x, w):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return x * torch.from_numpy(w)
    tt = lambda n: torch.from_numpy(t[n])
    with torch.no_grad():
        nxt = torch.from_numpy(tokens[1:])[None]
        e = tt("token_embd.weight")[nxt]  # [1, S, D]
        e2 = rms(e, t["mtp.0.enorm.weight"]) @ tt("mtp.0.e_proj.weight").T
        h = torch.from_numpy(hidden[:-1])[None]  # [1, S, n_hc, D]
        h2 = rms(h, t["mtp.0.hnorm.weight"]) @ tt("mtp.0.h_proj.weight").T
        x = e2.unsqueeze(2) + h2
        s = x.shape[1]
        pos = torch.arange(s)[None]
        mask = create_sliding_window_causal_mask(
            config=cfg1, inputs_embeds=x[:, :, 0], attention_mask=None, past_key_values=None, position_ids=pos
        )
        pe = {
            "main": rope(x[:, :, 0], position_ids=pos, layer_type="main"),
            "compress": rope(x[:, :, 0], position_ids=pos, layer_type="compress"),
        }
        y = layer(x, position_embeddings=pe, position_ids=pos, attention_mask=mask, input_ids=nxt, past_key_values=None)
        z = rms(head(y), t["mtp.0.norm.weight"])
        return (z @ tt("output.weight").T)[0].numpy()


class _TopK(tuple):
    @property
    def values(self):
        return self[0]

    @property
    def indices(self):
        return self[1]


def stable_topk(input, k, dim=-1, largest=True, sorted=True):
    """torch.topk with ties broken toward the lower index (spec/model.md §3.7,
    §4.1: ds4.c's rule). torch.topk leaves tie order unspecified, and exact ties
    do occur: an indexer score is exactly 0 whenever every head's q·k is negative."""
    if dim < 0:
        dim += input.dim()
    vals, idx = torch.sort(input, dim=dim, descending=largest, stable=True)
    return _TopK((vals.narrow(dim, 0, k), idx.narrow(dim, 0, k)))


def install_stable_topk():
    torch.topk = stable_topk
    torch.Tensor.topk = lambda self, k, dim=-1, largest=True, sorted=True: stable_topk(self, k, dim, largest, sorted)


def build(which):
    seed, n_tokens = FIXTURE_SPECS[which]
    with tempfile.TemporaryDirectory() as d:
        if which in GGUF_FIXTURES:
            manifest, tensors = run_synth(seed, d)
        else:
            manifest, tensors = run_generator(which, seed, d)
    c = manifest["config"]
    cfg = hf_config(c)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = DeepseekV4ForCausalLM(cfg).to(torch.float32).eval()
    sd = state_dict(c, tensors)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # non-persistent rotary buffers are not in the state dict
    missing = [k for k in missing if "inv_freq" not in k]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight), "lm_head must not be tied"

    # count SwiGLU clamp hits (routed + shared) to make sure the clamp is exercised
    hits = {"gate": 0, "up": 0, "total": 0}
    limit = cfg.swiglu_limit
    orig_gate = mdv4.DeepseekV4Experts._apply_gate

    def counting_gate(self, gate_up):
        g, u = gate_up.chunk(2, dim=-1)
        hits["gate"] += int((g > limit).sum())
        hits["up"] += int((u.abs() > limit).sum())
        hits["total"] += g.numel()
        return orig_gate(self, gate_up)

    mdv4.DeepseekV4Experts._apply_gate = counting_gate
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, c["vocab"], size=n_tokens).astype(np.int64)
    captured = {}
    hook = model.model.hc_head.register_forward_pre_hook(lambda mod, args: captured.__setitem__("h", args[0]))
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(tokens)[None, :], use_cache=False)
    hook.remove()
    mdv4.DeepseekV4Experts._apply_gate = orig_gate
    logits = out.logits[0].to(torch.float32).numpy()
    assert logits.shape == (n_tokens, c["vocab"])
    assert np.isfinite(logits).all()

    os.makedirs(FIXTURES, exist_ok=True)
    np.save(os.path.join(FIXTURES, f"tiny_{which}_logits.npy"), logits.astype("<f4"))
    if which in MTP_FIXTURES:
        ml = mtp_logits(c, cfg, tensors, captured["h"][0].numpy(), tokens)
        assert ml.shape == (n_tokens - 1, c["vocab"]) and np.isfinite(ml).all()
        np.save(os.path.join(FIXTURES, f"tiny_{which}_mtp_logits.npy"), ml.astype("<f4"))
    meta = {
        "fixture": which,
        "seed": seed,
        "fingerprint": manifest["fingerprint"],
        "tokens": tokens.tolist(),
        "max_abs_logit": float(np.abs(logits).max()),
        "argmax": logits.argmax(axis=1).tolist(),
        "routed_clamp_hits": hits,
        "generator": ("cargo run -p ds4-model --release --example synth_oracle -- %d OUT.gguf" % seed)
        if which in GGUF_FIXTURES
        else ("cargo run -p ds4-model --release --example tiny_weights -- %s %d DIR" % (which, seed)),
        "oracle": "transformers %s DeepseekV4ForCausalLM, torch %s, float32, CPU, eager, use_cache=False"
        % (transformers.__version__, torch.__version__),
        "config": c,
    }
    with open(os.path.join(FIXTURES, f"tiny_{which}.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"fixture {which}: {n_tokens} tokens, max|logit| {meta['max_abs_logit']:.4f}, clamp hits {hits}")


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    install_stable_topk()
    which = sys.argv[1:] or sorted(FIXTURE_SPECS)
    for w in which:
        if w not in FIXTURE_SPECS:
            raise SystemExit(f"unknown fixture {w!r}; choose from {sorted(FIXTURE_SPECS)}")
        build(w)


if __name__ == "__main__":
    main()
