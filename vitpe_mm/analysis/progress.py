"""The quiet progress hook of the analysis tools, `ProgressHook`: it lives with the other mmengine hooks in
vitpe_mm/engine/hooks.py (registered there); this name stays for the tools that import it from here.
"""
from vitpe_mm.engine.hooks import ProgressHook

__all__ = ['ProgressHook']
