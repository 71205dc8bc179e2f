# The CPU demos' backbones (configs/demo/*): the presets' structure at a few channels and blocks, from scratch
# (no pretrained weights), no drop path. A demo sets its backbone to one of them, `backbone=_base_.tiny_cpvt`
# (merged into the full config's backbone: pe_type, out_indices and the other options stay the full config's).
tiny_cpvt = dict(
    arch=dict(_delete_=True, embed_dims=(32, 64, 128, 256), num_heads=(1, 2, 4, 8), mlp_ratios=(4, 4, 4, 4),
              depths=(1, 1, 2, 1)),
    drop_path_rate=0.0,
    init_cfg=None)  # stage channels 32, 64, 128, 256
tiny_swin = dict(
    arch=dict(_delete_=True, embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
    drop_path_rate=0.0,
    init_cfg=None)  # stage channels 32, 64, 128, 256
tiny_vit = dict(
    arch=dict(_delete_=True, embed_dims=128, num_layers=4, num_heads=4),
    drop_path_rate=0.0,
    init_cfg=None)  # simple feature pyramid channels 32, 64, 128, 128
