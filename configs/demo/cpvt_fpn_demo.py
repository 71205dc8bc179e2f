# Demo of configs/mmseg/cpvtv2-s_fpn_8xb4-80k_ade20k-512x512.py, small enough for a CPU: shrunk CPVT-v2 + Semantic
# FPN, from scratch, on the mini ADE20K (data/mini_ade, `python tools/make_mini_datasets.py`), 256x256 crops,
# 200 iterations of batch 2, mIoU at the end; BN instead of SyncBN in the head.
_base_ = ['../mmseg/cpvtv2-s_fpn_8xb4-80k_ade20k-512x512.py', '../_base_/demo/seg_cpu.py']
globals().update(_base_.seg_cpu)  # data, schedule, hooks: configs/_base_/demo/

model = dict(
    data_preprocessor=dict(size=_base_.seg_cpu.crop_size),
    backbone=_base_.tiny_cpvt,
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    **_base_.seg_cpu_fpn_heads)
