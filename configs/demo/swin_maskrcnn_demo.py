# Demo of configs/mmdet/mask-rcnn_swinrpb-t_fpn_1x_coco.py, small enough for a CPU: shrunk Swin (relative position
# bias) + Mask R-CNN, from scratch, on the mini COCO (data/mini_coco, `python tools/make_mini_datasets.py`),
# images at most 512x320, 300 iterations of batch 2, bbox + segm AP at the end.
_base_ = ['../mmdet/mask-rcnn_swinrpb-t_fpn_1x_coco.py', '../_base_/demo/det_cpu.py']
globals().update(_base_.det_cpu_mask_rcnn)  # data, schedule, hooks: configs/_base_/demo/

model = dict(
    backbone=_base_.tiny_swin,
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=_base_.det_cpu_mask_rcnn.fpn_channels),
    **_base_.det_cpu_mask_rcnn_heads)
