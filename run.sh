#!/usr/bin/env bash
# The project's entry point. Sets up .venv on first use (tools/setup_env.sh), then:
#   bash run.sh demo [args]   the main job (tools/demo.py)
#   bash run.sh test [args]   the test suite (pytest)
#   bash run.sh setup         only the set-up
#   bash run.sh python ...    any command inside the environment
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  demo|test|setup|python) ;;
  *) echo "usage: bash run.sh demo|test|setup|python [args]" >&2; exit 2 ;;
esac
bash "$ROOT/tools/setup_env.sh"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
PY="$ROOT/.venv/bin/python"
case "$cmd" in
  demo) exec "$PY" tools/demo.py "$@" ;;
  test) exec "$PY" -m pytest -q -rfEs -p no:cacheprovider "$@" ;;  # -rfEs: failures, errors and skips (with reasons) summarised
  setup) exit 0 ;;
  python) exec "$PY" "$@" ;;
esac
