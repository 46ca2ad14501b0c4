#!/usr/bin/env bash
# The test command of the README (CI runs exactly this via .ci/run):
# the whole workspace test suite on the CPU, including the real-client tests
# that drive ds4-server with the official openai / anthropic Python SDKs.
set -euo pipefail
cd "$(dirname "$0")"

# Pinned Python SDKs for crates/ds4-server/tests/sdk.rs, in a venv under target/.
venv="$PWD/target/sdk-venv"
if ! "$venv/bin/python" -c "import openai, anthropic" >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -r tools/sdk-tests/requirements.txt -c tools/sdk-tests/constraints.txt
fi
export DS4_SDK_PYTHON="$venv/bin/python"

# Pinned NVRTC (runs without a GPU) so that a test compiles every CUDA kernel for sm_90.
cvenv="$PWD/target/cuda-venv"
if ! ls "$cvenv"/lib/python3*/site-packages/nvidia/cu13/lib/libnvrtc.so.13 >/dev/null 2>&1; then
    python3 -m venv "$cvenv"
    "$cvenv/bin/pip" install --quiet --disable-pip-version-check -r tools/cuda/requirements.txt
fi
nvrtc_lib=$(ls -d "$cvenv"/lib/python3*/site-packages/nvidia/cu13/lib | head -1)
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

cargo test --workspace --release
