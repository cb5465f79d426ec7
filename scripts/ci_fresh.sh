#!/usr/bin/env bash
# Times `.ci/run` as a fresh machine would run it, on this one: a clone of HEAD into an empty
# folder with its own build folder, venvs and cargo home (every crate downloaded again,
# cargo-fuzz built from source), pip's cache off. Only the apt packages and rustup's
# toolchains are reused. Needs ~25 GB free; the folder is left for inspection.
#
#   scripts/ci_fresh.sh [WORKDIR]     # default /tmp/dreamplan-ci-fresh (emptied first)
#
# `../shared` beside the clone is linked to this checkout's `../shared` when it exists.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
F=${1:-/tmp/dreamplan-ci-fresh}
rm -rf "$F" && mkdir -p "$F/bin"
git clone -q "$REPO" "$F/main"
[ -d "$REPO/../shared" ] && ln -s "$(cd "$REPO/../shared" && pwd)" "$F/shared"
# rustup's proxies, without the cargo home's installed tools (cargo-fuzz among them).
RUSTUP_BIN=$(dirname "$(command -v rustup)")
for t in cargo rustc rustup cargo-clippy cargo-fmt clippy-driver rustfmt rustdoc; do
  ln -s "$RUSTUP_BIN/$t" "$F/bin/$t"
done
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export CARGO_HOME=$F/cargo-home
mkdir -p "$CARGO_HOME/bin"
export PATH=$CARGO_HOME/bin:$F/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export CARGO_TARGET_DIR=$F/target DREAMPLAN_VENV=$F/venv DREAMPLAN_HF_VENV=$F/hf-venv
export PIP_NO_CACHE_DIR=1
if command -v cargo-fuzz >/dev/null; then
  echo "ci_fresh: cargo-fuzz is on PATH ($(command -v cargo-fuzz)): not a fresh run" >&2
  exit 2
fi
cd "$F/main"
echo "ci_fresh: $(git log --oneline -1) in $F"
time bash .ci/run
