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
# The bag metadata of each fixture bag, to the configs corpus.
for f in tests/fixtures/bags/*/metadata.yaml; do
  cp "$f" "fuzz/corpus/configs/metadata_$(basename "$(dirname "$f")").yaml"
done
# The db3 corpus: rosbags-written sqlite3 bags.
mkdir -p fuzz/corpus/bag_db3
for f in tests/fixtures/bags/*/*.db3; do
  cp "$f" "fuzz/corpus/bag_db3/$(basename "$f")"
done
# The weights corpus: the tiny Qwen3-VL fixture's safetensors (1.1 MB).
mkdir -p fuzz/corpus/weights
cp tests/fixtures/vlm/tiny/model.safetensors fuzz/corpus/weights/qwen3vl_tiny.safetensors
