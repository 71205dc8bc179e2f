# Demo of configs/mmseg/swinrpb-t_upernet_8xb2-160k_ade20k-512x512.py that trains from scratch on a CPU in a few
# minutes: the same UperNet + Swin (relative position bias) model, shrunk (backbone depth/width, head widths), on
# the procedurally drawn mini ADE20K (data/mini_ade, made by `python tools/make_mini_datasets.py`), 256x256 crops,
# 200 iterations of batch 2, mIoU once at the end. BN instead of SyncBN in the heads (CPU, any number of processes).
_base_ = ['../mmseg/swinrpb-t_upernet_8xb2-160k_ade20k-512x512.py', '../_base_/demo/seg_cpu.py']
globals().update(_base_.seg_cpu)  # data, schedule, hooks: configs/_base_/demo/

model = dict(
    data_preprocessor=dict(size=_base_.seg_cpu.crop_size),
    backbone=_base_.tiny_swin,
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64, norm_cfg=_base_.seg_cpu.norm_cfg),
    **_base_.seg_cpu_upernet_heads)
