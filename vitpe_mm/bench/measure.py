"""Timing, memory and FLOPs of a benchmark pair, and the rows tools/benchmark.py prints and saves.

Method (printed with the results and stored in the JSON `meta`):
  * outputs: eval mode, no grad; the maximum absolute difference over all returned maps (whole models: the
    neck features of `extract_feat`). fp32 pairs are expected equal to 1e-5; some pairs follow another
    convention at some sizes (timm floors the patch grid where we pad; timm's Swin rolls before padding where
    we and mmdet pad first): the row then carries a note.
  * time: `--warmup` untimed runs of each contender, then `--repeats` rounds; every round runs ours and the
    reference once each, alternating which goes first, so that load changes on a shared machine hit both;
    the median per contender is reported (CUDA is synchronised around each run). 'fwd' = eval + no_grad;
    'fwdbwd' = train mode, forward, sum of the outputs' means (whole models: the sum of the losses with
    synthetic ground truth, same seed for both), backward; gradients are released between runs.
  * memory: the peak of bytes held by PyTorch's allocator during one run, above the level at its start
    (activations, saved tensors, gradients, workspaces; weights and inputs excluded). CPU: from the allocation
    events of torch.profiler (profile_memory=True, `total_allocated` of each event); oneDNN/MKL internal
    scratch buffers are not PyTorch tensors and are not counted. CUDA: torch.cuda.max_memory_allocated().
  * FLOPs: torch.utils.flop_counter.FlopCounterMode over one run of each contender (matmuls, convolutions,
    attention kernels, including the CPU flash-attention kernels registered below); TFLOP/s = FLOPs / median
    time, and its fraction of `--peak-tflops` when given.

`--compile` runs both sides under torch.compile (inductor, static shapes: `dynamic=False`, as tools/train.py
compiles): the timed closures (model plus feature extraction or losses) are compiled, the warm-up runs (at least
2) compile, the compared outputs are those of the compiled models, FLOPs are not counted.

`run_benchmark(args)` and `run_case(..., args)` take tools/benchmark.py's parsed arguments (an
`argparse.Namespace`; the attributes read are the tool's options: models, sizes, batch, dtype, modes, device,
repeats, warmup, tiny, compile, no_memory, no_flops, peak_tflops).
"""
import contextlib
import datetime
import gc
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .pairs import PAIR_CLASSES, Contender, Pair, compare_outputs, set_train

__all__ = ['DTYPES', 'FP32_TOLERANCE', 'HEADER', 'MODES', 'compiled_contender', 'count_flops', 'format_mb',
           'machine_meta', 'make_step', 'peak_memory', 'prepare', 'print_row', 'raise_recompile_limit',
           'register_cpu_attention_flops', 'run_benchmark', 'run_case', 'timed']

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}
MODES = ('fwd', 'fwdbwd')
FP32_TOLERANCE = 1e-5


def register_cpu_attention_flops() -> None:
    """FlopCounterMode knows the CUDA attention kernels; teach it the CPU flash kernels (same formulas)."""
    from torch.utils import flop_counter as fc
    aten = torch.ops.aten
    registry = getattr(fc, 'flop_registry', {})
    fwd = getattr(aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    bwd = getattr(aten, '_scaled_dot_product_flash_attention_for_cpu_backward', None)
    try:
        if fwd is not None and fwd.default not in registry:
            @fc.register_flop_formula(fwd)
            def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
                return fc.sdpa_flop_count(query_shape, key_shape, value_shape)
        if bwd is not None and bwd.default not in registry:
            @fc.register_flop_formula(bwd)
            def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
                return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
    except Exception as err:  # a private API: counting is best effort
        print(f'note: CPU attention FLOPs not registered ({err})', file=sys.stderr)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _zero_grads(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def make_step(contender: Contender, mode: str, batch, dtype: torch.dtype, device: torch.device) -> Callable:
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext

    if mode == 'fwd':
        def step():
            with torch.no_grad(), autocast():
                contender.forward(batch)
    else:
        def step():
            with autocast():
                loss = contender.loss(batch)
            loss.backward()
    return step


def compiled_contender(contender: Contender) -> Contender:
    """The contender with its forward, loss and outputs under torch.compile (inductor, `dynamic=False`): what is
    timed is the whole closure, the model and the reference's own feature extraction (timm's forward_features,
    mmdet's losses). Each input size, train / eval mode and grad mode gets its own graph."""
    compiled: Dict[int, Callable] = {}

    def compile_once(fn: Callable) -> Callable:  # forward and outputs are often the same function
        if id(fn) not in compiled:
            compiled[id(fn)] = torch.compile(fn, dynamic=False)
        return compiled[id(fn)]
    return Contender(contender.name, contender.module, compile_once(contender.forward), compile_once(contender.loss),
                     compile_once(contender.outputs))


def raise_recompile_limit(limit: int = 64) -> None:
    """One graph per (size, mode, dtype) and model: more than dynamo's default limit of 8 in a full run."""
    config = torch._dynamo.config
    for name in ('recompile_limit', 'cache_size_limit'):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))


def prepare(contender: Contender, mode: str) -> None:
    set_train(contender.module, mode == 'fwdbwd')
    _zero_grads(contender.module)


def timed(step: Callable, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def _native_stderr_muted():
    """Silences file descriptor 2 (C++ log lines) for the duration; Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(step: Callable, device: torch.device) -> Tuple[Optional[int], str]:
    """Peak bytes allocated by PyTorch during `step()` above the level at its start."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, 'torch.cuda.max_memory_allocated'
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _native_stderr_muted():  # Kineto prints 'USDT: ... profiler_start' to fd 2 at start and stop
            prof.__enter__()
        try:
            step()
        finally:
            with _native_stderr_muted():
                prof.__exit__(None, None, None)
        allocations, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            if node.tag == _EventType.Allocation and str(node.extra_fields.device) == 'cpu':
                fields = node.extra_fields
                allocations.append((node.start_time_ns, fields.alloc_size, fields.total_allocated))
            stack.extend(node.children)
        if not allocations:
            return None, 'no allocation events'
        allocations.sort()
        base = allocations[0][2] - allocations[0][1]
        return max(a[2] for a in allocations) - base, 'torch.profiler allocation events (CPU allocator)'
    except Exception as err:  # private profiler API: report instead of failing the run
        return None, f'unavailable ({type(err).__name__}: {err})'


def count_flops(step: Callable) -> Optional[int]:
    try:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            step()
        return int(counter.get_total_flops())
    except Exception as err:
        print(f'note: FLOP counting failed ({type(err).__name__}: {err})', file=sys.stderr)
        return None


def run_case(pair: Pair, size: Tuple[int, int], batch_size: int, dtype_name: str, modes: Sequence[str],
             args) -> List[dict]:
    """One row per mode: the outputs compared, then both contenders timed (interleaved), memory and FLOPs."""
    device, dtype = pair.device, DTYPES[dtype_name]
    ours, ref = pair.contenders(size)
    if args.compile:
        ours, ref = compiled_contender(ours), compiled_contender(ref)
    batch = pair.make_batch(batch_size, size)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext

    # Outputs, eval mode, no grad.
    for c in (ours, ref):
        prepare(c, 'fwd')
    with torch.no_grad(), autocast():
        ours_out, ref_out = ours.outputs(batch), ref.outputs(batch)
        diff, diffs, scaled = compare_outputs(ours_out, ref_out)
        del ours_out, ref_out
    tolerance = FP32_TOLERANCE if dtype == torch.float32 else None
    low_precision_error = None
    if dtype != torch.float32:
        # bf16: each side's mean |error| against the reference in fp32 (ours must not be less accurate)
        with torch.no_grad():
            exact = ref.outputs(batch)
            with autocast():
                low = dict(ours=ours.outputs(batch), ref=ref.outputs(batch))
            if len(exact) == len(low['ours']) == len(low['ref']):
                low_precision_error = {
                    key: max((o.float() - e.float()).abs().mean().item() for o, e in zip(outs, exact))
                    for key, outs in low.items()}
            del exact, low
    note = pair.note(size)
    rows = []
    for mode in modes:
        if mode == 'fwdbwd' and batch_size < pair.min_train_batch:
            print(f'{pair.name:<14} fwdbwd skipped: needs batch >= {pair.min_train_batch}')
            continue
        steps = {}
        for c in (ours, ref):
            prepare(c, mode)
            steps[c.name] = make_step(c, mode, batch, dtype, device)
        times: Dict[str, List[float]] = {ours.name: [], ref.name: []}
        for _ in range(args.warmup):
            for c in (ours, ref):
                steps[c.name]()
                _zero_grads(c.module)
        for r in range(args.repeats):
            order = (ours, ref) if r % 2 == 0 else (ref, ours)
            for c in order:
                times[c.name].append(timed(steps[c.name], device))
                _zero_grads(c.module)
        row = dict(pair=pair.name, size=list(size), batch=batch_size, dtype=dtype_name, device=str(device), mode=mode,
                   compiled=bool(args.compile), checkpoint_format=pair.fmt, max_abs_diff=diff, diffs=diffs,
                   max_scaled_diff=scaled, low_precision_mean_abs_error=low_precision_error, tolerance=tolerance,
                   equal=(scaled is not None and scaled <= tolerance) if tolerance is not None else None, note=note)
        if mode == 'fwdbwd':
            # the training forward may take other kernels than inference (e.g. the attention split for threads)
            with autocast():
                ours_out, ref_out = ours.outputs(batch), ref.outputs(batch)
                row['train_max_abs_diff'], _, row['train_max_scaled_diff'] = compare_outputs(ours_out, ref_out)
                del ours_out, ref_out
            if tolerance is not None and row['equal']:
                row['equal'] = (row['train_max_scaled_diff'] is not None
                                and row['train_max_scaled_diff'] <= tolerance)
        for key, c in (('ours', ours), ('ref', ref)):
            median = statistics.median(times[c.name])
            entry = dict(name=c.name, times_s=times[c.name], median_s=median, img_per_s=batch_size / median)
            if not args.no_memory:
                entry['peak_mem_bytes'], entry['mem_method'] = peak_memory(steps[c.name], device)
                _zero_grads(c.module)
            if not args.no_flops:
                entry['flops'] = count_flops(steps[c.name])
                _zero_grads(c.module)
                if entry['flops']:
                    entry['tflops'] = entry['flops'] / median / 1e12
                    if args.peak_tflops:
                        entry['peak_fraction'] = entry['tflops'] / args.peak_tflops
            row[key] = entry
        row['speedup'] = row['ref']['median_s'] / row['ours']['median_s']
        if row['ours'].get('peak_mem_bytes') and row['ref'].get('peak_mem_bytes'):
            row['mem_ratio'] = row['ours']['peak_mem_bytes'] / row['ref']['peak_mem_bytes']
        rows.append(row)
        print_row(row, flush=True)
        for c in (ours, ref):
            _zero_grads(c.module)
        gc.collect()
    return rows


# -------------------------------------------------------------------------------------------------------- output
HEADER = (f'{"pair":<14} {"size":>9} {"b":>2} {"dtype":>5} {"mode":>6} {"ours ms":>9} {"ref ms":>9} {"speedup":>7} '
          f'{"ours img/s":>10} {"ours MB":>8} {"ref MB":>8} {"mem":>5} {"TFLOP/s":>7} {"max|diff|":>9}  note')


def format_mb(value: Optional[int]) -> str:
    return f'{value / 2 ** 20:8.1f}' if value is not None else f'{"-":>8}'


def print_row(row: dict, flush: bool = False) -> None:
    o, r = row['ours'], row['ref']
    values = [row['max_abs_diff'], row.get('train_max_abs_diff', row['max_abs_diff'])]
    diff = f'{max(values):.1e}' if None not in values else 'n/a'
    mem = f'{row["mem_ratio"]:5.2f}' if row.get('mem_ratio') else f'{"-":>5}'
    tflops = f'{o["tflops"]:7.3f}' if o.get('tflops') else f'{"-":>7}'
    if row['equal'] is False:
        diff += ' !'
    size = 'x'.join(map(str, row['size']))
    note = ('compiled' + (f'; {row["note"]}' if row['note'] else '')) if row.get('compiled') else row['note']
    err = row.get('low_precision_mean_abs_error')
    if err:
        note = (f'{row["dtype"]} mean|error| vs the fp32 reference: ours {err["ours"]:.2e}, ref {err["ref"]:.2e}'
                + (f'; {note}' if note else ''))
    print(f'{row["pair"]:<14} {size:>9} {row["batch"]:>2} {row["dtype"]:>5} {row["mode"]:>6} '
          f'{o["median_s"] * 1e3:9.1f} {r["median_s"] * 1e3:9.1f} {row["speedup"]:6.2f}x {o["img_per_s"]:10.2f} '
          f'{format_mb(o.get("peak_mem_bytes"))} {format_mb(r.get("peak_mem_bytes"))} {mem} {tflops} {diff:>9}  '
          f'{note}', flush=flush)


def machine_meta(args) -> dict:
    meta = dict(
        date=datetime.datetime.now().isoformat(timespec='seconds'), python=platform.python_version(),
        torch=torch.__version__, platform=platform.platform(), processor=platform.processor(),
        cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), device=args.device,
        argv=sys.argv[1:], repeats=args.repeats, warmup=args.warmup, compile=bool(args.compile),
    )
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        meta['cpu_model'] = names[0] if names else None
    except OSError:
        pass
    if hasattr(os, 'getloadavg'):
        meta['loadavg_start'] = os.getloadavg()
    if args.device.startswith('cuda') and torch.cuda.is_available():
        meta['gpu'] = torch.cuda.get_device_name()
    for name in ('timm', 'mmdet', 'mmseg', 'mmcv', 'mmengine'):
        try:
            meta[name] = __import__(name).__version__
        except Exception:
            meta[name] = None
    meta['method'] = dict(
        timing='median of --repeats interleaved runs (order alternating), after --warmup runs of each',
        fwd='eval mode, torch.no_grad', fwdbwd='train mode (drop path 0), sum of output means or of the losses, '
        'backward; gradients released between runs',
        memory='peak bytes held by the PyTorch allocator during one run above the level at its start: CPU from '
        'torch.profiler allocation events (total_allocated), CUDA from torch.cuda.max_memory_allocated',
        flops='torch.utils.flop_counter.FlopCounterMode over one run (CPU flash attention registered)',
        equality=f'max abs difference of the outputs in eval mode (and of the training forward for fwdbwd rows); '
                 f'equal when max|ours - ref| <= tol * max(1, max|ref|) for every output map, fp32 tol '
                 f'{FP32_TOLERANCE}')
    return meta



def _check_imports(needs: Sequence[str]) -> Optional[str]:
    for name in needs:
        try:
            __import__(name)
        except Exception as err:  # mmcv ops missing, etc.
            return f'{name} not importable: {type(err).__name__}: {err}'
    return None


def _quiet_openmmlab() -> None:
    import logging
    try:
        from mmengine.logging import MMLogger
        MMLogger.get_instance('mmengine', log_level='WARNING').setLevel(logging.WARNING)
    except Exception:
        pass
    logging.getLogger('mmengine').setLevel(logging.WARNING)


def run_benchmark(args) -> dict:
    """Every pair of `args.models` at every size, batch and dtype: {'meta', 'results' (rows), 'errors'}."""
    device = torch.device(args.device)
    _quiet_openmmlab()
    register_cpu_attention_flops()
    meta = machine_meta(args)
    results, errors = [], []
    print(f'# torch {torch.__version__}, {meta.get("cpu_model") or platform.processor()}, '
          f'{torch.get_num_threads()} threads, device {device}'
          + (f', loadavg {meta["loadavg_start"]}' if 'loadavg_start' in meta else ''))
    print(f'# speedup = ref time / ours time (>1: ours faster); mem = ours peak / ref peak; '
          f'median of {args.repeats} interleaved runs after {args.warmup} warm-up')
    print(HEADER)
    for name in args.models:
        cls = PAIR_CLASSES[name]
        missing = _check_imports(cls.needs)
        if missing:
            errors.append(dict(pair=name, error=missing))
            print(f'{name:<14} skipped: {missing}')
            continue
        try:
            pair = cls(args.tiny, device)
        except Exception as err:
            errors.append(dict(pair=name, error=f'{type(err).__name__}: {err}'))
            print(f'{name:<14} failed to build: {type(err).__name__}: {err}')
            continue
        for size in args.sizes:
            for batch in args.batch:
                if 'fwdbwd' in args.modes and batch < pair.min_train_batch:
                    errors.append(dict(pair=name, size=list(size), batch=batch, mode='fwdbwd',
                                       error=f'skipped: training needs batch >= {pair.min_train_batch}'))
                for dtype in args.dtype:
                    try:
                        results.extend(run_case(pair, size, batch, dtype, args.modes, args))
                    except Exception as err:
                        errors.append(dict(pair=name, size=list(size), batch=batch, dtype=dtype,
                                           error=f'{type(err).__name__}: {err}'))
                        print(f'{name:<14} {size} b{batch} {dtype}: {type(err).__name__}: {err}')
                    gc.collect()
        del pair
        gc.collect()
    if hasattr(os, 'getloadavg'):
        meta['loadavg_end'] = os.getloadavg()
    return dict(meta=meta, results=results, errors=errors)
