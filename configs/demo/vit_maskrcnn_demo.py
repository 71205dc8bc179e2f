# Demo of configs/mmdet/mask-rcnn_vitpe-deit-s-win14_sfp_fpn_1x_coco.py, small enough for a CPU: a 4-block ViT
# (7x7 windows, blocks 1 and 3 global, simple feature pyramid) + Mask R-CNN, from scratch, on the mini COCO
# (data/mini_coco, `python tools/make_mini_datasets.py`), images at most 512x320, 300 iterations of batch 2,
# bbox + segm AP at the end.
_base_ = ['../mmdet/mask-rcnn_vitpe-deit-s-win14_sfp_fpn_1x_coco.py']

data_root = 'data/mini_coco/'
img_scale = (512, 320)
max_iters = 300
fpn_channels = 64

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=128, num_layers=4, num_heads=4),
        window_size=7,
        global_attn_indexes=(1, 3),
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 128], out_channels=fpn_channels),
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
