#!/usr/bin/env bash
# Seeds the bag_reader corpus with the MCAP fixtures (rosbags-written bags).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fuzz/corpus/bag_reader
for f in tests/fixtures/bags/*/*.mcap; do
  cp "$f" "fuzz/corpus/bag_reader/$(basename "$(dirname "$f")").mcap"
done
