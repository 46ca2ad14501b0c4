#!/usr/bin/env python3
"""Extract (rendered, token_ids) pairs of the chat-golden cases into a small fixture.

Reads /work/shared/spec/chat-golden/*.json (or the directory given as argv[1]),
re-tokenizes every `rendered` with the HF oracle to confirm `token_ids`, and writes
crates/ds4-tokenizer/tests/fixtures/chat_golden.json.

Usage: /work/pyenv/bin/python tools/tokenizer-fixtures/make_golden_fixture.py [GOLDEN_DIR]
"""

import glob
import json
import os
import sys

from common import CRATE_DIR, check_versions, load_hf_tokenizer


def main():
    check_versions()
    src = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/spec/chat-golden"
    tok = load_hf_tokenizer()
    cases = []
    for path in sorted(glob.glob(os.path.join(src, "*.json"))):
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict) or "rendered" not in d:
            continue
        ids = tok.encode(d["rendered"], add_special_tokens=False).ids
        if ids != d["token_ids"]:
            raise SystemExit(f"{path}: HF oracle disagrees with the golden token_ids")
        cases.append({"name": d["name"], "rendered": d["rendered"], "token_ids": ids})
    out = os.path.join(CRATE_DIR, "tests", "fixtures", "chat_golden.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"source": "shared/spec/chat-golden", "cases": cases}, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"wrote {out}: {len(cases)} cases, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
