"""Speed and memory of the vitpe_mm backbones side by side with the reference implementations (mmdet, mmseg,
timm) at equal weights: the reference pairs (`pairs`), their measurement (`measure`) and the attention cost curve
(`cost_curve`). The command line is tools/benchmark.py; the tests are tests/tools/test_benchmark.py.
"""
from .cost_curve import cost_curve, write_cost_curve_outputs
from .measure import DTYPES, FP32_TOLERANCE, MODES, run_benchmark, run_case
from .pairs import FAMILIES, PAIR_CLASSES, PAIRS, Contender, Pair, WholeModelPair, compare_outputs, perturb

__all__ = ['cost_curve', 'write_cost_curve_outputs', 'DTYPES', 'FP32_TOLERANCE', 'MODES', 'run_benchmark', 'run_case',
           'FAMILIES', 'PAIR_CLASSES', 'PAIRS', 'Contender', 'Pair', 'WholeModelPair', 'compare_outputs', 'perturb']
