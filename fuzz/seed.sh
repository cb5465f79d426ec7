#!/usr/bin/env bash
# Seeds the bag_reader corpus with the MCAP fixtures (rosbags-written bags).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/bag_reader
for f in tests/fixtures/bags/*/*.mcap; do
  cp "$f" "fuzz/corpus/bag_reader/$(basename "$(dirname "$f")").mcap"
done
# The configs corpus: the package's graph configs and a Qwen3-VL config.json.
mkdir -p fuzz/corpus/configs
for f in config/*.yaml; do
  cp "$f" "fuzz/corpus/configs/$(basename "$f")"
done
cp tests/fixtures/vlm/tiny/config.json fuzz/corpus/configs/qwen3vl_config.json
