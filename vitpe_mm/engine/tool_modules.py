"""The repository's command-line tools as importable modules, so that a tool can reuse another's config set-up.

tools/ is no package, and `import test` would find the standard library's `test` package, so a tool is loaded
from its file: `load_tool('test').setup_test_cfg(args)` is exactly what tools/test.py runs before building its
runner (tools/eval_resolutions.py and tools/pe_ablation.py evaluate and train through it).
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
