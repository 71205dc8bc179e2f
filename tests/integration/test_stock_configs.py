"""Stock MMDetection / MMSegmentation configs with only `type=` changed build our backbones, and these match the
stock backbones: the stock model's random weights are saved, loaded into ours as Pretrained (through our
checkpoint converters), and the features compared at 512x512 and 389x517 (fp32, batch 1, 1e-5 of the largest
output value).

The configs are the ones shipped inside the installed packages (`<package>/.mim/configs`); their init_cfg /
pretrained point at the network and are dropped (the ViT test sets the segmentor's `pretrained` to the saved
weights instead: mmseg's EncoderDecoder copies it into the backbone). The stock configs that differ in the
backbone are compared; `test_siblings_are_covered` checks that every other stock config of these backbones has a
backbone config equal to a compared one.
"""
import copy
from pathlib import Path
from typing import Dict, List

import pytest
import torch

pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed by mmdet/mmseg models')

from mmengine.config import Config  # noqa: E402

import vitpe_mm  # noqa: E402,F401  (registers the backbones)

from conftest import perturb  # noqa: E402

SIZES = [(512, 512), (389, 517)]
TRAIN_ONLY = ('drop_rate', 'attn_drop_rate', 'drop_path_rate', 'with_cp')
STOCK_TYPES = {'SwinTransformer': 'SwinRPB', 'PCPVT': 'CPVTv2', 'VisionTransformer': 'ViTPE'}
# (toolbox, config folder, stock backbone type): the stock configs compared, the headline one first.
SWIN = ('mmdet', 'swin', ['mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', 'mask-rcnn_swin-s-p4-w7_fpn_amp-ms-crop-3x_coco.py',
                          'retinanet_swin-t-p4-w7_fpn_1x_coco.py'])
TWINS = ('mmseg', 'twins', ['twins_pcpvt-s_uperhead_8xb4-160k_ade20k-512x512.py',
                            'twins_pcpvt-b_uperhead_8xb2-160k_ade20k-512x512.py',
                            'twins_pcpvt-l_uperhead_8xb2-160k_ade20k-512x512.py'])
VIT = ('mmseg', 'vit', ['vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py',
                        'vit_vit-b16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py',
                        'vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py',
                        'vit_deit-s16-ln_mln_upernet_8xb2-160k_ade20k-512x512.py'])


def _config_dir(toolbox: str, folder: str) -> Path:
    package = pytest.importorskip(toolbox)
    path = Path(package.__file__).parent / '.mim' / 'configs' / folder
    if not path.is_dir():
        pytest.skip(f'{toolbox} is installed without its configs ({path})')
    return path


def _load(toolbox: str, folder: str, name: str) -> Config:
    return Config.fromfile(str(_config_dir(toolbox, folder) / name))


def _stock_backbone_cfg(cfg: Config) -> Dict:
    """The config's backbone dict, without the weights it would download."""
    backbone = copy.deepcopy(cfg.model.backbone.to_dict())
    backbone.pop('init_cfg', None)
    backbone.pop('pretrained', None)
    return backbone


def _registry(toolbox: str):
    if toolbox == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules()
    return MODELS


def _stock(toolbox: str, backbone: Dict, tmp_path: Path):
    """The stock backbone with seeded random weights (every parameter), and the file they are saved in."""
    torch.manual_seed(0)
    model = _registry(toolbox).build(backbone)
    model.init_weights()
    perturb(model).eval()
    path = tmp_path / 'stock.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    return model, str(path)


def _ours(toolbox: str, backbone: Dict, checkpoint: str):
    """Ours from the same backbone dict, `type` changed, the stock weights as init_cfg Pretrained."""
    ours = dict(backbone, type=STOCK_TYPES[backbone['type']], init_cfg=dict(type='Pretrained', checkpoint=checkpoint))
    model = _registry(toolbox).build(ours)
    model.init_weights()
    return model.eval()


def _compare(stock, ours, sizes=SIZES, what='') -> None:
    for hw in sizes:
        torch.manual_seed(1)
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            expected, out = stock(x), ours(x)
        assert len(out) == len(expected) > 0
        diffs = [(o - e).abs().max().item() for o, e in zip(out, expected)]
        scales = [max(1.0, e.abs().max().item()) for e in expected]
        print(f'{what} {hw}: max abs diff per output {["%.2e" % d for d in diffs]}, '
              f'max |output| {["%.1f" % s for s in scales]}')
        for o, e, scale in zip(out, expected, scales):
            assert o.shape == e.shape
            # fp32 rounding grows with the output's magnitude and differs between CPUs' kernels (AVX2 / AVX-512):
            # 1e-5 of the largest output value (at least 1e-5), far below what a wrong weight or PE gives
            torch.testing.assert_close(o, e, atol=1e-5 * scale, rtol=0)


def _params(names: List[str], slow_from: int = 1):
    return [pytest.param(n, marks=pytest.mark.slow) if i >= slow_from else n for i, n in enumerate(names)]


@pytest.mark.parametrize('name', _params(SWIN[2]))
def test_swin_stock_config(tmp_path, name):
    cfg = _load(SWIN[0], SWIN[1], name)
    backbone = _stock_backbone_cfg(cfg)
    assert backbone['type'] == 'SwinTransformer'
    stock, path = _stock(SWIN[0], backbone, tmp_path)
    ours = _ours(SWIN[0], backbone, path)
    assert list(ours.out_channels) == list(cfg.model.neck.in_channels)[-len(ours.out_channels):]
    _compare(stock, ours, what=name)


@pytest.mark.parametrize('name', _params(TWINS[2]))
def test_pcpvt_stock_config(tmp_path, name):
    cfg = _load(TWINS[0], TWINS[1], name)
    backbone = _stock_backbone_cfg(cfg)
    assert backbone['type'] == 'PCPVT'
    stock, path = _stock(TWINS[0], backbone, tmp_path)
    ours = _ours(TWINS[0], backbone, path)
    _compare(stock, ours, what=name)


@pytest.mark.parametrize('name', _params(VIT[2]))
def test_vit_stock_config_whole_segmentor(tmp_path, name):
    """The whole EncoderDecoder built from the stock config with only the backbone type changed and the
    segmentor's `pretrained` (copied into the backbone by mmseg) set to the stock backbone's weights."""
    cfg = _load(VIT[0], VIT[1], name)
    backbone = _stock_backbone_cfg(cfg)
    assert backbone['type'] == 'VisionTransformer'
    stock, path = _stock(VIT[0], backbone, tmp_path)
    cfg.model.backbone.type = 'ViTPE'
    cfg.model.pretrained = path
    segmentor = _registry(VIT[0]).build(cfg.model)
    segmentor.init_weights()
    ours = segmentor.backbone.eval()
    assert type(ours).__name__ == 'ViTPE'
    _compare(stock, ours, what=name)


def _stock_names(toolbox: str, folder: str) -> List[str]:
    return [p.name for p in sorted(_config_dir(toolbox, folder).glob('*.py'))
            if Config.fromfile(str(p)).model.get('backbone', {}).get('type') in STOCK_TYPES]


@pytest.mark.slow  # builds 22 whole detectors / segmentors
@pytest.mark.parametrize('toolbox, folder, compared', [SWIN, TWINS, VIT], ids=['swin', 'twins', 'vit'])
def test_every_stock_config_builds_with_only_type_changed(toolbox, folder, compared):
    """The whole detector / segmentor of every stock config of these backbones, with our backbone."""
    for name in _stock_names(toolbox, folder):
        cfg = _load(toolbox, folder, name)
        cfg.model.backbone.type = STOCK_TYPES[cfg.model.backbone.type]
        cfg.model.backbone.pop('init_cfg', None)
        cfg.model.pop('pretrained', None)
        model = _registry(toolbox).build(cfg.model)
        consumer = cfg.model.get('neck') or cfg.model.decode_head  # some ViT configs have neck=None
        assert list(model.backbone.out_channels) == list(consumer.in_channels), name
        print(f'{name}: {type(model).__name__} with {type(model.backbone).__name__}{model.backbone.out_channels}')


@pytest.mark.parametrize('toolbox, folder, compared', [SWIN, TWINS, VIT], ids=['swin', 'twins', 'vit'])
def test_siblings_are_covered(toolbox, folder, compared):
    """Every stock config of these backbones has the backbone config of one that is compared above."""
    directory = _config_dir(toolbox, folder)

    def key(cfg: Config) -> str:  # dropout / drop path: train-time only, the features compared are eval-mode
        return repr(sorted((k, v) for k, v in _stock_backbone_cfg(cfg).items() if k not in TRAIN_ONLY))

    tested = {key(_load(toolbox, folder, name)) for name in compared}
    assert len(tested) == len(compared), 'two compared configs have the same backbone'
    siblings = []
    for path in sorted(directory.glob('*.py')):
        cfg = Config.fromfile(str(path))
        if cfg.model.get('backbone', {}).get('type') in STOCK_TYPES:
            siblings.append(path.name)
            assert key(cfg) in tested, f'{path.name}: its backbone config is not among the compared ones'
            print(path.name, '->', next(n for n in compared if key(_load(toolbox, folder, n)) == key(cfg)))
    assert set(compared) <= set(siblings)
    print(f'{folder}: {len(siblings)} stock configs covered by {len(compared)} compared')

