# Demo of configs/cpvt_maskrcnn.py that trains from scratch on a CPU in a few minutes: the same Mask R-CNN + FPN +
# CPVT-v2 model, shrunk (backbone depth/width, FPN/head widths), on the procedurally drawn mini COCO
# (data/mini_coco, made by `python tools/make_mini_datasets.py`), images resized to at most 512x320, 300
# iterations of batch 2, evaluated (bbox + segm AP) once at the end. Run it with `bash run.sh demo` or
# `python tools/train.py configs/demo/cpvt_maskrcnn_demo.py`.
_base_ = ['../cpvt_maskrcnn.py']

data_root = 'data/mini_coco/'
img_scale = (512, 320)  # longer side <= 512, shorter side <= 320
max_iters = 300
fpn_channels = 64

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=(32, 64, 128, 256), num_heads=(1, 2, 4, 8), mlp_ratios=(4, 4, 4, 4),
                  depths=(1, 1, 2, 1)),
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=fpn_channels),
    rpn_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=256),
        mask_roi_extractor=dict(out_channels=fpn_channels),
        mask_head=dict(num_convs=2, in_channels=fpn_channels, conv_out_channels=fpn_channels)),
    # fewer proposals and RoIs than COCO needs: a few objects per image, and the mask head dominates CPU time
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[int(max_iters * 0.85)], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=0.001, weight_decay=0.0001), clip_grad=dict(max_norm=10.0))

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))  # CPU: torchrun with gloo for distributed runs
randomness = dict(seed=0)
