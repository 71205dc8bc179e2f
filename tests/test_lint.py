"""The whole tree passes ruff (lint + import order, configured in pyproject.toml), so CI fails on a lint error."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes_on_the_whole_tree():
    pytest.importorskip('ruff', reason='ruff is in requirements/lock.txt (bash run.sh test installs it)')
    result = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache', str(ROOT)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f'ruff check failed:\n{result.stdout}{result.stderr}'
