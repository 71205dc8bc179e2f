"""Helpers, fixtures and hooks shared by the test files (the only conftest.py under tests/).

Test modules import the helpers by name, `from conftest import load_tool, perturb`: pytest puts this folder on
sys.path when it loads this file (its default `prepend` import mode; tests/ holds no __init__.py). A second
conftest.py in a sub-folder would take over the module name `conftest`, hence one file.
"""
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from vitpe_mm.bench.pairs import perturb

__all__ = ['ROOT', 'TOOLS_DIR', 'load_tool', 'perturb']

ROOT = Path(__file__).resolve().parents[1]
TOOLS_DIR = ROOT / 'tools'


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py as a module, loaded once (cached in sys.modules as `vitpe_tools_<name>`).

    tools/ is no package, and `import test` would find the standard library's `test` package, so a tool is loaded
    from its file. The tools themselves share code through the package (vitpe_mm.engine.cli), not this.
    """
    module_name = f'vitpe_tools_{name}'
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = TOOLS_DIR / f'{name}.py'
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: tools/ has {sorted(p.stem for p in TOOLS_DIR.glob("*.py"))}')
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `gpu` skip, saying why, on a machine without CUDA (the default run still collects them)."""
    if item.get_closest_marker('gpu') is not None and not torch.cuda.is_available():
        pytest.skip('marked gpu: needs a CUDA device, none is available (torch.cuda.is_available() is False)')


@pytest.fixture
def one_thread():
    """Runs in-process tools on one thread, like the subprocesses the tests start (see test_train_test.run_tool)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
