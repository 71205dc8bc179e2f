# Mask R-CNN + FPN with a plain DeiT-S backbone in the ViTDet style on COCO 2017, 1x schedule: 14x14 windowed
# attention in all blocks but the global ones (2, 5, 8, 11), learned absolute PE resampled to the input grid,
# and the simple feature pyramid (out_type='sfp': strides 4/8/16/32 with 96/192/384/384 channels) into the FPN.
# "Exploring Plain Vision Transformer Backbones for Object Detection" (ViTDet, arXiv:2203.16527) on
# "Training data-efficient image transformers" (DeiT, arXiv:2012.12877). AdamW, lr 1e-4, weight decay 0.1,
# drop path 0.1, batch 2 per GPU x 8 GPUs = 16 (ViTDet's 100-epoch LSJ recipe is not reproduced here).
# Backbone weights: the official ImageNet-1k DeiT-S as timm publishes it, hub id
# timm/deit_small_patch16_224.fb_in1k, fetched once into huggingface_hub's cache. Offline:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH (that model.safetensors, or an official / timm / mmseg
# file), or a copied hub cache with HF_HUB_OFFLINE=1.
# The DeiT cls token is dropped on load (windows need with_cls_token=False).
# From scratch: --cfg-options model.backbone.init_cfg=None.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/pe_no_decay.py',
]
custom_imports = dict(imports=['vitpe_mm'], allow_failed_imports=False)

data_root = 'data/coco/'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ViTPE',
        arch='deit-s',
        img_size=224,
        pe_type='abs',
        with_cls_token=False,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        out_type='sfp',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='timm/deit_small_patch16_224.fb_in1k')),
    neck=dict(in_channels=[96, 192, 384, 384]))

train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))  # 2 images per GPU, 8 GPUs
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(custom_keys=dict(_base_.pe_no_decay, cls_token=dict(decay_mult=0.))))
auto_scale_lr = dict(enable=False, base_batch_size=16)
