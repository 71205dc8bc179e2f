# What the CPU-sized detection demos (configs/demo/*_maskrcnn*_demo.py, cpvt_retinanet_demo.py) change in the full
# configs they shrink: the procedurally drawn mini COCO (data/mini_coco, `python tools/make_mini_datasets.py`),
# images at most 512x320, 300 iterations of batch 2, one evaluation at the end, 64-channel FPN and heads, fewer
# proposals and RoIs (a few objects per image; the mask head dominates CPU time).
#
# mmengine refuses a key that two bases both define, so this fragment cannot stand next to the full config in a
# demo's `_base_` and override its keys. It holds them in helper dicts that a demo applies (with the tiny backbones):
#     _base_ = ['../cpvt_maskrcnn.py', '../_base_/demo/det_cpu.py']
#     globals().update(_base_.det_cpu_mask_rcnn)  # data, schedule, hooks: top-level keys of the demo
#     model = dict(backbone=dict(...), neck=dict(in_channels=[...], out_channels=_base_.det_cpu_mask_rcnn.fpn_channels),
#                  **_base_.det_cpu_mask_rcnn_heads)
# (names starting with two underscores are local to this file: mmengine leaves them out of the config).
_base_ = ['./tiny_backbones.py']  # tiny_cpvt, tiny_swin, tiny_vit

__data_root = 'data/mini_coco/'
__img_scale = (512, 320)  # longer side <= 512, shorter side <= 320
__max_iters = 300
__fpn_channels = 64


def __runtime(with_mask):
    """The demo's top-level keys for a detector with (Mask R-CNN) or without (RetinaNet) masks."""
    annotations = dict(type='LoadAnnotations', with_bbox=True, **(dict(with_mask=True) if with_mask else {}))
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(annotations),
        dict(type='Resize', scale=__img_scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=__img_scale, keep_ratio=True),
        dict(annotations),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
    ]
    val_dataloader = dict(
        num_workers=0, persistent_workers=False,
        dataset=dict(data_root=__data_root, pipeline=test_pipeline))
    val_evaluator = dict(ann_file=__data_root + 'annotations/instances_val2017.json')
    return dict(
        data_root=__data_root,
        img_scale=__img_scale,
        max_iters=__max_iters,
        fpn_channels=__fpn_channels,
        train_pipeline=train_pipeline,
        test_pipeline=test_pipeline,
        train_dataloader=dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            dataset=dict(data_root=__data_root, pipeline=train_pipeline)),
        val_dataloader=val_dataloader,
        test_dataloader=val_dataloader,
        val_evaluator=val_evaluator,
        test_evaluator=val_evaluator,
        train_cfg=dict(_delete_=True, type='IterBasedTrainLoop', max_iters=__max_iters, val_interval=__max_iters),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
            dict(type='MultiStepLR', by_epoch=False, begin=0, end=__max_iters, milestones=[int(__max_iters * 0.85)],
                 gamma=0.1),
        ],
        optim_wrapper=dict(optimizer=dict(lr=0.001, weight_decay=0.0001), clip_grad=dict(max_norm=10.0)),
        default_hooks=dict(
            logger=dict(interval=10),
            checkpoint=dict(by_epoch=False, interval=__max_iters, max_keep_ckpts=1)),
        log_processor=dict(by_epoch=False),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),  # CPU: torchrun with gloo for distributed runs
        randomness=dict(seed=0),
    )


det_cpu_mask_rcnn = __runtime(with_mask=True)
det_cpu_retinanet = __runtime(with_mask=False)

# the model keys of the shrunk heads (the backbone and the FPN's input channels are the demo's)
det_cpu_mask_rcnn_heads = dict(
    rpn_head=dict(in_channels=__fpn_channels, feat_channels=__fpn_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=__fpn_channels),
        bbox_head=dict(in_channels=__fpn_channels, fc_out_channels=256),
        mask_roi_extractor=dict(out_channels=__fpn_channels),
        mask_head=dict(num_convs=2, in_channels=__fpn_channels, conv_out_channels=__fpn_channels)),
    # fewer proposals and RoIs than COCO needs: a few objects per image, and the mask head dominates CPU time
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))
det_cpu_retinanet_heads = dict(
    bbox_head=dict(in_channels=__fpn_channels, feat_channels=__fpn_channels, stacked_convs=2))
