# RetinaNet + FPN with a CPVT-v2-S (Twins-PCPVT-S) backbone on COCO 2017, 1x schedule.
# "Conditional Positional Encodings for Vision Transformers" (arXiv:2102.10882); Twins' RetinaNet setting
# (arXiv:2104.13840, as PVT): AdamW, lr 1e-4, weight decay 1e-4, batch 2 per GPU x 8 GPUs = 16.
# Backbone weights: the official ImageNet-1k Twins-PCPVT-S as timm publishes it, hub id
# timm/twins_pcpvt_small.in1k, fetched once into huggingface_hub's cache. Offline:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH (that model.safetensors, or an official / timm / mmseg
# file), or a copied hub cache with HF_HUB_OFFLINE=1.
# From scratch: --cfg-options model.backbone.init_cfg=None.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/pe_no_decay.py',
]
custom_imports = dict(imports=['vitpe_mm'], allow_failed_imports=False)

data_root = 'data/coco/'
model = dict(
    backbone=dict(
        _delete_=True,
        type='CPVTv2',
        arch='small',
        pe_type='peg',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        norm_after_stage=False,
        init_cfg=dict(type='Pretrained', checkpoint='timm/twins_pcpvt_small.in1k')),
    neck=dict(in_channels=[64, 128, 320, 512]))

train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))  # 2 images per GPU, 8 GPUs
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys=_base_.pe_no_decay))
auto_scale_lr = dict(enable=False, base_batch_size=16)
