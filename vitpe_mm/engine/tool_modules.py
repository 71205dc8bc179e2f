"""Deprecated: the command-line tools loaded from their files, for the two test files that still import it
(tests/tools/test_pe_ablation.py, tests/tools/test_eval_resolutions.py); delete it once they take `load_tool` from
tests/conftest.py, which is the one loader for tests.

No library or tool code uses it: what the tools share lives in the package (`vitpe_mm.engine.cli`: the train / test
arguments and config set-up).
"""
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ['TOOLS_DIR', 'load_tool']

TOOLS_DIR = Path(__file__).resolve().parents[2] / 'tools'


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py as a module (cached in sys.modules as `vitpe_tools_<name>`)."""
    module_name = f'vitpe_tools_{name}'
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = TOOLS_DIR / f'{name}.py'
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: the tools live in the repository checkout, next to vitpe_mm/')
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
