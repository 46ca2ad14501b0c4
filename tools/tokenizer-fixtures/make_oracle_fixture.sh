#!/bin/sh
# Regenerate crates/ds4-tokenizer/tests/fixtures/oracle.json (needs Python with
# requirements.txt installed; PYTHON defaults to /work/pyenv/bin/python).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-/work/pyenv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && cargo run -q -p ds4-tokenizer --release --example write_corpus -- "$tmp/corpus.bin")
"$py" "$root/tools/tokenizer-fixtures/make_oracle_fixture.py" "$tmp/corpus.bin"
