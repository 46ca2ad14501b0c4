#!/usr/bin/env python3
"""Compare ds4-tokenizer with the HF oracle on a text file (dev check, not a fixture).

Usage: /work/pyenv/bin/python tools/tokenizer-fixtures/check_file.py FILE...
Runs `cargo run -p ds4-tokenizer --release --example encode_file -- FILE` for each file.
"""

import subprocess
import sys

from common import REPO_ROOT, check_versions, load_hf_tokenizer


def main():
    check_versions()
    tok = load_hf_tokenizer()
    bad = 0
    for path in sys.argv[1:]:
        text = open(path, encoding="utf-8", newline="").read()
        want = tok.encode(text, add_special_tokens=False).ids
        out = subprocess.run(
            ["cargo", "run", "-q", "-p", "ds4-tokenizer", "--release", "--example", "encode_file", "--", path],
            cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout
        got = [int(x) for x in out.split()]
        if got == want:
            print(f"{path}: OK, {len(want)} ids")
        else:
            bad += 1
            k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            print(f"{path}: MISMATCH at id {k}: got {got[k:k + 8]}, oracle {want[k:k + 8]}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
