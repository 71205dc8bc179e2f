import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools'))

from convert_checkpoint import convert  # noqa: E402

from vitpe_mm.checkpoint import CheckpointError  # noqa: E402
from vitpe_mm.models.vit import ViTPE  # noqa: E402

TINY = dict(embed_dims=64, num_layers=2, num_heads=2)


def _timm_vit(tmp_path, img_size=224):
    torch.manual_seed(0)
    ref = timm.create_model('vit_small_patch16_224', pretrained=False, img_size=img_size, embed_dim=64, depth=2,
                            num_heads=2)
    path = tmp_path / 'timm_vit.pth'
    torch.save(ref.state_dict(), path)
    return ref, path


def test_converts_timm_to_own_keys_and_loads_natively(tmp_path):
    ref, src = _timm_vit(tmp_path)
    dst = tmp_path / 'out' / 'vit.pth'
    report = convert(str(src), str(dst), 'ViTPE', TINY)
    assert report['format'] == 'timm'
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['source_format'] == 'timm'
    model = ViTPE(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    torch.testing.assert_close(model.patch_embed.proj.weight, ref.patch_embed.proj.weight)
    # the converted file is in our own keys: loading it is the 'vitpe_mm' format
    from vitpe_mm.checkpoint import load_pretrained
    assert load_pretrained(ViTPE(arch=TINY), str(dst), 'vit')['format'] == 'vitpe_mm'


def test_resamples_pos_embed_to_the_target_grid(tmp_path):
    ref, src = _timm_vit(tmp_path, img_size=224)
    dst = tmp_path / 'vit384.pth'
    convert(str(src), str(dst), 'ViTPE', TINY, extra=dict(img_size=384))
    state = torch.load(dst, weights_only=True)['state_dict']
    assert state['pos_embed.0.pos_embed'].shape == (1, 1 + 24 * 24, 64)


def test_refuses_overwrite_unknown_model_and_wrong_arch(tmp_path):
    _, src = _timm_vit(tmp_path)
    dst = tmp_path / 'x.pth'
    dst.write_bytes(b'precious')
    with pytest.raises(FileExistsError, match='--overwrite'):
        convert(str(src), str(dst), 'ViTPE', TINY)
    assert dst.read_bytes() == b'precious'
    with pytest.raises(ValueError, match='accepted: .*CPVTv2'):
        convert(str(src), str(tmp_path / 'y.pth'), 'ResNet50', TINY)
    with pytest.raises(CheckpointError, match='blocks'):  # 2-block checkpoint into 1 block: keys left over
        convert(str(src), str(tmp_path / 'z.pth'), 'ViTPE', dict(TINY, num_layers=1))
    assert not (tmp_path / 'z.pth').exists()


def test_cli(tmp_path):
    _, src = _timm_vit(tmp_path)
    dst = tmp_path / 'cli.pth'
    out = subprocess.run([sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py'), str(src), str(dst),
                          '--model', 'ViTPE', '--arch', str(TINY)], capture_output=True, text=True)
    # --arch takes a preset name; a dict goes through --set arch=...
    assert out.returncode == 2 and 'error: arch=' in out.stderr and 'Traceback' not in out.stderr
    out = subprocess.run([sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py'), str(src), str(dst),
                          '--model', 'ViTPE', '--set', f'arch={TINY}'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'timm format' in out.stdout and dst.exists()
