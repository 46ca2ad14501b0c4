#!/usr/bin/env python3
"""Generate the ds4-quant test fixtures from independent Python oracles.

Oracles:
  * gguf-py (gguf==0.19.0) `gguf.quants.dequantize` / `quantize` for F16, BF16, Q8_0,
    Q2_K, Q4_K, IQ2_XXS;
  * numpy float16 casts for F16 <-> F32;
  * a numpy transcription of ggml's `quantize_row_q8_K_ref` for Q8_K (gguf-py has no Q8_K).

Usage:  python gen.py [OUT_DIR]   (default: crates/ds4-quant/tests/fixtures next to this repo)

Every file is little-endian:  magic b"DS4Q", u32 version (1), u32 count, then payloads.
`count` is in blocks for block formats and in elements for F16/BF16 files.
  deq_<fmt>.bin   : count * block_bytes raw blocks, then count * block_elems f32 (expected)
  quant_<fmt>.bin : count * block_elems f32 inputs, then count * block_bytes (expected)
  deq_f16.bin     : count u16 inputs, then count f32 expected
  quant_f16.bin   : count f32 inputs, then count u16 expected
The seed is fixed: the output is deterministic for the pinned versions.
"""
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

SEED = 20260521
rng = np.random.default_rng(SEED)

BLOCK = {  # (elements, bytes)
    T.Q8_0: (32, 34),
    T.Q2_K: (256, 84),
    T.Q4_K: (256, 144),
    T.IQ2_XXS: (256, 66),
    T.Q8_K: (256, 292),
}


def header(count):
    return b"DS4Q" + struct.pack("<II", 1, count)


def write(out_dir, name, count, *payloads):
    path = os.path.join(out_dir, name)
    with open(path, "wb") as f:
        f.write(header(count))
        for p in payloads:
            f.write(p)
    print(f"{name}: {os.path.getsize(path)} bytes")


def f16_bytes(values):
    return np.asarray(values, dtype=np.float16).tobytes()


def sane_scales(n):
    """f16 scales: mostly normal magnitudes of both signs, plus zero, subnormals, tiny/huge normals."""
    mags = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), size=n))
    signs = np.where(rng.random(n) < 0.15, -1.0, 1.0)
    s = (mags * signs).astype(np.float16)
    special = np.array([0.0, -0.0, 6.0e-8, 3.0e-5, -4.5e-6, 6.1035e-05, 1000.0, 65504.0], dtype=np.float16)
    k = min(len(special), max(1, n // 8))
    idx = rng.choice(n, size=k, replace=False)
    s[idx] = special[:k]
    return s


def random_blocks(qtype, n):
    elems, nbytes = BLOCK[qtype]
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    if qtype == T.Q8_0:
        raw[:, 0:2] = np.frombuffer(f16_bytes(sane_scales(n)), dtype=np.uint8).reshape(n, 2)
    elif qtype == T.Q2_K:
        raw[:, 80:82] = np.frombuffer(f16_bytes(sane_scales(n)), dtype=np.uint8).reshape(n, 2)
        raw[:, 82:84] = np.frombuffer(f16_bytes(sane_scales(n)), dtype=np.uint8).reshape(n, 2)
    elif qtype == T.Q4_K:
        raw[:, 0:2] = np.frombuffer(f16_bytes(sane_scales(n)), dtype=np.uint8).reshape(n, 2)
        raw[:, 2:4] = np.frombuffer(f16_bytes(sane_scales(n)), dtype=np.uint8).reshape(n, 2)
    elif qtype == T.IQ2_XXS:
        raw[:, 0:2] = np.frombuffer(f16_bytes(sane_scales(n)), dtype=np.uint8).reshape(n, 2)
        # make every one of the 256 grid indices appear at least once: grid index bytes are
        # bytes 0..3 of each 8-byte group (block offsets 2 + 8g + k)
        grid_pos = [2 + 8 * g + k for g in range(8) for k in range(4)]
        order = rng.permutation(256)
        for i, gi in enumerate(order):
            b, p = divmod(i, len(grid_pos))
            raw[b % n, grid_pos[p]] = gi
    return raw


def gguf_deq(qtype, raw):
    out = quants.dequantize(raw, qtype)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(-1)


def q8_k_ref(x):
    """numpy transcription of ggml quantize_row_q8_K_ref, in f32 arithmetic."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, 256)
    out = []
    for blk in x:
        i = int(np.argmax(np.abs(blk)))  # first index of the largest |x| (C loop uses '>')
        mx = blk[i]
        if np.abs(mx) == 0:
            d = np.float32(0)
            qs = np.zeros(256, dtype=np.int8)
        else:
            iscale = np.float32(-127.0) / np.float32(mx)
            v = np.rint(np.float32(iscale) * blk).astype(np.int32)  # f32 product, ties to even
            qs = np.minimum(v, 127).astype(np.int8)
            d = np.float32(1.0) / np.float32(iscale)
        bsums = qs.astype(np.int32).reshape(16, 16).sum(axis=1).astype(np.int16)
        out.append(np.float32(d).tobytes() + qs.tobytes() + bsums.astype("<i2").tobytes())
    return b"".join(out)


def q8_k_deq(raw):
    raw = raw.reshape(-1, 292)
    d = raw[:, 0:4].copy().view(np.float32)
    qs = raw[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (d * qs).astype(np.float32).reshape(-1)


def f16_inputs():
    vals = list(range(0, 0x400))  # all positive subnormals and zero
    vals += [0x8000, 0x8001, 0x83FF, 0x0400, 0x0401, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
             0x7C01, 0x7D00, 0x7E00, 0x7FFF, 0xFC01, 0xFE00, 0xFFFF]
    vals += list(rng.integers(0, 0x10000, size=2048))
    return np.array(vals, dtype=np.uint16)


def f32_inputs_for_f16():
    parts = []
    # random bits over the whole f16 range and beyond (exponents 90..160), both signs
    e = rng.integers(90, 161, size=1500, dtype=np.uint32)
    m = rng.integers(0, 1 << 23, size=1500, dtype=np.uint32)
    s = rng.integers(0, 2, size=1500, dtype=np.uint32)
    parts.append(((s << 31) | (e << 23) | m).view(np.float32))
    # exact ties between adjacent f16 values (normal and subnormal), and one ulp around them
    h = rng.integers(0, 0x7BFF, size=600).astype(np.uint16)
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).astype(np.uint16).view(np.float16).astype(np.float64)
    mid = ((lo + hi) / 2).astype(np.float32)
    parts += [mid, -mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(0))]
    sub = np.arange(0, 0x400, 7, dtype=np.uint16)
    lo = sub.view(np.float16).astype(np.float64)
    hi = (sub + 1).view(np.float16).astype(np.float64)
    parts.append(((lo + hi) / 2).astype(np.float32))
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504.0, 65519.99, 65520.0, -65520.0,
                        1e9, 1e-9, 2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0000001, 2.0 ** -26, 2.0 ** -14,
                        1.401298464324817e-45, 1.0, -1.0, 3.14159265], dtype=np.float32)
    parts.append(special)
    return np.concatenate(parts).astype(np.float32)


def bf16_inputs():
    parts = [rng.standard_normal(1024).astype(np.float32) * np.float32(3.0)]
    b = rng.integers(0, 1 << 32, size=512, dtype=np.uint64).astype(np.uint32)
    parts.append(b.view(np.float32))  # arbitrary bits incl. NaN payloads, subnormals, inf
    ties = (rng.integers(0, 1 << 16, size=256, dtype=np.uint32) << 16) | np.uint32(0x8000)
    parts.append(ties.view(np.float32))
    parts.append(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.3895314e38, 3.4028235e38, 1e-40], dtype=np.float32))
    return np.concatenate(parts).astype(np.float32)


def q8_0_inputs(nblocks):
    x = rng.standard_normal((nblocks, 32)).astype(np.float32)
    x *= np.exp(rng.uniform(-8, 8, size=(nblocks, 1))).astype(np.float32)
    x[0] = 0.0
    x[1] = np.float32(1.0)
    x[1, 5] = np.float32(-127.0)  # scale exactly 1: many exact products
    x[2] = (np.arange(32, dtype=np.float32) - 16) * np.float32(0.5)  # ties at .5 steps
    x[2, 0] = np.float32(63.5)
    return x.reshape(-1)


def q8_k_inputs(nblocks):
    x = rng.standard_normal((nblocks, 256)).astype(np.float32)
    x *= np.exp(rng.uniform(-6, 6, size=(nblocks, 1))).astype(np.float32)
    x[0] = 0.0
    x[1, 3] = np.float32(-50.0)  # negative max -> positive iscale sign flip case
    x[2, 7] = np.float32(80.0)
    x[2, 9] = np.float32(-80.0)  # tie on |max|: first occurrence wins
    return x.reshape(-1)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "crates", "ds4-quant", "tests", "fixtures")
    os.makedirs(out_dir, exist_ok=True)

    # F16 <-> F32: gguf-py's F16 path is the numpy float16 cast; both are checked to agree
    h = f16_inputs()
    deq16 = np.asarray(quants.dequantize(h.view(np.uint8), T.F16), dtype=np.float32).reshape(-1)
    assert (deq16.view(np.uint32) == h.view(np.float16).astype(np.float32).view(np.uint32)).all()
    write(out_dir, "deq_f16.bin", len(h), h.astype("<u2").tobytes(), deq16.astype("<f4").tobytes())
    xs = f32_inputs_for_f16()
    with np.errstate(over="ignore"):
        hq = np.asarray(quants.quantize(xs, T.F16)).view(np.uint16)
        assert (hq == xs.astype(np.float16).view(np.uint16)).all()
    write(out_dir, "quant_f16.bin", len(xs), xs.astype("<f4").tobytes(), hq.astype("<u2").tobytes())

    # BF16 against gguf-py
    xb = bf16_inputs()
    qb = quants.quantize(xb.reshape(1, -1), T.BF16).reshape(-1)
    write(out_dir, "quant_bf16.bin", len(xb), xb.astype("<f4").tobytes(), qb.astype(np.uint8).tobytes())
    raw = rng.integers(0, 1 << 16, size=2048, dtype=np.uint32).astype(np.uint16)
    raw[:4] = [0x0000, 0x8000, 0x7F80, 0xFFC1]
    deq = quants.dequantize(raw.view(np.uint8).reshape(1, -1), T.BF16).reshape(-1).astype(np.float32)
    write(out_dir, "deq_bf16.bin", len(raw), raw.astype("<u2").tobytes(), deq.astype("<f4").tobytes())

    # block formats: dequantize against gguf-py
    for qtype, name, n in [(T.Q8_0, "q8_0", 96), (T.Q2_K, "q2_k", 24), (T.Q4_K, "q4_k", 24),
                           (T.IQ2_XXS, "iq2_xxs", 24)]:
        blocks = random_blocks(qtype, n)
        exp = gguf_deq(qtype, blocks)
        assert exp.size == n * BLOCK[qtype][0]
        write(out_dir, f"deq_{name}.bin", n, blocks.tobytes(), exp.astype("<f4").tobytes())

    # Q8_0 quantize against gguf-py
    n = 96
    x = q8_0_inputs(n)
    q = quants.quantize(x.reshape(1, -1), T.Q8_0).reshape(-1)
    assert q.size == n * 34
    write(out_dir, "quant_q8_0.bin", n, x.astype("<f4").tobytes(), q.astype(np.uint8).tobytes())

    # Q8_K (activation format): independent numpy transcription of the ggml reference
    n = 12
    x = q8_k_inputs(n)
    q = q8_k_ref(x)
    write(out_dir, "quant_q8_k.bin", n, x.astype("<f4").tobytes(), q)
    raw = np.frombuffer(q, dtype=np.uint8).copy().reshape(n, 292)
    # also some arbitrary (non-reference) Q8_K blocks: random qs, random f32 d
    extra = rng.integers(0, 256, size=(4, 292), dtype=np.uint8)
    extra[:, 0:4] = np.frombuffer(rng.standard_normal(4).astype("<f4").tobytes(), dtype=np.uint8).reshape(4, 4)
    raw = np.concatenate([raw, extra])
    write(out_dir, "deq_q8_k.bin", len(raw), raw.tobytes(), q8_k_deq(raw).astype("<f4").tobytes())


if __name__ == "__main__":
    main()
