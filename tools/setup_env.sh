#!/usr/bin/env bash
# Creates (or checks) the project's environment in .venv: pinned torch/OpenMMLab stack from
# requirements/lock.txt, mmcv 2.1.0 built from source with its C++ ops (cached once per machine,
# outside the checkout), and vitpe_mm installed in editable mode.
#
#   bash tools/setup_env.sh          # idempotent; a no-op (~1 s) when .venv is up to date
#   VITPE_MM_CACHE=/path bash tools/setup_env.sh
#
# Everything downloaded or built lives in $VITPE_MM_CACHE (default ~/.cache/vitpe_mm):
#   uv/          uv's package cache; files are hard-linked into a new venv, so a second clone costs
#                seconds and almost no disk
#   bootstrap/   a tiny venv holding the uv binary
#   wheels/      mmcv wheels, one folder per (mmcv, torch, python, platform) key
#   logs/        full logs of the last build steps
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${VITPE_MM_CACHE:-$HOME/.cache/vitpe_mm}"
VENV="$ROOT/.venv"
LOCK="$ROOT/requirements/lock.txt"
UV_VERSION="0.13.9"
MMCV_VERSION="2.1.0"
PYTHON_BIN="${VITPE_MM_PYTHON:-python3.11}"
export UV_CACHE_DIR="$CACHE/uv"
export UV_LINK_MODE="${UV_LINK_MODE:-hardlink}"

say() { printf '[setup] %s\n' "$*" >&2; }
die() {
  printf '\n[setup] ERROR: %s\n' "$1" >&2
  [ $# -gt 1 ] && printf '[setup] %s\n' "${@:2}" >&2
  exit 1
}

# run_logged NAME CMD...: runs CMD with its output in $CACHE/logs/NAME.log; on failure shows the
# last lines and where the whole log is, instead of a wall of compiler output.
run_logged() {
  local name="$1"; shift
  local log="$CACHE/logs/$name.log"
  if ! "$@" >"$log" 2>&1; then
    printf '\n[setup] --- last lines of %s ---\n' "$log" >&2
    tail -n 15 "$log" >&2
    return 1
  fi
}

command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3
command -v "$PYTHON_BIN" >/dev/null 2>&1 \
  || die "no python3 found." "Install Python 3.11 (with venv) and run this script again."
"$PYTHON_BIN" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
  || die "$("$PYTHON_BIN" --version 2>&1) found, Python 3.11 with the venv module is required." \
         "The pinned wheels (torch 2.13.0, mmcv build) are for CPython 3.11; set VITPE_MM_PYTHON=/path/to/python3.11."
command -v gcc >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 \
  || die "gcc/g++ not found: they are needed once to build mmcv's C++ ops." "Debian/Ubuntu: apt-get install -y build-essential"

mkdir -p "$CACHE/logs" "$CACHE/wheels"

stamp_value() {
  cat "$LOCK" "$ROOT/tools/setup_env.sh" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16
}
STAMP="$VENV/.vitpe_mm_ready"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_value)" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

start=$(date +%s)
# 1. uv, in a bootstrap venv inside the cache.
UV="$CACHE/bootstrap/bin/uv"
if [ ! -x "$UV" ] || [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  say "installing uv $UV_VERSION into $CACHE/bootstrap"
  "$PYTHON_BIN" -m venv "$CACHE/bootstrap" || die "could not create a venv with $PYTHON_BIN." "Debian: apt-get install -y python3-venv"
  run_logged uv-install "$CACHE/bootstrap/bin/pip" install --disable-pip-version-check "uv==$UV_VERSION" \
    || die "could not install uv from the package index." "Check that the Python package index is reachable."
fi

# 2. The venv and the locked packages. uv reads the public index only (not the local pip
# configuration), so torch comes as the PyPI build that torchvision links against.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  run_logged venv "$UV" venv --seed --python "$PYTHON_BIN" "$VENV" || die "could not create $VENV."
fi
say "installing the locked packages (torch 2.13.0, mmdet 3.3.0, mmseg 1.2.2, timm; first time ~2-3 min, then seconds)"
run_logged deps "$UV" pip install --python "$VENV/bin/python" -r "$LOCK" \
  || die "installing requirements/lock.txt failed (see $CACHE/logs/deps.log)." "Check the network to the package index and the free disk space (df -h $CACHE)."

# 3. mmcv with its ops, built once per (mmcv, torch, python, platform) and cached.
TORCH_VERSION="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
PY_TAG="cp$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_VERSION}_${PY_TAG}_$(uname -m)"
WHEEL_DIR="$CACHE/wheels/$KEY"
wheel() { ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1; }

if [ -z "$(wheel)" ]; then
  exec 9>"$CACHE/mmcv-build.lock"
  if ! flock -n 9; then
    say "another set-up is building mmcv right now; waiting for it"
    flock 9
  fi
fi
if [ -z "$(wheel)" ]; then
  say "building mmcv $MMCV_VERSION with its C++ ops against torch $TORCH_VERSION (once per machine, ~10-12 min on 2 cores)"
  build="$(mktemp -d "$CACHE/mmcv-build.XXXXXX")"
  trap 'rm -rf "$build"' EXIT
  run_logged mmcv-download "$VENV/bin/python" -m pip download --disable-pip-version-check --no-deps \
      --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$build" \
    || die "could not download the mmcv $MMCV_VERSION source distribution." "Check the network to the package index."
  tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
  src="$build/mmcv-$MMCV_VERSION"
  # torch >= 2.14 headers need C++20; mmcv's setup.py hard-codes -std=c++17.
  if "$VENV/bin/python" -c "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 14))"; then
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    say "patched mmcv setup.py: -std=c++17 -> -std=c++20 (torch $TORCH_VERSION headers)"
  fi
  (
    cd "$src"
    export MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    "$VENV/bin/python" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation -v \
      -w "$build/dist" . >"$CACHE/logs/mmcv-build.log" 2>&1
  ) &
  pid=$!
  t0=$(date +%s)
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    n=$(find "$build" -name '*.o' 2>/dev/null | wc -l)
    say "  ... mmcv build running for $(( $(date +%s) - t0 )) s, $n object files compiled"
  done
  if ! wait "$pid"; then
    tail -n 15 "$CACHE/logs/mmcv-build.log" >&2
    die "building mmcv failed (full log: $CACHE/logs/mmcv-build.log)." \
        "It needs gcc/g++ >= 10, the Python 3.11 headers (python3.11-dev) and ~2 GB free in $CACHE."
  fi
  mkdir -p "$WHEEL_DIR"
  mv "$build"/dist/mmcv-*.whl "$WHEEL_DIR/"
  say "mmcv wheel cached: $(wheel)"
fi
flock -u 9 2>/dev/null || true
run_logged mmcv-install "$UV" pip install --python "$VENV/bin/python" --no-deps --reinstall-package mmcv "$(wheel)" \
  || die "installing the cached mmcv wheel failed." "Delete $WHEEL_DIR and run this script again to rebuild it."

# 4. The project itself, editable.
run_logged project "$UV" pip install --python "$VENV/bin/python" --no-deps -e "$ROOT" \
  || die "installing vitpe_mm in editable mode failed (see $CACHE/logs/project.log)."

# 5. Check that the stack imports, mmcv's compiled ops included.
run_logged check "$VENV/bin/python" -c "
import torch, torchvision, mmengine, mmcv, mmdet, mmseg, timm
from mmcv.ops import nms, RoIAlign
import vitpe_mm
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'mmcv', mmcv.__version__,
      'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__, 'timm', timm.__version__)
" || die "the environment does not import cleanly (see $CACHE/logs/check.log)." "Delete .venv and run this script again."
stamp_value >"$STAMP"
say "environment ready in $(( $(date +%s) - start )) s: $(tail -n 1 "$CACHE/logs/check.log")"
