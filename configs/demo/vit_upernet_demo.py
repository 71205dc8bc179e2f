# Demo of configs/mmseg/vitpe-deit-s_upernet_8xb2-160k_ade20k-512x512.py, small enough for a CPU: a 4-block ViT with
# the simple feature pyramid + UperNet, from scratch, on the mini ADE20K (data/mini_ade,
# `python tools/make_mini_datasets.py`), 256x256 crops, 200 iterations of batch 2, mIoU at the end; BN heads.
_base_ = ['../mmseg/vitpe-deit-s_upernet_8xb2-160k_ade20k-512x512.py', '../_base_/demo/seg_cpu.py']
globals().update(_base_.seg_cpu)  # data, schedule, hooks: configs/_base_/demo/

model = dict(
    data_preprocessor=dict(size=_base_.seg_cpu.crop_size),
    backbone=_base_.tiny_vit,
    decode_head=dict(in_channels=[32, 64, 128, 128], channels=64, norm_cfg=_base_.seg_cpu.norm_cfg),
    **_base_.seg_cpu_upernet_heads)
