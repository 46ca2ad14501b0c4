"""Oracle fixture for the ds4-gguf converter tests (tests/convert.rs, test
`torch_oracle_fixture`): safetensors written by the official `safetensors` library from
torch tensors, with the dequantized values computed by torch itself.

  * fp8.weight (F8_E4M3 [256, 256]) + fp8.scale (F8_E8M0 [2, 2]) and fp8.expected
    (F32) = weight.to(float32) * scale.to(float32) expanded to 128x128 blocks;
    every E4M3 code except the NaNs (0x7F, 0xFF) appears;
  * e8m0.codes (F8_E8M0 [254], codes 1..254) and e8m0.expected = codes.to(float32);
  * bf16 (BF16 [4, 8]) / f16 (F16 [3, 5]) / f64 (F64 [6]) with *.expected = .to(float32);
  * i64 (I64 [5, 3]) with small ids.

Run from this directory: /path/to/python make_fixture.py (versions in requirements.txt).
"""
import torch
from safetensors.torch import save_file

g = torch.Generator().manual_seed(1234)
codes = torch.randint(0, 256, (256, 256), generator=g, dtype=torch.int32).to(torch.uint8)
codes[0, :256] = torch.arange(256, dtype=torch.int32).to(torch.uint8)
codes[(codes & 0x7F) == 0x7F] = 0x38  # no NaN codes (ds4 maps them to 0, torch to NaN)
w = codes.view(torch.float8_e4m3fn)
scale_codes = torch.tensor([[120, 127], [131, 100]], dtype=torch.uint8)
s = scale_codes.view(torch.float8_e8m0fnu)
expanded = s.to(torch.float32).repeat_interleave(128, 0).repeat_interleave(128, 1)
fp8_expected = w.to(torch.float32) * expanded

e8 = torch.arange(1, 255, dtype=torch.int32).to(torch.uint8).view(torch.float8_e8m0fnu)

bf16 = (torch.randn(4, 8, generator=g) * 3).to(torch.bfloat16)
f16 = (torch.randn(3, 5, generator=g) * 3).to(torch.float16)
f64 = torch.randn(6, generator=g, dtype=torch.float64)
i64 = torch.randint(0, 16, (5, 3), generator=g, dtype=torch.int64)

save_file(
    {
        "fp8.weight": w.contiguous(),
        "fp8.scale": s.contiguous(),
        "fp8.expected": fp8_expected.contiguous(),
        "e8m0.codes": e8.contiguous(),
        "e8m0.expected": e8.to(torch.float32).contiguous(),
        "bf16": bf16,
        "bf16.expected": bf16.to(torch.float32),
        "f16": f16,
        "f16.expected": f16.to(torch.float32),
        "f64": f64,
        "f64.expected": f64.to(torch.float32),
        "i64": i64,
    },
    "oracle.safetensors",
    metadata={"format": "pt"},
)
