# What the CPU-sized segmentation demos (configs/demo/*_fpn_demo.py, *_upernet_demo.py) change in the full configs
# they shrink: the procedurally drawn mini ADE20K (data/mini_ade, `python tools/make_mini_datasets.py`), 256x256
# crops, 200 iterations of batch 2, mIoU once at the end, narrow heads with BN instead of SyncBN (CPU, any number of
# processes).
#
# mmengine refuses a key that two bases both define, so this fragment cannot stand next to the full config in a
# demo's `_base_` and override its keys. It holds them in helper dicts that a demo applies (with the tiny backbones):
#     _base_ = ['../mmseg/cpvtv2-s_fpn_8xb4-80k_ade20k-512x512.py', '../_base_/demo/seg_cpu.py']
#     globals().update(_base_.seg_cpu)  # data, schedule, hooks: top-level keys of the demo
#     model = dict(data_preprocessor=dict(size=_base_.seg_cpu.crop_size), backbone=dict(...),
#                  neck=dict(in_channels=[...], out_channels=64), **_base_.seg_cpu_fpn_heads)
# (names starting with two underscores are local to this file: mmengine leaves them out of the config).
_base_ = ['./tiny_backbones.py']  # tiny_cpvt, tiny_swin, tiny_vit

__data_root = 'data/mini_ade'
__crop_size = (256, 256)
__img_scale = (512, 256)
__max_iters = 200
__norm_cfg = dict(type='BN', requires_grad=True)

__train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=__img_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=__crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
__test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=__img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
__val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=__data_root, pipeline=__test_pipeline))

seg_cpu = dict(
    data_root=__data_root,
    crop_size=__crop_size,
    img_scale=__img_scale,
    max_iters=__max_iters,
    norm_cfg=__norm_cfg,
    train_pipeline=__train_pipeline,
    test_pipeline=__test_pipeline,
    train_dataloader=dict(
        batch_size=2, num_workers=0, persistent_workers=False,
        dataset=dict(data_root=__data_root, pipeline=__train_pipeline)),
    val_dataloader=__val_dataloader,
    test_dataloader=__val_dataloader,
    train_cfg=dict(max_iters=__max_iters, val_interval=__max_iters),
    param_scheduler=[
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
        dict(type='PolyLR', eta_min=0.0, power=1.0, begin=20, end=__max_iters, by_epoch=False),
    ],
    optim_wrapper=dict(optimizer=dict(lr=0.001)),
    default_hooks=dict(
        logger=dict(interval=10),
        checkpoint=dict(by_epoch=False, interval=__max_iters, max_keep_ckpts=1)),
    env_cfg=dict(dist_cfg=dict(backend='gloo')),  # CPU: torchrun with gloo for distributed runs
    randomness=dict(seed=0),
)

# the model keys of the shrunk heads (the backbone and the channels it gives are the demo's)
seg_cpu_fpn_heads = dict(decode_head=dict(in_channels=[64, 64, 64, 64], channels=32, norm_cfg=__norm_cfg))
seg_cpu_upernet_heads = dict(auxiliary_head=dict(in_channels=128, channels=32, norm_cfg=__norm_cfg))
