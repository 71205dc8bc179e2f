"""Parsing `--scales`, and writing a test scale / inference mode into mmdet and mmseg configs."""
import copy
import math

import pytest

from vitpe_mm.analysis import (
    ScaleSpec,
    apply_test_scale,
    default_crop_size,
    find_test_resize,
    parse_scale,
    parse_scales,
    reference_scale,
    resolve_scales,
    set_inference_mode,
)


def det_cfg():
    return dict(
        default_scope='mmdet',
        model=dict(type='MaskRCNN'),
        test_dataloader=dict(dataset=dict(type='CocoDataset', pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(1333, 800), keep_ratio=True),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='PackDetInputs')])))


def seg_cfg():
    return dict(
        default_scope='mmseg',
        crop_size=(512, 512),
        model=dict(type='EncoderDecoder', data_preprocessor=dict(size=(256, 384)), test_cfg=dict(mode='whole')),
        test_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(type='ADE20KDataset', pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='mmseg.Resize', scale=(2048, 512), keep_ratio=True),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]))))


@pytest.mark.parametrize('text,size,factor', [
    ('512x256', (512, 256), None), ('1333,800', (1333, 800), None), (' 640 ', (640, 640), None),
    ('0.5', None, 0.5), ('1.5x', None, 1.5), ('2x', None, 2.0), ('.75', None, 0.75), ('1x', None, 1.0),
])
def test_parse_scale(text, size, factor):
    spec = parse_scale(text)
    assert spec.size == size and spec.factor == factor


@pytest.mark.parametrize('text', ['', 'big', '512x', 'x512', '0x512', '0x', '-1x', '1.5y', '512x256x3'])
def test_parse_scale_rejects(text):
    with pytest.raises(ValueError, match='scale'):
        parse_scale(text)


def test_parse_scales_splits_and_rejects_repeats():
    specs = parse_scales(['0.5x 1x', '512x512'])
    assert [s.text for s in specs] == ['0.5x', '1x', '512x512']
    with pytest.raises(ValueError, match='twice'):
        parse_scales(['1x', '1.0'])
    with pytest.raises(ValueError, match='no test scale'):
        parse_scales([])


def test_resolve_factors_and_absolute_scales():
    scales = resolve_scales(parse_scales(['0.5x', '1x', '2000x1200', '1333x800']), (1333, 800))
    assert [s.size for s in scales] == [(666, 400), (1333, 800), (2000, 1200), (1333, 800)]
    assert [s.label for s in scales] == ['666x400', '1333x800', '2000x1200', '1333x800']
    assert scales[0].factor == 0.5 and scales[3].factor == pytest.approx(1.0)
    assert scales[2].factor == pytest.approx(math.sqrt(2000 * 1200 / (1333 * 800)))
    with pytest.raises(ValueError, match='factor'):
        resolve_scales([ScaleSpec('2x', factor=2.0)], None)
    assert math.isnan(resolve_scales([ScaleSpec('64', size=(64, 64))], None)[0].factor)


def test_apply_test_scale_detection():
    cfg = det_cfg()
    assert reference_scale(cfg) == (1333, 800)
    scale = resolve_scales(parse_scales(['0.5x']), reference_scale(cfg))[0]
    apply_test_scale(cfg, scale, keep_ratio=True)
    resize = cfg['test_dataloader']['dataset']['pipeline'][1]
    assert resize == dict(type='Resize', scale=(666, 400), keep_ratio=True)
    apply_test_scale(cfg, scale, keep_ratio=False)
    assert resize['keep_ratio'] is False
    apply_test_scale(cfg, scale, keep_ratio=None)  # None keeps what is there
    assert resize['keep_ratio'] is False


def test_apply_test_scale_through_dataset_wrappers_and_scale_factor():
    cfg = seg_cfg()
    inner = cfg['test_dataloader']['dataset']['dataset']['pipeline']
    assert find_test_resize(cfg) is inner[1] and reference_scale(cfg) == (2048, 512)
    inner[1] = dict(type='Resize', scale_factor=0.5, keep_ratio=True)
    assert reference_scale(cfg) is None
    apply_test_scale(cfg, resolve_scales(parse_scales(['640x480']), None)[0])
    assert inner[1] == dict(type='Resize', scale=(640, 480), keep_ratio=True)


def test_pipelines_the_sweep_cannot_change():
    cfg = det_cfg()
    cfg['test_dataloader']['dataset']['pipeline'].insert(2, dict(type='Resize', scale=(10, 10)))
    with pytest.raises(ValueError, match='exactly one Resize'):
        find_test_resize(cfg)
    cfg = det_cfg()
    cfg['test_dataloader']['dataset']['pipeline'][1] = dict(type='TestTimeAug', transforms=[])
    with pytest.raises(ValueError, match='TestTimeAug'):
        find_test_resize(cfg)
    with pytest.raises(ValueError, match='test_dataloader'):
        find_test_resize(dict(model=dict()))


def test_set_inference_mode():
    cfg = seg_cfg()
    assert default_crop_size(cfg) == (256, 384)  # the preprocessor's size wins over crop_size
    assert set_inference_mode(cfg, 'slide') == dict(mode='slide', crop_size=(256, 384), stride=(170, 256))
    assert cfg['model']['test_cfg']['mode'] == 'slide'
    assert set_inference_mode(cfg, 'slide', (64, 64), (32, 48))['stride'] == (32, 48)
    assert set_inference_mode(cfg, 'whole') == dict(mode='whole') == cfg['model']['test_cfg']
    no_crop = copy.deepcopy(cfg)
    del no_crop['model']['data_preprocessor'], no_crop['crop_size']
    with pytest.raises(ValueError, match='crop size'):
        set_inference_mode(no_crop, 'slide')
    with pytest.raises(ValueError, match='mode'):
        set_inference_mode(cfg, 'tiles')
