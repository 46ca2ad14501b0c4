#!/usr/bin/env python3
"""Writes the gguf-py oracle fixtures for crates/ds4-gguf/tests/container_gguf_py.rs.

Independent reference: ggml-org's gguf-py GGUFWriter (pinned in requirements.txt).
The Rust test rebuilds the same content (described identically there) with
ds4_gguf::GgufWriter and checks (1) the reader decodes these files to exactly that
content and (2) the Rust writer reproduces these files byte for byte.

Run from the repository root:
    /work/pyenv/bin/python crates/ds4-gguf/tests/container_fixtures/make_fixtures.py
"""
import os

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFValueType as T, GGUFWriter

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, ggml type, block elems, block bytes, gguf dims [ne0, ne1, ...])
TENSORS = [
    ("token_embd.weight", Q.F32, 1, 4, [3, 2]),
    ("blk.0.attn_norm.weight", Q.F16, 1, 2, [5]),
    ("blk.0.attn_q_a.weight", Q.Q8_0, 32, 34, [64, 3]),
    ("blk.0.ffn_gate_tid2eid.weight", Q.I32, 1, 4, [4, 2]),
    ("blk.0.ffn_down_exps.weight", Q.Q2_K, 256, 84, [256, 1, 2]),
    ("blk.0.ffn_up_exps.weight", Q.Q4_K, 256, 144, [256, 2]),
    ("blk.0.ffn_gate_exps.weight", Q.IQ2_XXS, 256, 66, [512, 1]),
    ("output.weight", Q.BF16, 1, 2, [7]),
]


def tensor_bytes(i, n):
    """Byte j of tensor i; the Rust test uses the same formula."""
    return np.array([(i * 37 + j * 11 + 5) % 256 for j in range(n)], dtype=np.uint8)


def write(path, alignment):
    w = GGUFWriter(path, "deepseek4")  # adds general.architecture first
    w.add_key_value("test.u8", 200, T.UINT8)
    w.add_key_value("test.i8", -100, T.INT8)
    w.add_key_value("test.u16", 60000, T.UINT16)
    w.add_key_value("test.i16", -30000, T.INT16)
    w.add_key_value("test.u32", 4000000000, T.UINT32)
    w.add_key_value("test.i32", -2000000000, T.INT32)
    w.add_key_value("test.f32", 0.1, T.FLOAT32)
    w.add_key_value("test.bool", True, T.BOOL)
    w.add_key_value("test.string", "Grüße, 世界 \u2581<｜end▁of▁sentence｜>", T.STRING)
    w.add_key_value("test.u64", 18000000000000000000, T.UINT64)
    w.add_key_value("test.i64", -9000000000000000000, T.INT64)
    w.add_key_value("test.f64", 0.1, T.FLOAT64)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_key_value("test.arr_u32", [1, 2, 4000000000], T.ARRAY, sub_type=T.UINT32)
    w.add_key_value("test.arr_f32", [0.5, -1.25, 3.0e-6], T.ARRAY, sub_type=T.FLOAT32)
    w.add_key_value("test.arr_str", ["a", "", "Ġthe", "<｜begin▁of▁sentence｜>"], T.ARRAY, sub_type=T.STRING)
    w.add_key_value("test.arr_bool", [True, False], T.ARRAY, sub_type=T.BOOL)
    w.add_key_value("test.nested", [[1, -2], [3]], T.ARRAY, sub_type=T.ARRAY)
    for i, (name, qt, be, bb, dims) in enumerate(TENSORS):
        n_el = int(np.prod(dims))
        n = (n_el // be) * bb
        # gguf-py takes numpy shapes (reverse of GGUF dims); raw uint8 shapes carry bytes in the last axis.
        shape = list(reversed(dims))
        shape[-1] = shape[-1] // be * bb
        w.add_tensor(name, tensor_bytes(i, n).reshape(shape), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    write(os.path.join(HERE, "gguf_py_default_align.gguf"), None)
    write(os.path.join(HERE, "gguf_py_align64.gguf"), 64)
