#!/usr/bin/env bash
# Creates (or checks) the project's environment in .venv: pinned torch/OpenMMLab stack from
# requirements/lock.txt, mmcv 2.1.0 built from source with its C++ ops (cached once per machine,
# outside the checkout), and vitpe_mm installed in editable mode.
#
#   bash tools/setup_env.sh          # idempotent; a no-op (~1 s) when .venv is up to date
#   bash tools/setup_env.sh --oldest # the oldest supported stack in .venv-oldest: Python 3.10, torch 2.1.2,
#                                    # requirements/lock-oldest.txt, mmcv 2.1.0 without ops (pure Python, seconds)
#   MMCV_WITH_OPS=1 bash tools/setup_env.sh --oldest   # the same with mmcv's C++ ops (full stack, one more build)
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
UV_VERSION="0.13.9"
MMCV_VERSION="2.1.0"
PROFILE="main"
case "${1:-}" in
  "") ;;
  --oldest) PROFILE="oldest" ;;
  *) echo "usage: bash tools/setup_env.sh [--oldest]" >&2; exit 2 ;;
esac
if [ "$PROFILE" = main ]; then
  VENV="$ROOT/.venv"
  LOCK="$ROOT/requirements/lock.txt"
  PY_WANT="3.11"
  MMCV_WITH_OPS="${MMCV_WITH_OPS:-1}"
else
  VENV="$ROOT/.venv-oldest"
  LOCK="$ROOT/requirements/lock-oldest.txt"
  PY_WANT="3.10"
  MMCV_WITH_OPS="${MMCV_WITH_OPS:-0}"
fi
# mmcv wheels without ops are cached under their own key
[ "$MMCV_WITH_OPS" = 1 ] && MMCV_KEY_SUFFIX="" || MMCV_KEY_SUFFIX="_noops"
# pyenv's CPython of the wanted minor version when no python3.X is on PATH (this machine kind has 3.8-3.13)
find_python() {
  if command -v "python$PY_WANT" >/dev/null 2>&1 && "python$PY_WANT" -c '' >/dev/null 2>&1; then
    echo "python$PY_WANT"; return
  fi
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  ls -d "$root"/versions/"$PY_WANT".*/bin/python"$PY_WANT" 2>/dev/null | sort -V | tail -n 1
}
PYTHON_BIN="${VITPE_MM_PYTHON:-$(find_python)}"
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
  local log="$CACHE/logs/$PROFILE-$name.log"
  if ! "$@" >"$log" 2>&1; then
    printf '\n[setup] --- last lines of %s ---\n' "$log" >&2
    tail -n 15 "$log" >&2
    return 1
  fi
}

[ -n "$PYTHON_BIN" ] || PYTHON_BIN=python3
command -v "$PYTHON_BIN" >/dev/null 2>&1 \
  || die "no python$PY_WANT found." "Install Python $PY_WANT (with venv) and run this script again, or set VITPE_MM_PYTHON."
"$PYTHON_BIN" -c "import sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, '$PY_WANT'.split('.'))))" 2>/dev/null \
  || die "$("$PYTHON_BIN" --version 2>&1) found, Python $PY_WANT with the venv module is required." \
         "The pinned wheels of $(basename "$LOCK") are for CPython $PY_WANT; set VITPE_MM_PYTHON=/path/to/python$PY_WANT."
command -v gcc >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 \
  || die "gcc/g++ not found: they are needed once to build mmcv's C++ ops." "Debian/Ubuntu: apt-get install -y build-essential"

mkdir -p "$CACHE/logs" "$CACHE/wheels"

stamp_value() {
  { cat "$LOCK" "$ROOT/tools/setup_env.sh" "$ROOT/pyproject.toml"; echo "$PROFILE $MMCV_WITH_OPS"; } | sha256sum | cut -c1-16
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

# 2. The venv; first only what building mmcv needs (torch, setuptools with pkg_resources, ninja),
# pinned by the lock. uv reads the public index only (not the local pip configuration), so torch
# comes as the PyPI build that torchvision links against.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  run_logged venv "$UV" venv --seed --python "$PYTHON_BIN" "$VENV" || die "could not create $VENV."
fi
say "[$PROFILE] installing torch $(grep -m1 '^torch==' "$LOCK" | cut -d= -f3) and the build tools (first time ~2 min of downloads, then seconds)"
run_logged deps-build "$UV" pip install --python "$VENV/bin/python" -c "$LOCK" torch setuptools ninja numpy \
  || die "installing torch from requirements/lock.txt failed (see $CACHE/logs/$PROFILE-deps-build.log)." "Check the network to the package index and the free disk space (df -h $CACHE)."

# 3. mmcv with its ops, built once per (mmcv, torch, python, platform) and cached. The build runs
# in the background while the rest of the lock is installed (CPU-bound beside network-bound).
TORCH_VERSION="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
PY_TAG="cp$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_VERSION}_${PY_TAG}_$(uname -m)${MMCV_KEY_SUFFIX:-}"
WHEEL_DIR="$CACHE/wheels/$KEY"
wheel() { ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1; }

build_pid=""
if [ -z "$(wheel)" ]; then
  exec 9>"$CACHE/mmcv-build.lock"
  if ! flock -n 9; then
    say "another set-up is building mmcv right now; waiting for it"
    flock 9
  fi
fi
if [ -z "$(wheel)" ]; then
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
  # No debug info: Python's own CFLAGS carry -g, which makes every object several times larger
  # and the compile slower; -g0 last on the command line wins and the generated code is the same.
  sed -i "s/'-std=c++\(17\|20\)'/'-std=c++\1', '-g0'/g" "$src/setup.py"
  with_ops="$MMCV_WITH_OPS"
  # Without ops mmcv's setup.py names the distribution 'mmcv-lite', which no `mmcv>=...` requirement
  # (ours, mim's) accepts: keep the name mmcv; the wheel is mmcv 2.1.0's Python code without compiled ops.
  [ "$with_ops" = 1 ] || sed -i "s/else 'mmcv-lite'/else 'mmcv'/" "$src/setup.py"
  if [ "$with_ops" = 1 ]; then
    say "building mmcv $MMCV_VERSION with its C++ ops against torch $TORCH_VERSION in the background (once per machine, ~10-12 min on 2 cores)"
  else
    say "building mmcv $MMCV_VERSION without ops (MMCV_WITH_OPS=0, pure Python, seconds)"
  fi
  (
    cd "$src"
    export MMCV_WITH_OPS="$with_ops" FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    export CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0"
    "$VENV/bin/python" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation -v \
      -w "$build/dist" . >"$CACHE/logs/$PROFILE-mmcv-build.log" 2>&1
  ) &
  build_pid=$!
  build_t0=$(date +%s)
fi

say "installing the rest of requirements/$(basename "$LOCK") (first time ~1-2 min, then seconds)"
run_logged deps "$UV" pip install --python "$VENV/bin/python" -r "$LOCK" \
  || die "installing requirements/$(basename "$LOCK") failed (see $CACHE/logs/$PROFILE-deps.log)." "Check the network to the package index and the free disk space (df -h $CACHE)."

if [ -n "$build_pid" ]; then
  while kill -0 "$build_pid" 2>/dev/null; do
    n=$(find "$build" -name '*.o' 2>/dev/null | wc -l)
    say "  ... mmcv build running for $(( $(date +%s) - build_t0 )) s, $n object files compiled"
    for _ in $(seq 30); do kill -0 "$build_pid" 2>/dev/null || break; sleep 1; done
  done
  if ! wait "$build_pid"; then
    tail -n 15 "$CACHE/logs/$PROFILE-mmcv-build.log" >&2
    die "building mmcv failed (full log: $CACHE/logs/$PROFILE-mmcv-build.log)." \
        "It needs gcc/g++ >= 10, the Python headers (python3-dev) and ~2 GB free in $CACHE."
  fi
  mkdir -p "$WHEEL_DIR"
  mv "$build"/dist/mmcv-*.whl "$WHEEL_DIR/"
  say "mmcv wheel cached after $(( $(date +%s) - build_t0 )) s: $(wheel)"
fi
flock -u 9 2>/dev/null || true
run_logged mmcv-install "$UV" pip install --python "$VENV/bin/python" --no-deps --reinstall-package mmcv "$(wheel)" \
  || die "installing the cached mmcv wheel failed." "Delete $WHEEL_DIR and run this script again to rebuild it."

# 4. The project itself, editable, with its declared dependencies (pyproject.toml ranges): as a user's
# `pip install -e .` into an existing environment, it must keep the torch and mmcv already there.
versions() { "$VENV/bin/python" -c "from importlib.metadata import version as v; print('torch', v('torch'), 'mmcv', v('mmcv'))"; }
before="$(versions)"
run_logged project "$UV" pip install --python "$VENV/bin/python" -e "$ROOT" \
  || die "installing vitpe_mm in editable mode failed (see $CACHE/logs/$PROFILE-project.log)."
after="$(versions)"
[ "$before" = "$after" ] \
  || die "installing vitpe_mm changed the environment: $before -> $after" "pyproject.toml's dependency ranges must admit the locked versions."

# 5. Check that the stack imports, mmcv's compiled ops included (when built with them).
OPS_IMPORT=""
[ "$MMCV_WITH_OPS" = 1 ] && OPS_IMPORT="from mmcv.ops import nms, RoIAlign"
run_logged check "$VENV/bin/python" -c "
import torch, torchvision, mmengine, mmcv, mmdet, mmseg, timm
$OPS_IMPORT
import vitpe_mm
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'mmcv', mmcv.__version__,
      'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__, 'timm', timm.__version__)
" || die "the environment does not import cleanly (see $CACHE/logs/$PROFILE-check.log)." "Delete $VENV and run this script again."
stamp_value >"$STAMP"
say "environment ready in $(( $(date +%s) - start )) s: $(tail -n 1 "$CACHE/logs/$PROFILE-check.log")"
