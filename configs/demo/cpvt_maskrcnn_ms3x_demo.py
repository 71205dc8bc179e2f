# Demo of configs/mmdet/mask-rcnn_cpvtv2-s_fpn_ms-3x_coco.py (multi-scale training), shrunk for a CPU like
# configs/demo/cpvt_maskrcnn_demo.py: the shorter side drawn from 256..320 instead of 480..800.
_base_ = ['../mmdet/mask-rcnn_cpvtv2-s_fpn_ms-3x_coco.py', '../_base_/demo/det_cpu.py']
globals().update(_base_.det_cpu_mask_rcnn)  # data, schedule, hooks: configs/_base_/demo/

model = dict(
    backbone=_base_.tiny_cpvt,
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=_base_.det_cpu_mask_rcnn.fpn_channels),
    **_base_.det_cpu_mask_rcnn_heads)

# multi-scale training as the full config, at the demo's size: the shorter side drawn from 256..320
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(512, 256), (512, 288), (512, 320)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
__loader = _base_.det_cpu_mask_rcnn.train_dataloader
train_dataloader = dict(__loader, dataset=dict(__loader.dataset, pipeline=train_pipeline))
