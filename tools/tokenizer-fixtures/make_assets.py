#!/usr/bin/env python3
"""Write crates/ds4-tokenizer/assets/deepseek_v4.tok.z from tokenizer.json.

The asset is a zlib stream (RFC 1950) of this little-endian binary layout:

    magic      8 bytes  b"DS4TOKv1"
    n_tokens   u32
    n_merges   u32
    bos_id     u32
    eos_id     u32
    pad_id     u32      (0xFFFFFFFF = none)
    tokens     n_tokens x (u16 byte length, UTF-8 bytes)   token strings as in
               tokenizer.ggml.tokens (GPT-2 byte-level alphabet; added tokens verbatim)
    types      n_tokens x u8   GGUF token_type (1 normal, 3 control, 4 user-defined)
    merges     n_merges x (u16 byte length, UTF-8 bytes)   "LEFT RIGHT", rank = index

Token types follow llama.cpp's convert_hf_to_gguf.py (`get_vocab_base`): base
vocabulary entries are NORMAL; added tokens are CONTROL when the added token is
`special` or "looks special" (`<|...|>` or `<｜...｜>`), otherwise USER_DEFINED.

Usage: /work/pyenv/bin/python tools/tokenizer-fixtures/make_assets.py
"""

import json
import os
import struct
import zlib

from common import CRATE_DIR, check_versions, tokenizer_json_path

NORMAL, CONTROL, USER_DEFINED = 1, 3, 4


def looks_special(text):
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def main():
    check_versions()
    with open(tokenizer_json_path(), encoding="utf-8") as f:
        tj = json.load(f)
    with open(os.path.join(os.path.dirname(tokenizer_json_path()), "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    model = tj["model"]
    assert model["type"] == "BPE"
    vocab = model["vocab"]
    added = tj["added_tokens"]
    n = max(max(vocab.values()), max(a["id"] for a in added)) + 1
    tokens = [None] * n
    types = [NORMAL] * n
    for text, i in vocab.items():
        assert tokens[i] is None, i
        tokens[i] = text
    for a in added:
        i = a["id"]
        assert tokens[i] is None or tokens[i] == a["content"], i
        assert not (a["lstrip"] or a["rstrip"] or a["single_word"]), a
        tokens[i] = a["content"]
        types[i] = CONTROL if (a["special"] or looks_special(a["content"])) else USER_DEFINED
    assert all(t is not None for t in tokens), "vocabulary has holes"
    merges = model["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    ids = {t: i for i, t in enumerate(tokens)}

    def special_id(key):
        v = cfg.get(key)
        if v is None:
            return None
        return ids[v["content"] if isinstance(v, dict) else v]

    bos, eos, pad = special_id("bos_token"), special_id("eos_token"), special_id("pad_token")

    out = bytearray(b"DS4TOKv1")
    out += struct.pack("<5I", n, len(merges), bos, eos, 0xFFFFFFFF if pad is None else pad)
    for t in tokens:
        b = t.encode("utf-8")
        out += struct.pack("<H", len(b)) + b
    out += bytes(types)
    for m in merges:
        b = m.encode("utf-8")
        out += struct.pack("<H", len(b)) + b
    comp = zlib.compress(bytes(out), 9)
    path = os.path.join(CRATE_DIR, "assets", "deepseek_v4.tok.z")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(comp)
    print(f"wrote {path}: {n} tokens, {len(merges)} merges, bos={bos} eos={eos} pad={pad}, "
          f"{len(out)} raw bytes, {len(comp)} compressed")
    print("types:", {t: types.count(t) for t in set(types)})


if __name__ == "__main__":
    main()
