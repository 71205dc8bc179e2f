"""What every vitpe_mm backbone shares: the OpenMMLab backbone contract around a torch model.

Handles `init_cfg=dict(type='Pretrained', checkpoint=PATH|URL|HUB_ID[, prefix=, map_location=, format=,
allow_unexpected=])` through vitpe_mm.checkpoint (foreign formats detected from keys and converted, tables
resampled; `model.init_cfg` keeps the dict, as mmengine's modules do), `frozen_stages` kept frozen in train(), and the
names of parameters that should get no weight decay; the argument names of the OpenMMLab backbones each one
replaces (`toolbox_args`, vitpe_mm.models.toolbox_args) and mmseg's `norm_eval`.
"""
import functools
import inspect
import logging
from typing import List, Optional, Tuple, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule

from ..checkpoint import load_pretrained
from ..layers import parse_pe_type
from .toolbox_args import ToolboxArgs

# What `norm_eval` keeps in eval mode (LayerNorm2d is a LayerNorm).
NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def init_linear_and_norm(m: nn.Module) -> None:
    """The official Swin / Twins / timm initialisation of a module (`model.apply(init_linear_and_norm)`): linear
    weights truncated normal (std 0.02) with zero biases, LayerNorms ones and zeros; other modules untouched."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


PRETRAINED_KEYS = ('type', 'checkpoint', 'prefix', 'map_location', 'format', 'allow_unexpected')


def split_pretrained(init_cfg: Union[dict, list, None]) -> Tuple[Optional[dict], List[dict]]:
    """(the Pretrained entry or None, the other entries) of an init_cfg dict or list; checks the Pretrained one."""
    if init_cfg is None:
        return None, []
    if not isinstance(init_cfg, (dict, list, tuple)):
        raise ValueError(f'init_cfg must be a dict such as dict(type="Pretrained", checkpoint=PATH), got {init_cfg!r}')
    entries = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    pretrained = [e for e in entries if isinstance(e, dict) and e.get('type') == 'Pretrained']
    others = [e for e in entries if not (isinstance(e, dict) and e.get('type') == 'Pretrained')]
    if len(pretrained) > 1:
        raise ValueError(f'init_cfg holds {len(pretrained)} Pretrained entries; give one: {init_cfg!r}')
    if not pretrained:
        return None, others
    cfg = pretrained[0]
    unknown = sorted(set(cfg) - set(PRETRAINED_KEYS))
    if unknown or not cfg.get('checkpoint'):
        raise ValueError(
            f'init_cfg Pretrained takes checkpoint=PATH|URL|HUB_ID and optionally prefix=, map_location=, format=, '
            f'allow_unexpected=; got {dict(cfg)!r}' + (f' (unknown: {", ".join(unknown)})' if unknown else ''))
    return dict(cfg), others


class PEBackbone(BaseModule):
    """Base of the registered backbones.

    Subclasses set `family` (checkpoint formats registered under it), build their layers, and
    implement `_freeze_stages()`; `forward(x)` returns a tuple of B, C, H, W maps for `out_indices`.
    """

    family: str = ''
    # The toolbox argument names the backbone also accepts (vitpe_mm.models.toolbox_args), or None.
    toolbox_args: Optional[ToolboxArgs] = None
    # Keep the norm layers in eval mode in train() (mmseg's `norm_eval`; subclasses that take it set it).
    norm_eval: bool = False
    # Name fragments of parameters that take no weight decay: use with
    # paramwise_cfg=dict(custom_keys={k: dict(decay_mult=0.) for k in NO_WEIGHT_DECAY_KEYS}).
    no_weight_decay_keys: Tuple[str, ...] = ('pos_embed', 'cls_token', 'dist_token', 'pos_block',
                                             'relative_position_bias_table', 'rope.freqs', 'norm')

    def __init_subclass__(cls, **kwargs) -> None:
        # A config option the backbone does not have (`--cfg-options model.backbone.pe_typo=peg`) fails with the
        # list of accepted options instead of Python's TypeError that names only the bad keyword; the toolbox
        # argument names of `toolbox_args` (a stock mmdet/mmseg config with only `type=` changed) become ours first.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None:
            return
        params = inspect.signature(init).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        accepted = [name for name in params if name != 'self']
        defaults = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
        table: Optional[ToolboxArgs] = getattr(cls, 'toolbox_args', None)
        if table is not None:
            missing = set(table.targets()) - set(accepted)
            if missing:
                raise TypeError(f'{cls.__name__}.toolbox_args sets {sorted(missing)}, which __init__ does not take')

        @functools.wraps(init)
        def checked_init(self, *args, **kw):
            if len(args) > len(accepted):
                raise TypeError(f'{cls.__name__} takes at most {len(accepted)} positional arguments')
            for name, value in zip(accepted, args):
                if name in kw:
                    raise TypeError(f'{cls.__name__} got multiple values for argument {name!r}')
                kw[name] = value
            if table is not None:
                kw = table.translate(cls.__name__, kw, defaults)
            unknown = sorted(set(kw) - set(accepted))
            if unknown:
                hint = f'; {table.help()}' if table is not None else ''
                raise ValueError(f'{cls.__name__} got unknown option(s) {unknown}; accepted: {", ".join(accepted)}'
                                 f'{hint}')
            init(self, **kw)

        cls.__init__ = checked_init

    def __init__(self, pe_type: str, frozen_stages: int = -1, init_cfg: Optional[dict] = None) -> None:
        pe_type = parse_pe_type(pe_type)  # a name or a list of names (composed encodings)
        split_pretrained(init_cfg)  # fails here, at build time, on a malformed Pretrained entry
        super().__init__(init_cfg=init_cfg)  # kept as given: mmengine tooling reads model.init_cfg
        self.pe_type = pe_type
        self.frozen_stages = frozen_stages

    def init_weights(self) -> None:
        """mmengine's init_weights, with a Pretrained init_cfg loaded by vitpe_mm.checkpoint.

        Other init_cfg entries and child modules are initialised by mmengine first, then the checkpoint is
        loaded (mmengine's order); mmengine's own PretrainedInit never sees the entry (it cannot read foreign
        formats). Like mmengine, a second call does nothing.
        """
        pretrained, others = split_pretrained(self.init_cfg)
        if pretrained is None:
            super().init_weights()
            return
        if self._is_init:
            print_log(f'init_weights of {type(self).__name__} has been called more than once: the checkpoint is '
                      'not loaded again', logger='current', level=logging.WARNING)
            return
        init_cfg, self.init_cfg = self.init_cfg, (others or None)
        try:
            super().init_weights()
        finally:
            self.init_cfg = init_cfg
        source = pretrained['checkpoint']
        report = load_pretrained(self, source, self.family, pretrained.get('format', 'auto'),
                                 pretrained.get('allow_unexpected', False), pretrained.get('prefix'),
                                 pretrained.get('map_location', 'cpu'))
        print_log(f'{type(self).__name__}: loaded {source} ({report["format"]} format); '
                  f'missing {len(report["missing_keys"])}, unexpected {len(report["unexpected_keys"])}',
                  logger='current')
        self._is_init = True

    def _freeze_stages(self) -> None:
        raise NotImplementedError

    def train(self, mode: bool = True) -> 'PEBackbone':
        super().train(mode)
        if self.frozen_stages >= 0:
            self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, NORM_LAYERS):
                    m.eval()
        return self

    def no_weight_decay_names(self) -> List[str]:
        """Full names of the parameters that should take no weight decay (PE, cls token, norms, biases tables)."""
        return [n for n, p in self.named_parameters() if any(k in n for k in self.no_weight_decay_keys)]

    @staticmethod
    def freeze(module: nn.Module) -> None:
        module.eval()
        for p in module.parameters():
            p.requires_grad = False
