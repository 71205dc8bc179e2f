# UperNet with a Swin-T backbone (relative position bias, pe_type='rel_bias') on ADE20K, 160k iterations,
# 512x512 crops. "Swin Transformer" (arXiv:2103.14030); the setting of MMSegmentation's
# swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512: AdamW, lr 6e-5, weight decay 0.01, drop path
# 0.3, 1500 warm-up iterations then linear decay, batch 2 per GPU x 8 GPUs = 16.
# Backbone weights: the official ImageNet-1k Swin-T release (the URL MMDetection's Swin configs use),
# downloaded once into torch's hub cache (~/.cache/torch/hub/checkpoints, as mmdet does). Offline: put the
# file there, or --cfg-options model.backbone.init_cfg.checkpoint=PATH.
# From scratch: --cfg-options model.backbone.init_cfg=None.
# Heads use SyncBN (as mmseg); single-process runs turn it into BN; change `norm_cfg` for distributed CPU runs.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    '../_base_/pe_no_decay.py',
]
checkpoint_file = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'  # noqa: E501
custom_imports = dict(imports=['vitpe_mm'], allow_failed_imports=False)

data_root = 'data/ade/ADEChallengeData2016'
crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='SwinRPB',
        arch='tiny',
        window_size=7,
        pe_type='rel_bias',
        clamp_window=False,  # padded windows, as mmseg's Swin and the official segmentation code
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file)),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=384, num_classes=150, norm_cfg=norm_cfg))

train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))  # 2 images per GPU, 8 GPUs
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=_base_.pe_no_decay))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]

# lr is set for 16 images per iteration (8 GPUs x 2); enable=True (tools/train.py --auto-scale-lr) rescales it
# linearly for another total batch size.
auto_scale_lr = dict(enable=False, base_batch_size=16)
