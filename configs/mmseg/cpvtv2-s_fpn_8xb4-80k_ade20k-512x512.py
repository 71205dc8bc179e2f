# Semantic FPN with a CPVT-v2-S (Twins-PCPVT-S) backbone on ADE20K, 80k iterations, 512x512 crops.
# "Conditional Positional Encodings for Vision Transformers" (arXiv:2102.10882); the Twins segmentation setting
# (arXiv:2104.13840, MMSegmentation's twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512): AdamW, lr 1e-4,
# weight decay 1e-4, poly schedule, batch 4 per GPU x 8 GPUs = 32.
# Backbone weights: the official ImageNet-1k Twins-PCPVT-S as timm publishes it, hub id
# timm/twins_pcpvt_small.in1k, fetched once into huggingface_hub's cache. Offline:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH (that model.safetensors, or an official / timm / mmseg
# file), or a copied hub cache with HF_HUB_OFFLINE=1.
# From scratch: --cfg-options model.backbone.init_cfg=None.
# The decode head uses SyncBN (as mmseg); single-process runs turn it into BN; change `norm_cfg` below (or
# --cfg-options model.decode_head.norm_cfg.type=BN) for distributed runs on CPU.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
    '../_base_/pe_no_decay.py',
]
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
        type='CPVTv2',
        arch='small',
        pe_type='peg',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        norm_after_stage=False,  # as mmseg's PCPVT configs
        init_cfg=dict(type='Pretrained', checkpoint='timm/twins_pcpvt_small.in1k')),
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150, norm_cfg=norm_cfg))

train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root))  # 4 images per GPU, 8 GPUs
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    paramwise_cfg=dict(custom_keys=_base_.pe_no_decay),
    clip_grad=None)

# lr is set for 32 images per iteration (8 GPUs x 4); enable=True (tools/train.py --auto-scale-lr) rescales it
# linearly for another total batch size.
auto_scale_lr = dict(enable=False, base_batch_size=32)
