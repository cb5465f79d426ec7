#!/usr/bin/env bash
# Builds dreamplan's `cuda` feature on a machine without a CUDA install, from NVIDIA's PyPI
# wheels (nvcc 13.0), cached between runs. Also the recipe for any machine whose system
# CUDA is missing or older than the one candle wants.
#
#   scripts/cuda_toolchain.sh check          # cargo check --features cuda (CI: nvcc + headers)
#   scripts/cuda_toolchain.sh build          # cargo build --release --features cuda
#   scripts/cuda_toolchain.sh carry [DIR]    # a bundle for a GPU machine without Rust (below)
#   eval "$(scripts/cuda_toolchain.sh env)"  # the variables, for your own cargo commands
#
# `carry` builds without the `videoio` feature (OpenCV's videoio drags in ~150 libraries,
# 275 MB; docs/gpu.md) and puts in DIR (default gpu_carry/, git-ignored): `dreamplan.xz`
# (stripped, xz -9), `lib/` with the OpenCV core + imgproc libraries and their
# dependencies from this machine (not glibc, libstdc++ or libgcc, which the GPU machine has),
# and `unpack.sh`, which on the GPU machine decompresses the binary with Python's standard
# `lzma` module (xz, not zstd: the GPU machine's image has neither the `zstandard` package
# nor the zstd tool) and prints the LD_LIBRARY_PATH to use with the CUDA 13 libraries of
# its PyTorch install.
#
# What it sets up, under $DREAMPLAN_CUDA_HOME (default ~/.cache/dreamplan-cuda):
# - venv/: `cuda-toolkit==13.0.2` with nvcc, cudart and cccl (check), plus cuBLAS, cuRAND
#   and NVRTC (build), with `nvidia-cuda-crt` and `nvidia-nvvm` pinned to 13.0.88 (unpinned,
#   pip mixes in parts of a newer 13.x whose headers do not match this nvcc). The wheels lay
#   CUDA out as one folder (site-packages/nvidia/cu13: bin include lib nvvm), which
#   becomes CUDA_HOME / CUDA_PATH / CUDA_ROOT; unversioned .so links are added for the
#   linker.
# - stub/libcuda.so.1: candle links the driver library directly (cudarc's dynamic
#   linking) and no wheel ships a driver stub, so one is made with gcc from the `cu*`
#   names in cudarc's driver bindings. Only the linker sees it: at run time the real
#   driver's libcuda.so.1 is loaded. Its functions all return CUDA_ERROR_NO_DEVICE, so a
#   binary run against it by mistake says there is no GPU instead of crashing.
# - CUDA_COMPUTE_CAP (default 90, the H100 / H200) picks the kernels' architecture, since
#   this machine has no GPU to ask.
# A separate target folder ($CARGO_TARGET_DIR_CUDA, default ~/.cache/dreamplan-target-cuda)
# keeps the CPU build's cache intact. `check` took 24 min on 2 cores from an empty folder
# (candle's CUDA kernels; cached after); `build` took 12 min 4 s from an empty folder
# (session 26; 84 MB binary). It links OpenCV too: docs/gpu.md says why carrying it to the
# GPU machine does not work yet.
#
# Carrying the binary to a GPU machine: docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-env}
case "$MODE" in env | check | build | carry) ;; *)
  echo "usage: scripts/cuda_toolchain.sh env|check|build|carry [DIR]" >&2
  exit 2
  ;;
esac
HOME_DIR=${DREAMPLAN_CUDA_HOME:-$HOME/.cache/dreamplan-cuda}
VENV=$HOME_DIR/venv
log() { [ "$MODE" = env ] || echo "cuda_toolchain: $*" >&2; }

extras="nvcc,cudart,cccl"
[ "$MODE" = check ] || extras="nvcc,cudart,cccl,cublas,curand,nvrtc"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >&2
fi
stamp="$HOME_DIR/installed-$extras"
if [ ! -e "$stamp" ]; then
  log "installing the CUDA 13.0 wheels ($extras)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "cuda-toolkit[$extras]==13.0.2" nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 >&2
  touch "$stamp"
fi
CUDA=$("$VENV/bin/python" -c 'import site, os; print(os.path.join(site.getsitepackages()[0], "nvidia", "cu13"))')
[ -x "$CUDA/bin/nvcc" ] || {
  echo "cuda_toolchain: no nvcc in $CUDA" >&2
  exit 1
}
for f in "$CUDA"/lib/lib*.so.*; do
  [ -e "$f" ] || continue
  base="${f%%.so.*}.so"
  [ -e "$base" ] || ln -s "$(basename "$f")" "$base"
done

STUB=$HOME_DIR/stub
if [ "$MODE" != check ] && [ ! -e "$STUB/libcuda.so.1" ]; then
  # No match is not an error here (pipefail would make it one): fetch, then look again.
  CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 2>/dev/null | head -1 || true)
  if [ -z "$CUDARC" ]; then
    cargo fetch --locked >&2
    CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 | head -1)
  fi
  mkdir -p "$STUB"
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$CUDARC/src/driver/sys/mod.rs" |
    awk '{print "int " $4 "(void) { return 100; /* CUDA_ERROR_NO_DEVICE */ }"}' |
    sort -u > "$STUB/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB/libcuda.so.1" "$STUB/stub.c"
  ln -sf libcuda.so.1 "$STUB/libcuda.so"
  log "link-time driver stub: $(wc -l < "$STUB/stub.c") functions"
fi

vars=(
  "PATH=$CUDA/bin:$PATH"
  "CUDA_HOME=$CUDA" "CUDA_PATH=$CUDA" "CUDA_ROOT=$CUDA"
  "CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}"
  "LIBRARY_PATH=$CUDA/lib:$STUB${LIBRARY_PATH:+:$LIBRARY_PATH}"
  "CARGO_TARGET_DIR=${CARGO_TARGET_DIR_CUDA:-$HOME/.cache/dreamplan-target-cuda}"
)
if [ "$MODE" = env ]; then
  for v in "${vars[@]}"; do printf 'export %q\n' "$v"; done
  exit 0
fi
for v in "${vars[@]}"; do export "${v?}"; done
log "nvcc: $(nvcc --version | tail -1)"
if [ "$MODE" = check ]; then
  cargo check --locked --features cuda --lib --bins
elif [ "$MODE" = carry ]; then
  OUT=${2:-gpu_carry}
  # The default features but videoio (Cargo.toml's `default`), plus cuda.
  cargo build --release --locked --no-default-features --features cuda,ros2-dds
  BIN=$CARGO_TARGET_DIR/release/dreamplan
  if ldd "$BIN" | grep -q libopencv_videoio; then
    echo "cuda_toolchain: $BIN still links OpenCV's videoio" >&2
    exit 1
  fi
  rm -rf "$OUT" && mkdir -p "$OUT/lib"
  strip -o "$OUT/dreamplan" "$BIN"
  xz -9 -T0 -q "$OUT/dreamplan"
  # What the binary needs from this machine, CUDA, the driver and the C/C++ runtime aside.
  ldd "$BIN" | awk '/=> \//{print $3}' |
    grep -vE '/(libc|libm|libgcc_s|libstdc\+\+|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
    while read -r lib; do cp -L "$lib" "$OUT/lib/"; done
  cat > "$OUT/unpack.sh" <<'UNPACK'
#!/usr/bin/env bash
# On the GPU machine: bash gpu_carry/unpack.sh; then export the LD_LIBRARY_PATH it prints.
set -euo pipefail
D=$(cd "$(dirname "$0")" && pwd)
python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$D/dreamplan.xz" "$D/dreamplan"
chmod +x "$D/dreamplan"
CU=$(python3 -c 'import site, os; print(os.path.join(site.getsitepackages()[0], "nvidia", "cu13", "lib"))')
echo "export LD_LIBRARY_PATH=$D/lib:$CU\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
UNPACK
  chmod +x "$OUT/unpack.sh"
  log "carry bundle $OUT: $(du -sh "$OUT" | cut -f1) ($(ls "$OUT/lib" | wc -l) libraries); binary links:"
  ldd "$BIN" | grep -E 'opencv|cuda|cublas|curand' >&2 || true
else
  cargo build --release --locked --features cuda
  log "built $CARGO_TARGET_DIR/release/dreamplan ($(du -h "$CARGO_TARGET_DIR/release/dreamplan" | cut -f1)); it links:"
  ldd "$CARGO_TARGET_DIR/release/dreamplan" | grep -E 'cuda|cublas|curand|nvrtc' >&2 || true
fi
