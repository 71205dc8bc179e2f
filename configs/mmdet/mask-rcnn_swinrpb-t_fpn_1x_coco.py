# Mask R-CNN + FPN with a Swin-T backbone (relative position bias, pe_type='rel_bias') on COCO 2017, 1x schedule.
# "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (arXiv:2103.14030); the setting of
# MMDetection's mask-rcnn_swin-t-p4-w7_fpn_1x_coco: AdamW, lr 1e-4, weight decay 0.05, drop path 0.2,
# batch 2 per GPU x 8 GPUs = 16.
# Backbone weights: the official ImageNet-1k Swin-T release (the URL MMDetection's Swin configs use),
# downloaded once into torch's hub cache (~/.cache/torch/hub/checkpoints, as mmdet does). Offline: put the
# file there, or --cfg-options model.backbone.init_cfg.checkpoint=PATH.
# From scratch: --cfg-options model.backbone.init_cfg=None.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/pe_no_decay.py',
]
checkpoint_file = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'  # noqa: E501
custom_imports = dict(imports=['vitpe_mm'], allow_failed_imports=False)

data_root = 'data/coco/'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinRPB',
        arch='tiny',
        window_size=7,
        pe_type='rel_bias',
        clamp_window=False,  # windows padded on small maps, as the official Swin detection code and mmdet
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    neck=dict(in_channels=[96, 192, 384, 768]))

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
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys=_base_.pe_no_decay))
auto_scale_lr = dict(enable=False, base_batch_size=16)
