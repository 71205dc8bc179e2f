# Demo of configs/mmdet/retinanet_cpvtv2-s_fpn_1x_coco.py, small enough for a CPU: shrunk CPVT-v2 + RetinaNet, from
# scratch, on the mini COCO (data/mini_coco, `python tools/make_mini_datasets.py`), images at most 512x320,
# 300 iterations of batch 2, bbox AP at the end.
_base_ = ['../mmdet/retinanet_cpvtv2-s_fpn_1x_coco.py', '../_base_/demo/det_cpu.py']
globals().update(_base_.det_cpu_retinanet)  # data, schedule, hooks: configs/_base_/demo/

model = dict(
    backbone=_base_.tiny_cpvt,
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=_base_.det_cpu_retinanet.fpn_channels),
    **_base_.det_cpu_retinanet_heads)
