"""What every vitpe_mm backbone shares: the OpenMMLab backbone contract around a torch model.

Handles `init_cfg=dict(type='Pretrained', checkpoint=PATH[, format=...])` through vitpe_mm.checkpoint
(foreign formats detected from keys and converted), `frozen_stages` kept frozen in train(), and the
names of parameters that should get no weight decay.
"""
import functools
import inspect
from typing import List, Optional, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule

from ..checkpoint import load_pretrained
from ..layers import PE_TYPES, check_choice


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


class PEBackbone(BaseModule):
    """Base of the registered backbones.

    Subclasses set `family` (checkpoint formats registered under it), build their layers, and
    implement `_freeze_stages()`; `forward(x)` returns a tuple of B, C, H, W maps for `out_indices`.
    """

    family: str = ''
    # Name fragments of parameters that take no weight decay: use with
    # paramwise_cfg=dict(custom_keys={k: dict(decay_mult=0.) for k in NO_WEIGHT_DECAY_KEYS}).
    no_weight_decay_keys: Tuple[str, ...] = ('pos_embed', 'cls_token', 'dist_token', 'pos_block',
                                             'relative_position_bias_table', 'norm')

    def __init_subclass__(cls, **kwargs) -> None:
        # A config option the backbone does not have (`--cfg-options model.backbone.pe_typo=peg`) fails with the
        # list of accepted options instead of Python's TypeError that names only the bad keyword.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None:
            return
        params = inspect.signature(init).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        accepted = [name for name in params if name != 'self']

        @functools.wraps(init)
        def checked_init(self, *args, **kw):
            unknown = sorted(set(kw) - set(accepted))
            if unknown:
                raise ValueError(f'{cls.__name__} got unknown option(s) {unknown}; accepted: {", ".join(accepted)}')
            init(self, *args, **kw)

        cls.__init__ = checked_init

    def __init__(self, pe_type: str, frozen_stages: int = -1, init_cfg: Optional[dict] = None) -> None:
        check_choice(pe_type, 'pe_type', PE_TYPES)
        if init_cfg is not None and not isinstance(init_cfg, (dict, list)):
            raise ValueError(f'init_cfg must be a dict such as dict(type="Pretrained", checkpoint=PATH), got {init_cfg!r}')
        pretrained = None
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            unknown = set(init_cfg) - {'type', 'checkpoint', 'format', 'allow_unexpected'}
            if unknown or 'checkpoint' not in init_cfg:
                raise ValueError(f'init_cfg Pretrained takes checkpoint=PATH and optionally format=NAME, allow_unexpected=bool; '
                                 f'got {init_cfg!r}')
            pretrained, init_cfg = dict(init_cfg), None
        super().__init__(init_cfg=init_cfg)
        self.pe_type = pe_type
        self.frozen_stages = frozen_stages
        self._pretrained = pretrained

    def init_weights(self) -> None:
        if self._pretrained is None:
            super().init_weights()
            return
        report = load_pretrained(self, self._pretrained['checkpoint'], self.family,
                                 self._pretrained.get('format', 'auto'), self._pretrained.get('allow_unexpected', False))
        print_log(f'{type(self).__name__}: loaded {self._pretrained["checkpoint"]} ({report["format"]} format); '
                  f'missing {len(report["missing_keys"])}, unexpected {len(report["unexpected_keys"])}',
                  logger='current')
        self._is_init = True

    def _freeze_stages(self) -> None:
        raise NotImplementedError

    def train(self, mode: bool = True) -> 'PEBackbone':
        super().train(mode)
        if self.frozen_stages >= 0:
            self._freeze_stages()
        return self

    def no_weight_decay_names(self) -> List[str]:
        """Full names of the parameters that should take no weight decay (PE, cls token, norms, biases tables)."""
        return [n for n, p in self.named_parameters() if any(k in n for k in self.no_weight_decay_keys)]

    @staticmethod
    def freeze(module: nn.Module) -> None:
        module.eval()
        for p in module.parameters():
            p.requires_grad = False
