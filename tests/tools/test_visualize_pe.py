"""tools/visualize_pe.py: the sin-cos demonstration, a randomly initialised backbone of each PE kind, and a
checkpoint written by the toolbox (backbone weights under `backbone.`) loaded through a config."""
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[2]
ARCH = '{"embed_dims": [8, 16, 16, 16], "num_heads": [1, 2, 2, 2], "mlp_ratios": [1, 1, 1, 1], "depths": [1, 1, 1, 1]}'


def pixel_std(path) -> float:
    return float(np.asarray(Image.open(path).convert('L'), dtype=np.float32).std())


def test_sincos_demo(tmp_path):
    written = load_tool('visualize_pe').main(['--sincos', '6', '10', '--embed-dims', '32', '--resample-factor', '2',
                                             '--out-dir', str(tmp_path)])
    assert [p.name for p in written] == ['sincos_32d_similarity_6x10.png', 'sincos_32d_similarity_12x20.png']
    for path in written:
        assert pixel_std(path) > 10


@pytest.mark.parametrize('pe_type,modules,names', [
    ('abs', r'pos_embed\.0$', ['abs_pos_embed.0_similarity_16x16.png', 'abs_pos_embed.0_similarity_8x8.png']),
    ('rel_bias', r'rel_pos_bias\.1\.0$', ['rel_bias_rel_pos_bias.1.0_table.png',
                                         'rel_bias_rel_pos_bias.1.0_centre_query.png']),
    ('peg', r'pos_block\.2$', ['peg_pos_block.2_constant_input.png']),
])
def test_random_backbone(tmp_path, pe_type, modules, names):
    written = load_tool('visualize_pe').main([
        '--model', 'CPVTv2', '--arch', ARCH, '--pe-type', pe_type, '--model-options', 'img_size=64',
        '--modules', modules, '--resample-factor', '0.5', '--out-dir', str(tmp_path)])
    assert [p.name for p in written] == names
    for path in written:
        assert pixel_std(path) > 10, path


def test_trained_checkpoint_through_its_config(tmp_path):
    from mmengine.registry import MODELS

    import vitpe_mm  # noqa: F401

    config = tmp_path / 'cfg.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = ['{ROOT}/configs/demo/cpvt_fpn_demo.py']
        model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=(8, 16, 16, 16), num_heads=(1, 2, 2, 2),
                                             mlp_ratios=(1, 1, 1, 1), depths=(1, 1, 1, 1)), img_size=64))
    '''))
    torch.manual_seed(0)
    backbone = MODELS.build(dict(type='CPVTv2', arch=dict(embed_dims=(8, 16, 16, 16), num_heads=(1, 2, 2, 2),
                                 mlp_ratios=(1, 1, 1, 1), depths=(1, 1, 1, 1)), pe_type='abs', img_size=64))
    with torch.no_grad():  # a recognisable table: stage 0 holds a 2-D sin-cos PE
        from vitpe_mm.layers import build_sincos_2d_pos_embed
        backbone.pos_embed[0].pos_embed.copy_(build_sincos_2d_pos_embed((16, 16), 8))
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    state['decode_head.conv_seg.weight'] = torch.zeros(150, 32, 1, 1)
    checkpoint = tmp_path / 'iter_10.pth'
    torch.save({'meta': {'iter': 10}, 'state_dict': state}, checkpoint)

    tool = load_tool('visualize_pe')
    args = tool.parse_args([str(checkpoint), '--config', str(config), '--cfg-options', 'model.backbone.pe_type=abs'])
    loaded = tool.build_backbone(args)
    torch.testing.assert_close(loaded.pos_embed[0].pos_embed, backbone.pos_embed[0].pos_embed)
    written = tool.main([str(checkpoint), '--config', str(config), '--cfg-options', 'model.backbone.pe_type=abs',
                         '--modules', r'pos_embed\.0', '--out-dir', str(tmp_path / 'out')])
    assert [p.name for p in written] == ['abs_pos_embed.0_similarity_16x16.png',
                                         'abs_pos_embed.0_similarity_24x24.png']


def test_errors(tmp_path, capsys):
    tool = load_tool('visualize_pe')
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--model', 'CPVTv2', '--arch', ARCH, '--pe-type', 'none', '--out-dir', str(tmp_path)])
    assert exit_info.value.code == 1 and 'no positional-encoding module' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(['--sincos', '6', '--embed-dims', '30', '--out-dir', str(tmp_path)])
    assert 'embed_dims' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args(['--model', 'CPVTv2'])
    assert '--arch' in capsys.readouterr().err
