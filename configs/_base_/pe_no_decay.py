# No weight decay on the positional encodings of every pe_type (learned absolute `pos_embed`, PEG `pos_block`,
# relative `relative_position_bias_table`, RoPE-Mixed's learned frequencies `rope.freqs`, as RoPE-ViT and timm train
# them) nor on the norms. The shipped configs take it as the custom keys of their
# optimizer: `paramwise_cfg=dict(custom_keys=_base_.pe_no_decay)` (the ViT ones add `cls_token`); a key matches
# every parameter whose name contains it (mmengine's DefaultOptimWrapperConstructor).
pe_no_decay = {
    'pos_embed': dict(decay_mult=0.),
    'pos_block': dict(decay_mult=0.),
    'relative_position_bias_table': dict(decay_mult=0.),
    'rope.freqs': dict(decay_mult=0.),
    'norm': dict(decay_mult=0.),
}
