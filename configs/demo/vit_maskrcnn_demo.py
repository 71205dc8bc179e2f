# Demo of configs/mmdet/mask-rcnn_vitpe-deit-s-win14_sfp_fpn_1x_coco.py, small enough for a CPU: a 4-block ViT
# (7x7 windows, blocks 1 and 3 global, simple feature pyramid) + Mask R-CNN, from scratch, on the mini COCO
# (data/mini_coco, `python tools/make_mini_datasets.py`), images at most 512x320, 300 iterations of batch 2,
# bbox + segm AP at the end.
_base_ = ['../mmdet/mask-rcnn_vitpe-deit-s-win14_sfp_fpn_1x_coco.py', '../_base_/demo/det_cpu.py']
globals().update(_base_.det_cpu_mask_rcnn)  # data, schedule, hooks: configs/_base_/demo/

model = dict(
    backbone=dict(_base_.tiny_vit, window_size=7, global_attn_indexes=(1, 3)),  # blocks 1 and 3 global
    neck=dict(in_channels=[32, 64, 128, 128], out_channels=_base_.det_cpu_mask_rcnn.fpn_channels),
    **_base_.det_cpu_mask_rcnn_heads)
