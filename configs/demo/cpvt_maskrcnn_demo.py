# Demo of configs/cpvt_maskrcnn.py that trains from scratch on a CPU in a few minutes: the same Mask R-CNN + FPN +
# CPVT-v2 model, shrunk (backbone depth/width, FPN/head widths), on the procedurally drawn mini COCO
# (data/mini_coco, made by `python tools/make_mini_datasets.py`), images resized to at most 512x320, 300
# iterations of batch 2, evaluated (bbox + segm AP) once at the end. Run it with `bash run.sh demo` or
# `python tools/train.py configs/demo/cpvt_maskrcnn_demo.py`.
_base_ = ['../cpvt_maskrcnn.py', '../_base_/demo/det_cpu.py']
globals().update(_base_.det_cpu_mask_rcnn)  # data, schedule, hooks: configs/_base_/demo/

model = dict(
    backbone=_base_.tiny_cpvt,
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=_base_.det_cpu_mask_rcnn.fpn_channels),
    **_base_.det_cpu_mask_rcnn_heads)
