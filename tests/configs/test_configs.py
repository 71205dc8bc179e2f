"""Every shipped config loads, builds its model and its datasets (pointed at the mini data); demo configs run a whole
forward/backward and inference on a tiny batch; bad options and missing data fail with errors naming what is wrong."""
import copy
import functools
import math
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

import vitpe_mm  # noqa: F401  (registers the backbones, as custom_imports does)
from vitpe_mm.datasets import check_data_layout, ensure_mini_datasets

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / 'configs'
# configs/_base_/ holds fragments the configs inherit, not configs of their own
ALL_CONFIGS = sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob('*.py')
                     if p.relative_to(CONFIG_DIR).parts[0] != '_base_')
DEMO_CONFIGS = [c for c in ALL_CONFIGS if c.startswith('demo/')]
REAL_CONFIGS = [c for c in ALL_CONFIGS if not c.startswith('demo/')]
BACKBONES = ('CPVTv2', 'SwinRPB', 'ViTPE')
PE_NAMES = ('pos_block', 'pos_embed', 'relative_position_bias_table')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
# The public ImageNet-1k weights each backbone of the shipped configs starts from (hub id or release URL).
SWIN_T_URL = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'
PUBLIC_WEIGHTS = {'CPVTv2': 'timm/twins_pcpvt_small.in1k', 'SwinRPB': SWIN_T_URL,
                  'ViTPE': 'timm/deit_small_patch16_224.fb_in1k'}


@functools.lru_cache(maxsize=None)
def _parse(name: str) -> Config:
    # mmengine reads every metafile of the toolbox to resolve each `mmdet::` / `mmseg::` base: parse a config once
    return Config.fromfile(str(CONFIG_DIR / name))


def _load(name: str) -> Config:
    return copy.deepcopy(_parse(name))


def _datasets(cfg: Config, loader: str):
    ds = cfg[loader]['dataset']
    while 'dataset' in ds:
        ds = ds['dataset']
    return ds


def _is_det(cfg: Config) -> bool:
    return cfg.default_scope == 'mmdet'


def _point_at(cfg: Config, trees: dict) -> Config:
    """The config with every dataset / evaluator path moved to the mini trees."""
    cfg = copy.deepcopy(cfg)
    root = str(trees['coco']) + '/' if _is_det(cfg) else str(trees['ade'])
    for loader in LOADERS:
        _datasets(cfg, loader)['data_root'] = root
    for key in ('val_evaluator', 'test_evaluator'):
        if cfg.get(key, {}).get('ann_file'):
            cfg[key]['ann_file'] = root + 'annotations/instances_val2017.json'
    return cfg


def _build_model(cfg: Config):
    init_default_scope(cfg.default_scope)
    if _is_det(cfg):
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None  # no checkpoint files in tests
    return MODELS.build(model_cfg)


def _build_dataset(cfg: Config, loader: str):
    init_default_scope(cfg.default_scope)
    if _is_det(cfg):
        from mmdet.registry import DATASETS
    else:
        from mmseg.registry import DATASETS
    return DATASETS.build(copy.deepcopy(cfg[loader]['dataset']))


def _walk(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v)


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
    return ensure_mini_datasets(tmp_path_factory.mktemp('data'), coco_train=4, coco_val=2, ade_train=4, ade_val=2,
                                progress=None)


def test_every_kind_of_config_is_shipped():
    assert 'cpvt_maskrcnn.py' in REAL_CONFIGS
    assert {'demo/cpvt_maskrcnn_demo.py', 'demo/swin_upernet_demo.py'} <= set(DEMO_CONFIGS)
    for name in REAL_CONFIGS:
        assert any(Path(d).stem.startswith(_demo_prefix(name)) for d in DEMO_CONFIGS), f'no demo for {name}'
    assert len(REAL_CONFIGS) >= 11


def _demo_prefix(real: str) -> str:
    """Which demo config shrinks a real one (demo/<backbone>_<model>[_ms3x]_demo.py)."""
    stem = Path(real).stem
    backbone = 'cpvt' if 'cpvt' in stem else 'swin' if 'swin' in stem else 'vit'
    model = 'retinanet' if 'retinanet' in stem else 'maskrcnn' if 'mask' in stem else \
        'upernet' if 'upernet' in stem else 'fpn'
    return f'{backbone}_{model}' + ('_ms3x' if 'ms-3x' in stem else '_demo')


# ----------------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_loads(name):
    cfg = _load(name)
    assert cfg.custom_imports == dict(imports=['vitpe_mm'], allow_failed_imports=False)
    assert cfg.model.backbone.type in BACKBONES
    assert cfg.default_scope in ('mmdet', 'mmseg')
    if name.startswith('demo/'):
        assert cfg.model.backbone.init_cfg is None, 'demo configs train from scratch'
    else:
        init = cfg.model.backbone.init_cfg
        assert init == dict(type='Pretrained', checkpoint=PUBLIC_WEIGHTS[cfg.model.backbone.type])
        keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
        assert cfg.optim_wrapper.optimizer.type == 'AdamW'
        assert 'norm' in keys and any(k in keys for k in PE_NAMES)
        assert all(v == dict(decay_mult=0.) for v in keys.values())
        data_root = _datasets(cfg, 'train_dataloader').data_root
        assert data_root == ('data/coco/' if _is_det(cfg) else 'data/ade/ADEChallengeData2016')
    for loader in LOADERS:
        assert _datasets(cfg, loader).data_root == _datasets(cfg, 'train_dataloader').data_root
    if _is_det(cfg):
        assert cfg.val_evaluator.ann_file == _datasets(cfg, 'val_dataloader').data_root + \
            'annotations/instances_val2017.json'
        head = cfg.model.roi_head.bbox_head if 'roi_head' in cfg.model else cfg.model.bbox_head
        assert head.num_classes == 80
    else:
        assert cfg.model.decode_head.num_classes == 150 and cfg.model.pretrained is None
        assert _datasets(cfg, 'train_dataloader').type == 'ADE20KDataset'


def test_headline_config_is_the_twins_detection_setting():
    cfg = _load('cpvt_maskrcnn.py')
    assert cfg.model.type == 'MaskRCNN' and cfg.model.neck.type == 'FPN'
    assert cfg.model.backbone.type == 'CPVTv2' and cfg.model.backbone.arch == 'small'
    assert cfg.model.backbone.pe_type == 'peg'
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='timm/twins_pcpvt_small.in1k')
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 2e-4, 1e-4) and 'momentum' not in opt
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['pos_block'] == dict(decay_mult=0.)
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    assert cfg.train_cfg.max_epochs == 12 and cfg.param_scheduler[1].milestones == [8, 11]
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'


def test_3x_config_is_multiscale_36_epochs():
    cfg = _load('mmdet/mask-rcnn_cpvtv2-s_fpn_ms-3x_coco.py')
    assert cfg.train_cfg.max_epochs == 36 and cfg.param_scheduler[1].milestones == [27, 33]
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomChoiceResize'][0]
    assert min(s[1] for s in resize.scales) == 480 and max(s[1] for s in resize.scales) == 800


@pytest.mark.parametrize('name', [c for c in REAL_CONFIGS if 'mmseg' in c])
def test_seg_configs_keep_syncbn_in_the_heads_overridable(name):
    cfg = _load(name)
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN' and cfg.norm_cfg.type == 'SyncBN'
    assert cfg.crop_size == (512, 512) and cfg.model.data_preprocessor.size == (512, 512)
    cfg.merge_from_dict({'model.decode_head.norm_cfg.type': 'BN'})
    assert cfg.model.decode_head.norm_cfg == dict(type='BN', requires_grad=True)


@pytest.mark.parametrize('name', DEMO_CONFIGS)
def test_demo_configs_are_cpu_sized(name):
    cfg = _load(name)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters <= 500
    assert cfg.train_cfg.val_interval == cfg.train_cfg.max_iters, 'validate once, at the end'
    assert cfg.default_hooks.logger.interval <= 20
    assert cfg.default_hooks.checkpoint.interval == cfg.train_cfg.max_iters
    assert cfg.train_dataloader.num_workers == 0 and not cfg.train_dataloader.persistent_workers
    sync_bn = [d for d in _walk(cfg.model.to_dict()) if d.get('type') == 'SyncBN']
    assert not sync_bn, 'SyncBN needs GPUs when distributed'
    root = _datasets(cfg, 'train_dataloader').data_root.rstrip('/')
    assert root == ('data/mini_coco' if _is_det(cfg) else 'data/mini_ade')
    if _is_det(cfg):
        assert cfg.val_evaluator.ann_file == 'data/mini_coco/annotations/instances_val2017.json'


# ----------------------------------------------------------------------------------------------------- building
@pytest.mark.parametrize('name', REAL_CONFIGS)  # demo models are built (and run) below
def test_config_builds_model(name, monkeypatch):
    # structure only: skip the random initialisation of the full-size weights (most of the build time on a CPU)
    for init in ('trunc_normal_', 'normal_', 'uniform_', 'kaiming_uniform_'):
        monkeypatch.setattr(torch.nn.init, init, lambda tensor, *args, **kwargs: tensor)
    cfg = _load(name)
    model = _build_model(cfg)
    backbone = model.backbone
    assert type(backbone).__name__ == cfg.model.backbone.type
    consumer = cfg.model.neck if 'neck' in cfg.model else cfg.model.decode_head
    assert list(backbone.out_channels) == list(consumer.in_channels)
    if 'auxiliary_head' in cfg.model:
        aux = cfg.model.auxiliary_head
        assert backbone.out_channels[aux.in_index] == aux.in_channels
    # the optimizer's custom keys really reach the PE / norm parameters of this backbone
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    no_decay = backbone.no_weight_decay_names()
    assert any(k in n for n in no_decay for k in PE_NAMES), 'every shipped backbone has learned PE parameters'
    assert all(any(k in n for k in keys) for n in no_decay), [n for n in no_decay if not any(k in n for k in keys)]


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_config_builds_datasets_on_the_mini_data(name, trees):
    cfg = _point_at(_load(name), trees)
    check_data_layout(cfg)
    for loader in ('train_dataloader', 'val_dataloader'):
        ds = _build_dataset(cfg, loader)
        assert len(ds) > 0
        sample = ds[0]
        assert sample['inputs'].dim() == 3 and sample['inputs'].shape[0] == 3
        if _is_det(cfg):
            assert len(sample['data_samples'].gt_instances) > 0
        else:
            seg = sample['data_samples'].gt_sem_seg.data
            # mmseg's test pipelines load the label map after Resize: it keeps the original size
            size = sample['inputs'].shape[-2:] if loader == 'train_dataloader' else sample['data_samples'].ori_shape
            assert tuple(seg.shape[-2:]) == tuple(size)
            assert ((seg < 150) | (seg == 255)).all() and (seg < 150).any()
    if _is_det(cfg):
        assert ds.metainfo['classes'][0] == 'person' and len(ds.metainfo['classes']) == 80


@pytest.mark.parametrize('name', DEMO_CONFIGS)
def test_demo_model_trains_and_predicts_on_a_tiny_batch(name, trees):
    torch.manual_seed(0)
    cfg = _point_at(_load(name), trees)
    model = _build_model(cfg)
    model.init_weights()
    train_set = _build_dataset(cfg, 'train_dataloader')
    # two images: BatchNorm in the segmentation heads (PPM's 1x1 pooled maps) needs more than one value per channel
    batch = pseudo_collate([train_set[0], train_set[1]] if cfg.default_scope == 'mmseg' else [train_set[0]])
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss) and loss.item() > 0, log_vars
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    val_set = _build_dataset(cfg, 'val_dataloader')
    with torch.no_grad():
        results = model.val_step(pseudo_collate([val_set[0]]))
    assert len(results) == 1
    if _is_det(cfg):
        pred = results[0].pred_instances
        assert pred.bboxes.shape[-1] == 4 and len(pred.scores) == len(pred.labels)
        if cfg.model.type == 'MaskRCNN' and len(pred):
            assert pred.masks.shape[-2:] == tuple(results[0].ori_shape)
    else:
        assert results[0].pred_sem_seg.data.shape[-2:] == tuple(results[0].ori_shape)
    consumer = cfg.model.neck if 'neck' in cfg.model else cfg.model.decode_head
    assert list(model.backbone.out_channels) == list(consumer.in_channels)


# ----------------------------------------------------------------------------------------------------- errors
def test_unknown_backbone_option_names_the_valid_ones():
    cfg = _load('cpvt_maskrcnn.py')
    cfg.merge_from_dict({'model.backbone.pe_typo': 'peg'})  # what --cfg-options model.backbone.pe_typo=peg does
    with pytest.raises(ValueError) as err:
        _build_model(cfg)
    message = str(err.value)
    assert 'pe_typo' in message
    assert 'pe_type' in message and 'drop_path_rate' in message and 'out_indices' in message, message


def test_bad_backbone_option_value_names_the_accepted_ones():
    cfg = _load('cpvt_maskrcnn.py')
    cfg.merge_from_dict({'model.backbone.pe_type': 'learned'})
    with pytest.raises(ValueError, match=r"pe_type='learned'.*'peg'.*'rel_bias'"):
        _build_model(cfg)


def test_missing_data_root_names_the_path_and_the_layout(tmp_path):
    cfg = _load('cpvt_maskrcnn.py')
    missing = str(tmp_path / 'no_coco') + '/'
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': missing})
    with pytest.raises(FileNotFoundError) as err:
        check_data_layout(cfg)
    message = str(err.value)
    assert missing in message and 'train_dataloader.dataset.data_root' in message
    assert 'annotations/instances_train2017.json' in message and 'make_mini_datasets' in message


def test_missing_annotation_file_names_it(trees, tmp_path):
    coco = Path(shutil.copytree(trees['coco'], tmp_path / 'coco'))
    (coco / 'annotations' / 'instances_val2017.json').unlink()
    cfg = _point_at(_load('cpvt_maskrcnn.py'), {'coco': coco})
    check_data_layout(cfg, splits=('train_dataloader',))  # train data is complete
    with pytest.raises(FileNotFoundError, match=r'instances_val2017\.json \(from val_dataloader\.dataset\.ann_file'):
        check_data_layout(cfg)


def test_missing_ade_folder_names_it(trees, tmp_path):
    ade = Path(shutil.copytree(trees['ade'], tmp_path / 'ade'))
    shutil.rmtree(ade / 'annotations' / 'validation')
    cfg = _point_at(_load('mmseg/swinrpb-t_upernet_8xb2-160k_ade20k-512x512.py'), {'ade': ade})
    with pytest.raises(FileNotFoundError) as err:
        check_data_layout(cfg)
    message = str(err.value)
    assert str(ade / 'annotations' / 'validation') in message and 'data_prefix.seg_map_path' in message
    assert 'ADEChallengeData2016' in message and 'images/training' in message


def test_check_data_layout_looks_through_dataset_wrappers(trees, tmp_path):
    cfg = _point_at(_load('demo/cpvt_maskrcnn_demo.py'), trees)
    inner = cfg.train_dataloader.dataset
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=2,
                                        dataset=dict(inner, data_root=str(tmp_path / 'gone') + '/'))
    with pytest.raises(FileNotFoundError, match='train_dataloader.dataset.dataset.data_root'):
        check_data_layout(cfg)


# ----------------------------------------------------------------------------------------------------- runner
@pytest.mark.slow
@pytest.mark.parametrize('name, metric', [('demo/cpvt_maskrcnn_demo.py', 'coco/bbox_mAP'),
                                          ('demo/swin_upernet_demo.py', 'mIoU')])
def test_demo_config_runs_through_the_runner(name, metric, trees, tmp_path):
    from mmengine.runner import Runner
    cfg = _point_at(_load(name), trees)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 4
    cfg.default_hooks.checkpoint.interval = 4
    cfg.default_hooks.logger.interval = 2
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=4)]
    if _is_det(cfg):  # after 4 iterations every score is low: keep them so that COCO AP is computed (near 0)
        cfg.model.test_cfg.rcnn.score_thr = 0.0
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val_loop.run()
    assert metric in metrics and math.isfinite(metrics[metric])
    assert (tmp_path / 'work' / 'iter_4.pth').is_file()


# ------------------------------------------------------------------------------------------ pretrained weights
def _release_state(backbone: str) -> dict:
    """A state dict with the keys and shapes of the public file PUBLIC_WEIGHTS names (random values)."""
    import re

    import timm
    name = {'CPVTv2': 'twins_pcpvt_small', 'SwinRPB': 'swin_tiny_patch4_window7_224',
            'ViTPE': 'deit_small_patch16_224'}[backbone]
    state = timm.create_model(name, pretrained=False).state_dict()
    if backbone == 'SwinRPB':  # the Microsoft release: patch merging at the end of stage i, classifier `head`
        state = {re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m[1]) - 1}.downsample.', k)
                 .replace('head.fc.', 'head.'): v for k, v in state.items()}
    return {k: v.contiguous() for k, v in state.items()}


# What the ImageNet files have no weights for: detection/segmentation-only modules of the configured backbones.
NOT_IN_RELEASE = {'CPVTv2': r'$^', 'SwinRPB': r'norm[0-2]\.', 'ViTPE': r'fpn[1-4]\.'}


@pytest.mark.parametrize('name', ['cpvt_maskrcnn.py', 'mmdet/mask-rcnn_swinrpb-t_fpn_1x_coco.py',
                                  'mmseg/vitpe-deit-s_upernet_8xb2-160k_ade20k-512x512.py'])
def test_config_backbone_starts_from_its_public_weights(name, tmp_path, monkeypatch):
    """The backbone of a shipped config loads what its init_cfg names, through init_weights: a file in the
    release's layout put where the download would put it (torch's hub cache for a URL; huggingface_hub answering
    for a hub id), so nothing is fetched; every backbone weight but the task-only ones comes from the file."""
    import re

    import vitpe_mm.models.base as base
    from vitpe_mm.checkpoint.sources import hub_repo_id, url_cache_path
    cfg = _load(name)
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    source, backbone = backbone_cfg.init_cfg.checkpoint, backbone_cfg.type
    state = _release_state(backbone)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    asked = []
    if hub_repo_id(source):
        import huggingface_hub
        from safetensors.torch import save_file
        path = tmp_path / 'model.safetensors'
        save_file(state, str(path))
        monkeypatch.setattr(huggingface_hub, 'hf_hub_download',
                            lambda repo_id, filename, **kw: asked.append((repo_id, filename)) or str(path))
    else:
        path = Path(url_cache_path(source))
        path.parent.mkdir(parents=True)
        torch.save(state, path)
    reports = []
    monkeypatch.setattr(base, 'load_pretrained', lambda *a, **k: reports.append(vitpe_mm.checkpoint.load_pretrained(
        *a, **k)) or reports[-1])
    init_default_scope(cfg.default_scope)
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(backbone_cfg)
    model.init_weights()
    if hub_repo_id(source):
        assert asked == [(hub_repo_id(source), 'model.safetensors')]
    assert model.init_cfg == cfg.model.backbone.init_cfg
    (report,) = reports
    assert report['unexpected_keys'] == []
    assert all(re.match(NOT_IN_RELEASE[backbone], k) for k in report['missing_keys']), report['missing_keys']
    loaded = set(model.state_dict()) - set(report['missing_keys'])
    assert len(loaded) > 0.9 * len(model.state_dict())
