"""Zoo of small timm architectures for the netgraft robustness sweep.

How this list was made (timm 1.0.31, torch 2.14.1, 2-core CPU, torch.set_num_threads(2)):

* Candidates: the smallest variants (tiny/nano/pico/atto/_small/_050/test_* ...) of every timm
  model module, plus a few structurally distinct siblings per family (different stems, norms,
  attention types, "same" padding, grouped convs, ...). Near-duplicates that only change width
  were mostly dropped.
* Each model was built with ``timm.create_model(name, pretrained=False, num_classes=10, **kwargs)``
  and run once in eval mode under ``torch.no_grad()`` on ``torch.randn(2, *SWEEP_INPUT[name])``.
  Input size: 64x64 when the model accepts it as-is, else 64x64 with ``img_size=64`` (most ViT-like
  models), else the smallest size that works (96/128/224/256; e.g. inception_v3 needs 96, halonets
  need 256, efficientformer_l1 needs 224; deepseek_vit needs a multiple of 14*3 so it uses 84).
* Kept only models with < 40M parameters, output of shape (2, 10) with all values finite, and
  creation + forward < 1.5 s. The slowest kept model takes ~0.3 s.
* A few families exist in timm only at sizes far above 40M parameters. For those, the kwargs also
  shrink the architecture through ordinary create_model arguments (marked "shrunk" below), e.g.
  beit/samvit/naflexvit/qwen3/gemma4/deepseek ViTs -> embed_dim=192, depth=4, num_heads=3;
  vgg -> mlp_ratio=0.0625 (the 4096-wide pre-logits conv is otherwise ~100M params);
  wide_resnet50_2 -> layers=[1, 1, 1, 1]; dm_nfnet_f0 -> depths=[1, 1, 1, 1];
  mobilenetv5_base -> channel_multiplier=0.25; nasnetalarge -> stem_size=32, num_features=1056
  (NASNet-A "mobile"-like widths).
* Result: 341 models in 123 families. Measured total creation + forward time for one pass
  over the whole list: 30.0 s (sum of per-model best of up to 4 runs: 27.0 s).
  The per-model time (best run, seconds) and parameter count are in the comment of each entry.
* Timing caveat: the machine was shared with other jobs while measuring. With 2 intra-op threads
  on 2 cores, any other CPU-bound process can make single forwards 10-50x slower (OpenMP threads
  wait on a descheduled sibling), so expect much larger totals on a busy machine.

All inputs use 3 channels; the sweep test varies channels itself.
"""

from __future__ import annotations

# name, family, extra timm.create_model kwargs, input H (= W)
_ZOO: list[tuple[str, str, dict, int]] = [
    ('resnet10t', 'resnet', {}, 64),  # 0.04s 4.9M
    ('resnet14t', 'resnet', {}, 64),  # 0.06s 8.1M
    ('resnet18', 'resnet', {}, 64),  # 0.07s 11.2M
    ('resnet18d', 'resnet', {}, 64),  # 0.07s 11.2M
    ('resnet34', 'resnet', {}, 64),  # 0.12s 21.3M
    ('resnet50', 'resnet', {}, 64),  # 0.14s 23.5M
    ('resnet50d', 'resnet', {}, 64),  # 0.13s 23.5M
    ('resnet50s', 'resnet', {}, 64),  # 0.13s 23.7M
    ('resnetaa34d', 'resnet', {}, 64),  # 0.12s 21.3M
    ('resnetblur18', 'resnet', {}, 64),  # 0.06s 11.2M
    ('resnet50_gn', 'resnet', {}, 64),  # 0.13s 23.5M
    ('resnetrs50', 'resnet', {}, 64),  # 0.21s 33.7M
    ('resnext50_32x4d', 'resnext', {}, 64),  # 0.13s 23.0M
    ('wide_resnet50_2', 'wide_resnet', {'layers': [1, 1, 1, 1]}, 64),  # 0.10s 19.5M (shrunk)
    ('ecaresnet26t', 'ecaresnet', {}, 64),  # 0.08s 14.0M
    ('ecaresnetlight', 'ecaresnet', {}, 64),  # 0.15s 28.1M
    ('ecaresnext26t_32x4d', 'ecaresnet', {}, 64),  # 0.07s 13.4M
    ('ecaresnet50d_pruned', 'ecaresnet', {}, 64),  # 0.22s 17.9M
    ('seresnet18', 'seresnet', {}, 64),  # 0.07s 11.3M
    ('seresnet34', 'seresnet', {}, 64),  # 0.12s 21.5M
    ('seresnext26d_32x4d', 'seresnet', {}, 64),  # 0.08s 14.8M
    ('legacy_seresnet18', 'seresnet', {}, 64),  # 0.06s 11.3M
    ('legacy_seresnext26_32x4d', 'seresnet', {}, 64),  # 0.08s 14.8M
    ('resnetv2_18', 'resnetv2', {}, 64),  # 0.06s 11.2M
    ('resnetv2_18d', 'resnetv2', {}, 64),  # 0.06s 11.2M
    ('resnetv2_34', 'resnetv2', {}, 64),  # 0.11s 21.3M
    ('resnetv2_50', 'resnetv2', {}, 64),  # 0.13s 23.5M
    ('resnetv2_50d_gn', 'resnetv2', {}, 64),  # 0.13s 23.5M
    ('resnetv2_50d_frn', 'resnetv2', {}, 64),  # 0.13s 23.6M
    ('resnetv2_50d_evos', 'resnetv2', {}, 64),  # 0.13s 23.6M
    ('resnetv2_50x1_bit', 'resnetv2', {}, 64),  # 0.14s 23.5M
    ('regnetx_002', 'regnet', {}, 64),  # 0.03s 2.3M
    ('regnety_002', 'regnet', {}, 64),  # 0.03s 2.8M
    ('regnety_004', 'regnet', {}, 64),  # 0.05s 3.9M
    ('regnety_008', 'regnet', {}, 64),  # 0.05s 5.5M
    ('regnetv_040', 'regnet', {}, 64),  # 0.13s 19.6M
    ('regnety_040_sgn', 'regnet', {}, 64),  # 0.12s 19.6M
    ('regnetz_005', 'regnetz', {}, 64),  # 0.06s 6.1M
    ('regnetz_b16', 'regnetz', {}, 64),  # 0.08s 8.2M
    ('regnetz_c16', 'regnetz', {}, 64),  # 0.09s 11.9M
    ('regnetz_b16_evos', 'regnetz', {}, 64),  # 0.07s 8.2M
    ('efficientnet_b0', 'efficientnet', {}, 64),  # 0.05s 4.0M
    ('efficientnet_b1', 'efficientnet', {}, 64),  # 0.06s 6.5M
    ('efficientnet_lite0', 'efficientnet', {}, 64),  # 0.18s 3.4M
    ('efficientnet_es', 'efficientnet', {}, 64),  # 0.04s 4.2M
    ('efficientnet_em', 'efficientnet', {}, 64),  # 0.05s 5.6M
    ('efficientnet_el', 'efficientnet', {}, 64),  # 0.08s 9.1M
    ('efficientnet_b0_gn', 'efficientnet', {}, 64),  # 0.04s 4.0M
    ('efficientnet_b0_g16_evos', 'efficientnet', {}, 64),  # 0.06s 6.8M
    ('efficientnet_cc_b0_4e', 'efficientnet', {}, 64),  # 0.09s 12.0M
    ('efficientnet_blur_b0', 'efficientnet', {}, 64),  # 0.04s 4.0M
    ('efficientnet_b1_pruned', 'efficientnet', {}, 64),  # 0.15s 5.1M
    ('efficientnet_x_b3', 'efficientnet', {}, 64),  # 0.10s 11.8M
    ('tf_efficientnet_b0', 'efficientnet', {}, 64),  # 0.04s 4.0M
    ('tf_efficientnet_lite0', 'efficientnet', {}, 64),  # 0.03s 3.4M
    ('test_efficientnet', 'efficientnet', {}, 64),  # 0.01s 0.1M
    ('test_efficientnet_gn', 'efficientnet', {}, 64),  # 0.00s 0.1M
    ('test_efficientnet_ln', 'efficientnet', {}, 64),  # 0.01s 0.1M
    ('test_efficientnet_evos', 'efficientnet', {}, 64),  # 0.01s 0.1M
    ('efficientnetv2_rw_t', 'efficientnetv2', {}, 64),  # 0.11s 12.6M
    ('gc_efficientnetv2_rw_t', 'efficientnetv2', {}, 64),  # 0.11s 12.7M
    ('tf_efficientnetv2_b0', 'efficientnetv2', {}, 64),  # 0.22s 5.9M
    ('tf_efficientnetv2_b1', 'efficientnetv2', {}, 64),  # 0.06s 6.9M
    ('efficientnetv2_rw_s', 'efficientnetv2', {}, 64),  # 0.16s 22.2M
    ('mobilenetv1_100', 'mobilenetv1', {}, 64),  # 0.03s 3.2M
    ('mobilenetv1_100h', 'mobilenetv1', {}, 64),  # 0.03s 4.3M
    ('mobilenetv2_035', 'mobilenetv2', {}, 64),  # 0.02s 0.4M
    ('mobilenetv2_100', 'mobilenetv2', {}, 64),  # 0.03s 2.2M
    ('mobilenetv2_110d', 'mobilenetv2', {}, 64),  # 0.04s 3.2M
    ('mobilenetv3_small_050', 'mobilenetv3', {}, 64),  # 0.02s 0.6M
    ('mobilenetv3_large_075', 'mobilenetv3', {}, 64),  # 0.04s 2.7M
    ('mobilenetv3_large_100', 'mobilenetv3', {}, 64),  # 0.04s 4.2M
    ('mobilenetv3_rw', 'mobilenetv3', {}, 64),  # 0.04s 4.2M
    ('tf_mobilenetv3_small_minimal_100', 'mobilenetv3', {}, 64),  # 0.02s 1.0M
    ('tf_mobilenetv3_large_minimal_100', 'mobilenetv3', {}, 64),  # 0.03s 2.7M
    ('mobilenetv4_conv_small_035', 'mobilenetv4', {}, 64),  # 0.02s 0.6M
    ('mobilenetv4_conv_small', 'mobilenetv4', {}, 64),  # 0.03s 2.5M
    ('mobilenetv4_conv_medium', 'mobilenetv4', {}, 64),  # 0.07s 8.4M
    ('mobilenetv4_hybrid_medium', 'mobilenetv4', {}, 64),  # 0.09s 9.8M
    ('mobilenetv4_hybrid_medium_075', 'mobilenetv4', {}, 64),  # 0.07s 6.0M
    ('mobilenetv4_conv_aa_medium', 'mobilenetv4', {}, 64),  # 0.07s 8.4M
    ('mobilenetv4_conv_blur_medium', 'mobilenetv4', {}, 64),  # 0.07s 8.4M
    ('mobilenetv5_base', 'mobilenetv5', {'channel_multiplier': 0.25}, 64),  # 0.11s 10.0M (shrunk)
    ('mobilenet_edgetpu_100', 'mobilenet_edgetpu', {}, 64),  # 0.04s 2.8M
    ('mobilenet_edgetpu_v2_xs', 'mobilenet_edgetpu', {}, 64),  # 0.03s 3.2M
    ('mnasnet_050', 'mnasnet', {}, 64),  # 0.02s 1.0M
    ('mnasnet_small', 'mnasnet', {}, 64),  # 0.02s 0.8M
    ('mnasnet_100', 'mnasnet', {}, 64),  # 0.03s 3.1M
    ('semnasnet_050', 'mnasnet', {}, 64),  # 0.03s 0.8M
    ('spnasnet_100', 'spnasnet', {}, 64),  # 0.03s 3.2M
    ('fbnetc_100', 'fbnet', {}, 64),  # 0.04s 3.6M
    ('fbnetv3_b', 'fbnet', {}, 64),  # 0.07s 6.6M
    ('fbnetv3_d', 'fbnet', {}, 64),  # 0.08s 8.3M
    ('mixnet_s', 'mixnet', {}, 64),  # 0.05s 2.6M
    ('mixnet_m', 'mixnet', {}, 64),  # 0.22s 3.5M
    ('tf_mixnet_s', 'mixnet', {}, 64),  # 0.04s 2.6M
    ('tinynet_a', 'tinynet', {}, 64),  # 0.05s 4.9M
    ('tinynet_c', 'tinynet', {}, 64),  # 0.03s 1.2M
    ('tinynet_e', 'tinynet', {}, 64),  # 0.02s 0.8M
    ('lcnet_035', 'lcnet', {}, 64),  # 0.02s 0.4M
    ('lcnet_100', 'lcnet', {}, 64),  # 0.03s 1.7M
    ('lcnetv2_small', 'lcnetv2', {}, 64),  # 0.03s 2.9M
    ('hardcorenas_a', 'hardcorenas', {}, 64),  # 0.04s 4.0M
    ('hardcorenas_b', 'hardcorenas', {}, 64),  # 0.04s 3.9M
    ('rexnet_100', 'rexnet', {}, 64),  # 0.07s 3.5M
    ('rexnetr_100', 'rexnet', {}, 64),  # 0.06s 3.6M
    ('ghostnet_050', 'ghostnet', {}, 64),  # 0.04s 1.3M
    ('ghostnet_100', 'ghostnet', {}, 64),  # 0.04s 3.9M
    ('ghostnetv2_100', 'ghostnetv2', {}, 64),  # 0.05s 4.9M
    ('ghostnetv3_050', 'ghostnetv3', {}, 64),  # 0.08s 2.1M
    ('repghostnet_050', 'repghostnet', {}, 64),  # 0.03s 1.0M
    ('repghostnet_080', 'repghostnet', {}, 64),  # 0.04s 2.0M
    ('densenet121', 'densenet', {}, 64),  # 0.09s 7.0M
    ('densenetblur121d', 'densenet', {}, 64),  # 0.07s 7.0M
    ('dla34', 'dla', {}, 64),  # 0.09s 15.2M
    ('dla46_c', 'dla', {}, 64),  # 0.02s 1.0M
    ('dla46x_c', 'dla', {}, 64),  # 0.04s 0.8M
    ('dla60x_c', 'dla', {}, 64),  # 0.02s 1.1M
    ('dla60', 'dla', {}, 64),  # 0.13s 21.0M
    ('dla60_res2net', 'dla', {}, 64),  # 0.14s 19.8M
    ('dla60_res2next', 'dla', {}, 64),  # 0.11s 16.0M
    ('dpn48b', 'dpn', {}, 64),  # 0.05s 8.3M
    ('dpn68', 'dpn', {}, 64),  # 0.05s 11.8M
    ('vgg11', 'vgg', {'mlp_ratio': 0.0625}, 64),  # 0.11s 16.7M (shrunk)
    ('vgg11_bn', 'vgg', {'mlp_ratio': 0.0625}, 64),  # 0.11s 16.7M (shrunk)
    ('vgg13', 'vgg', {'mlp_ratio': 0.0625}, 64),  # 0.10s 16.9M (shrunk)
    ('inception_v3', 'inception', {}, 96),  # 0.15s 21.8M
    ('inception_next_atto', 'inception_next', {}, 64),  # 0.04s 3.2M
    ('legacy_xception', 'xception', {}, 64),  # 0.13s 20.8M
    ('xception41', 'xception', {}, 64),  # 0.11s 24.9M
    ('xception41p', 'xception', {}, 64),  # 0.08s 24.9M
    ('nasnetalarge', 'nasnet', {'stem_size': 32, 'num_features': 1056}, 64),  # 0.11s 6.1M (shrunk)
    ('hrnet_w18_small', 'hrnet', {}, 64),  # 0.09s 11.2M
    ('hrnet_w18_small_v2', 'hrnet', {}, 64),  # 0.13s 13.6M
    ('cspresnet50', 'cspnet', {}, 64),  # 0.12s 20.6M
    ('cspresnext50', 'cspnet', {}, 64),  # 0.11s 18.5M
    ('cspdarknet53', 'cspnet', {}, 64),  # 0.15s 26.6M
    ('cs3darknet_focus_s', 'cspnet', {}, 64),  # 0.02s 2.8M
    ('cs3darknet_s', 'cspnet', {}, 64),  # 0.02s 2.8M
    ('cs3darknet_m', 'cspnet', {}, 64),  # 0.06s 8.5M
    ('cs3sedarknet_xdw', 'cspnet', {}, 64),  # 0.14s 19.6M
    ('cspnext_tiny', 'cspnext', {}, 64),  # 0.03s 2.4M
    ('cspnext_s', 'cspnext', {}, 64),  # 0.03s 4.4M
    ('darknet17', 'darknet', {}, 64),  # 0.08s 13.3M
    ('darknet21', 'darknet', {}, 64),  # 0.12s 19.8M
    ('sedarknet21', 'darknet', {}, 64),  # 0.11s 19.9M
    ('convnext_zepto_rms', 'convnext', {}, 64),  # 0.03s 1.9M
    ('convnext_atto', 'convnext', {}, 64),  # 0.03s 3.4M
    ('convnext_atto_ols', 'convnext', {}, 64),  # 0.03s 3.4M
    ('convnext_pico', 'convnext', {}, 64),  # 0.06s 8.5M
    ('convnext_nano', 'convnext', {}, 64),  # 0.10s 15.0M
    ('test_convnext', 'convnext', {}, 64),  # 0.01s 0.2M
    ('test_convnext2', 'convnext', {}, 64),  # 0.01s 0.4M
    ('test_convnext3', 'convnext', {}, 64),  # 0.01s 0.3M
    ('convnextv2_atto', 'convnextv2', {}, 64),  # 0.03s 3.4M
    ('convnextv2_pico', 'convnextv2', {}, 64),  # 0.06s 8.6M
    ('coatnet_pico_rw_224', 'coatnet', {'img_size': 64}, 64),  # 0.08s 10.3M
    ('coatnet_nano_rw_224', 'coatnet', {'img_size': 64}, 64),  # 0.09s 14.6M
    ('coatnet_nano_cc_224', 'coatnet', {'img_size': 64}, 64),  # 0.09s 13.2M
    ('coatnext_nano_rw_224', 'coatnet', {'img_size': 64}, 64),  # 0.09s 14.2M
    ('coatnet_rmlp_nano_rw_224', 'coatnet', {'img_size': 64}, 64),  # 0.09s 14.6M
    ('test_coatnet', 'coatnet', {'img_size': 64}, 64),  # 0.02s 0.4M
    ('maxvit_pico_rw_256', 'maxvit', {'img_size': 64}, 64),  # 0.08s 7.2M
    ('maxvit_nano_rw_256', 'maxvit', {'img_size': 64}, 64),  # 0.11s 14.9M
    ('maxvit_rmlp_pico_rw_256', 'maxvit', {'img_size': 64}, 64),  # 0.08s 7.3M
    ('maxxvit_rmlp_nano_rw_256', 'maxvit', {'img_size': 64}, 64),  # 0.11s 16.3M
    ('maxxvitv2_nano_rw_256', 'maxvit', {'img_size': 64}, 64),  # 0.15s 22.9M
    ('test_maxvit', 'maxvit', {'img_size': 64}, 64),  # 0.02s 1.0M
    ('vit_tiny_patch16_224', 'vit', {'img_size': 64}, 64),  # 0.04s 5.5M
    ('vit_small_patch16_224', 'vit', {'img_size': 64}, 64),  # 0.13s 21.6M
    ('vit_small_patch32_224', 'vit', {'img_size': 64}, 64),  # 0.13s 22.5M
    ('vit_wee_patch16_reg1_gap_256', 'vit', {'img_size': 64}, 64),  # 0.09s 13.1M
    ('vit_pwee_patch16_reg1_gap_256', 'vit', {'img_size': 64}, 64),  # 0.09s 14.9M
    ('vit_dwee_patch16_reg1_gap_256', 'vit', {'img_size': 64}, 64),  # 0.09s 13.1M
    ('vit_little_patch16_reg4_gap_256', 'vit', {'img_size': 64}, 64),  # 0.13s 22.1M
    ('vit_small_patch14_dinov2', 'vit', {'img_size': 64}, 64),  # 0.13s 21.5M
    ('vit_small_patch14_reg4_dinov2', 'vit', {'img_size': 64}, 64),  # 0.13s 21.5M
    ('vit_xsmall_patch16_clip_224', 'vit', {'img_size': 64}, 64),  # 0.05s 8.1M
    ('flexivit_small', 'vit', {'img_size': 64}, 64),  # 0.13s 21.6M
    ('test_vit', 'vit', {}, 64),  # 0.01s 0.3M
    ('test_vit2', 'vit', {}, 64),  # 0.01s 0.4M
    ('test_vit3', 'vit', {'img_size': 64}, 64),  # 0.01s 0.8M
    ('test_vit4', 'vit', {}, 64),  # 0.01s 0.9M
    ('vit_base_patch16_clip_224', 'vit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'img_size': 64}, 64),  # 0.01s 1.9M (shrunk)
    ('vit_base_patch16_siglip_gap_224', 'vit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'img_size': 64}, 64),  # 0.01s 1.9M (shrunk)
    ('aimv2_large_patch14_224', 'vit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'img_size': 56}, 56),  # 0.02s 1.9M (shrunk)
    ('vit_tiny_r_s16_p8_224', 'vit_hybrid', {'img_size': 64}, 64),  # 0.04s 6.1M
    ('vit_small_r26_s32_224', 'vit_hybrid', {'img_size': 64}, 64),  # 0.27s 36.0M
    ('vit_relpos_small_patch16_224', 'vit_relpos', {'img_size': 64}, 64),  # 0.07s 21.6M
    ('vit_srelpos_small_patch16_224', 'vit_relpos', {'img_size': 64}, 64),  # 0.07s 21.6M
    ('vit_relpos_small_patch16_rpn_224', 'vit_relpos', {'img_size': 64}, 64),  # 0.07s 21.6M
    ('test_vit_relpos', 'vit_relpos', {'img_size': 64}, 64),  # 0.01s 0.8M
    ('deit_tiny_distilled_patch16_224', 'deit', {'img_size': 64}, 64),  # 0.04s 5.5M
    ('deit3_small_patch16_224', 'deit', {'img_size': 64}, 64),  # 0.13s 21.6M
    ('beit_base_patch16_224', 'beit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'img_size': 64}, 64),  # 0.01s 1.9M (shrunk)
    ('beitv2_base_patch16_224', 'beit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'img_size': 64}, 64),  # 0.01s 1.9M (shrunk)
    ('eva02_tiny_patch14_224', 'eva', {'img_size': 64}, 64),  # 0.04s 5.5M
    ('vit_small_patch16_rope_224', 'eva', {'img_size': 64}, 64),  # 0.13s 21.6M
    ('vit_small_patch16_rope_mixed_224', 'eva', {'img_size': 64}, 64),  # 0.13s 21.6M
    ('vit_tiny_patch16_dinov3_qkvb', 'eva', {}, 64),  # 0.04s 5.5M
    ('vit_small_patch16_dinov3', 'eva', {}, 64),  # 0.13s 21.6M
    ('vit_pe_core_tiny_patch16_384', 'eva', {'img_size': 64}, 64),  # 0.04s 5.9M
    ('vit_pe_spatial_tiny_patch16_512', 'eva', {'img_size': 64}, 64),  # 0.04s 5.5M
    ('samvit_base_patch16_224', 'samvit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'img_size': 64, 'global_attn_indexes': [1, 3], 'window_size': 2}, 64),  # 0.01s 1.9M (shrunk)
    ('naflexvit_base_patch16_gap', 'naflexvit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3}, 64),  # 0.01s 2.0M (shrunk)
    ('qwen3_vit_88m', 'qwen3_vit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'img_size': 64}, 64),  # 0.02s 2.4M (shrunk)
    ('gemma4_vit_167m', 'gemma4_vit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'intermediate_size': 768, 'img_size': 64}, 64),  # 0.04s 6.4M (shrunk)
    ('deepseek_vit_412m', 'deepseek_vit', {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'img_size': 84}, 84),  # 0.02s 1.9M (shrunk)
    ('swin_tiny_patch4_window7_224', 'swin', {'img_size': 64}, 64),  # 0.16s 27.5M
    ('swin_s3_tiny_224', 'swin', {'img_size': 64}, 64),  # 0.19s 27.5M
    ('swinv2_tiny_window8_256', 'swinv2', {'img_size': 64}, 64),  # 0.17s 27.6M
    ('swinv2_cr_tiny_224', 'swinv2_cr', {'img_size': 64}, 64),  # 0.08s 27.6M
    ('swinv2_cr_tiny_ns_224', 'swinv2_cr', {'img_size': 64}, 64),  # 0.09s 27.6M
    ('pvt_v2_b0', 'pvt_v2', {}, 64),  # 0.03s 3.4M
    ('pvt_v2_b1', 'pvt_v2', {}, 64),  # 0.09s 13.5M
    ('pvt_v2_b2_li', 'pvt_v2', {}, 64),  # 0.15s 22.0M
    ('poolformer_s12', 'metaformer', {}, 64),  # 0.08s 11.4M
    ('poolformerv2_s12', 'metaformer', {}, 64),  # 0.08s 11.4M
    ('convformer_s18', 'metaformer', {}, 64),  # 0.16s 24.7M
    ('caformer_s18', 'metaformer', {}, 64),  # 0.16s 24.3M
    ('levit_128s', 'levit', {'img_size': 64}, 64),  # 0.03s 7.0M
    ('levit_conv_128s', 'levit', {'img_size': 64}, 64),  # 0.04s 7.0M
    ('mobilevit_xxs', 'mobilevit', {}, 64),  # 0.21s 1.0M
    ('mobilevit_xs', 'mobilevit', {}, 64),  # 0.03s 1.9M
    ('mobilevitv2_050', 'mobilevitv2', {}, 64),  # 0.03s 1.1M
    ('mobilevitv2_075', 'mobilevitv2', {}, 64),  # 0.04s 2.5M
    ('efficientformer_l1', 'efficientformer', {}, 224),  # 0.08s 11.4M
    ('efficientformerv2_s0', 'efficientformerv2', {'img_size': 64}, 64),  # 0.04s 3.2M
    ('efficientformerv2_s1', 'efficientformerv2', {'img_size': 64}, 64),  # 0.05s 5.7M
    ('edgenext_xx_small', 'edgenext', {}, 64),  # 0.02s 1.2M
    ('edgenext_x_small', 'edgenext', {}, 64),  # 0.03s 2.1M
    ('edgenext_small_rw', 'edgenext', {}, 64),  # 0.06s 7.4M
    ('fastvit_t8', 'fastvit', {}, 64),  # 0.05s 3.3M
    ('fastvit_t12', 'fastvit', {}, 64),  # 0.07s 6.5M
    ('fastvit_sa12', 'fastvit', {}, 64),  # 0.08s 10.6M
    ('fastvit_mci0', 'fastvit', {}, 64),  # 0.10s 10.9M
    ('repvgg_a0', 'repvgg', {}, 64),  # 0.06s 7.8M
    ('repvgg_b0', 'repvgg', {}, 64),  # 0.10s 14.5M
    ('mobileone_s0', 'mobileone', {}, 64),  # 0.07s 4.3M
    ('mobileone_s1', 'mobileone', {}, 64),  # 0.05s 3.6M
    ('nf_resnet26', 'nfnet', {}, 64),  # 0.09s 14.0M
    ('nf_regnet_b0', 'nfnet', {}, 64),  # 0.08s 7.8M
    ('nf_ecaresnet26', 'nfnet', {}, 64),  # 0.09s 14.0M
    ('nf_seresnet26', 'nfnet', {}, 64),  # 0.10s 15.4M
    ('eca_nfnet_l0', 'nfnet', {}, 64),  # 0.15s 21.9M
    ('nfnet_l0', 'nfnet', {}, 64),  # 0.20s 32.8M
    ('test_nfnet', 'nfnet', {}, 64),  # 0.02s 0.2M
    ('dm_nfnet_f0', 'nfnet', {'depths': [1, 1, 1, 1]}, 64),  # 0.14s 21.8M (shrunk)
    ('res2net50_14w_8s', 'res2net', {}, 64),  # 0.15s 23.0M
    ('res2net50_26w_4s', 'res2net', {}, 64),  # 0.15s 23.7M
    ('res2next50', 'res2net', {}, 64),  # 0.14s 22.6M
    ('res2net50d', 'res2net', {}, 64),  # 0.14s 23.7M
    ('resnest14d', 'resnest', {}, 64),  # 0.05s 8.6M
    ('resnest26d', 'resnest', {}, 64),  # 0.09s 15.0M
    ('skresnet18', 'sknet', {}, 64),  # 0.08s 11.5M
    ('skresnet34', 'sknet', {}, 64),  # 0.13s 21.8M
    ('tresnet_m', 'tresnet', {}, 64),  # 0.17s 29.4M
    ('hgnetv2_b0', 'hgnetv2', {}, 64),  # 0.04s 4.0M
    ('hgnetv2_b1', 'hgnetv2', {}, 64),  # 0.04s 4.3M
    ('hgnet_tiny', 'hgnet', {}, 64),  # 0.09s 12.7M
    ('gernet_s', 'gernet', {}, 64),  # 0.23s 6.3M
    ('gernet_m', 'gernet', {}, 64),  # 0.12s 18.6M
    ('resnet32ts', 'byobnet', {}, 64),  # 0.10s 16.4M
    ('resnet33ts', 'byobnet', {}, 64),  # 0.10s 18.4M
    ('seresnet33ts', 'byobnet', {}, 64),  # 0.11s 18.5M
    ('eca_resnet33ts', 'byobnet', {}, 64),  # 0.11s 18.4M
    ('gcresnet33ts', 'byobnet', {}, 64),  # 0.11s 18.6M
    ('resnext26ts', 'byobnet', {}, 64),  # 0.06s 8.3M
    ('eca_resnext26ts', 'byobnet', {}, 64),  # 0.05s 8.3M
    ('gcresnext26ts', 'byobnet', {}, 64),  # 0.06s 8.4M
    ('seresnext26ts', 'byobnet', {}, 64),  # 0.06s 8.4M
    ('bat_resnext26ts', 'byobnet', {}, 256),  # 0.13s 8.7M
    ('test_byobnet', 'byobnet', {}, 64),  # 0.01s 0.2M
    ('resnet50_clip_gap', 'byobnet', {}, 64),  # 0.14s 23.5M
    ('botnet26t_256', 'botnet', {'img_size': 64}, 64),  # 0.08s 10.4M
    ('eca_botnext26ts_256', 'botnet', {'img_size': 64}, 64),  # 0.07s 8.6M
    ('halonet26t', 'halonet', {}, 256),  # 0.13s 10.5M
    ('eca_halonext26ts', 'halonet', {}, 256),  # 0.11s 8.7M
    ('sehalonet33ts', 'halonet', {}, 256),  # 0.15s 12.4M
    ('haloregnetz_b', 'halonet', {}, 224),  # 0.15s 10.2M
    ('lambda_resnet26t', 'lambda_resnet', {}, 64),  # 0.06s 8.9M
    ('lambda_resnet26rpt_256', 'lambda_resnet', {'img_size': 64}, 64),  # 0.06s 8.9M
    ('mixer_s32_224', 'mlp_mixer', {'img_size': 64}, 64),  # 0.09s 18.4M
    ('mixer_s16_224', 'mlp_mixer', {'img_size': 64}, 64),  # 0.11s 17.3M
    ('gmixer_12_224', 'mlp_mixer', {'img_size': 64}, 64),  # 0.08s 11.1M
    ('gmlp_ti16_224', 'gmlp', {'img_size': 64}, 64),  # 0.14s 4.6M
    ('resmlp_12_224', 'resmlp', {'img_size': 64}, 64),  # 0.07s 14.5M
    ('convmixer_1024_20_ks9_p14', 'convmixer', {}, 64),  # 0.08s 23.4M
    ('convmixer_768_32', 'convmixer', {}, 64),  # 0.08s 20.3M
    ('crossvit_tiny_240', 'crossvit', {}, 64),  # 0.09s 6.7M
    ('crossvit_9_dagger_240', 'crossvit', {}, 64),  # 0.11s 8.4M
    ('cait_xxs24_224', 'cait', {'img_size': 64}, 64),  # 0.09s 11.7M
    ('xcit_nano_12_p16_224', 'xcit', {}, 64),  # 0.04s 2.9M
    ('xcit_nano_12_p8_224', 'xcit', {}, 64),  # 0.04s 2.9M
    ('twins_pcpvt_small', 'twins', {}, 64),  # 0.15s 23.6M
    ('twins_svt_small', 'twins', {}, 64),  # 0.15s 23.6M
    ('tnt_s_patch16_224', 'tnt', {'img_size': 64}, 64),  # 0.15s 23.3M
    ('nest_tiny', 'nest', {'img_size': 64}, 64),  # 0.11s 16.2M
    ('visformer_tiny', 'visformer', {'img_size': 64}, 64),  # 0.07s 9.8M
    ('coat_lite_tiny', 'coat', {'img_size': 64}, 64),  # 0.05s 5.4M
    ('coat_tiny', 'coat', {'img_size': 64}, 64),  # 0.07s 5.3M
    ('convit_tiny', 'convit', {'img_size': 64}, 64),  # 0.04s 5.5M
    ('pit_ti_224', 'pit', {'img_size': 64}, 64),  # 0.02s 4.5M
    ('pit_ti_distilled_224', 'pit', {'img_size': 64}, 64),  # 0.02s 4.6M
    ('davit_tiny', 'davit', {}, 64),  # 0.17s 27.6M
    ('focalnet_tiny_srf', 'focalnet', {}, 64),  # 0.20s 27.7M
    ('gcvit_xxtiny', 'gcvit', {'img_size': 64}, 64),  # 0.06s 11.4M
    ('tiny_vit_5m_224', 'tiny_vit', {}, 64),  # 0.09s 5.1M
    ('efficientvit_b0', 'efficientvit_mit', {}, 64),  # 0.03s 2.1M
    ('efficientvit_m0', 'efficientvit_msra', {}, 64),  # 0.04s 2.2M
    ('efficientvit_m1', 'efficientvit_msra', {}, 64),  # 0.04s 2.8M
    ('efficientvim_m1', 'efficientvim', {}, 64),  # 0.04s 5.7M
    ('fasternet_t0', 'fasternet', {}, 64),  # 0.03s 2.6M
    ('fasternet_t1', 'fasternet', {}, 64),  # 0.05s 6.3M
    ('iformer_t', 'iformer', {}, 64),  # 0.04s 2.6M
    ('mambaout_femto', 'mambaout', {}, 64),  # 0.05s 6.2M
    ('test_mambaout', 'mambaout', {}, 64),  # 0.01s 0.2M
    ('starnet_s050', 'starnet', {}, 64),  # 0.01s 0.4M
    ('starnet_s1', 'starnet', {}, 64),  # 0.04s 2.7M
    ('shvit_s1', 'shvit', {}, 64),  # 0.04s 6.0M
    ('swiftformer_xs', 'swiftformer', {}, 64),  # 0.04s 3.0M
    ('repvit_m0_9', 'repvit', {}, 64),  # 0.05s 4.7M
    ('repvit_m1', 'repvit', {}, 64),  # 0.04s 4.7M
    ('rdnet_tiny', 'rdnet', {}, 64),  # 0.16s 22.8M
    ('selecsls42b', 'selecsls', {}, 64),  # 0.22s 31.4M
    ('sequencer2d_s', 'sequencer', {}, 64),  # 0.16s 27.3M
    ('ese_vovnet19b_dw', 'vovnet', {}, 64),  # 0.05s 5.5M
    ('ese_vovnet19b_slim_dw', 'vovnet', {}, 64),  # 0.02s 1.4M
    ('ese_vovnet19b_slim', 'vovnet', {}, 64),  # 0.03s 2.7M
    ('eca_vovnet39b', 'vovnet', {}, 64),  # 0.13s 21.6M
    ('vovnet39a', 'vovnet', {}, 64),  # 0.12s 21.6M
    ('hiera_tiny_224', 'hiera', {'img_size': 64}, 64),  # 0.16s 26.9M
    ('sam2_hiera_tiny', 'hieradet_sam2', {}, 64),  # 0.18s 26.9M
    ('mvitv2_tiny', 'mvitv2', {}, 64),  # 0.16s 23.4M
    ('nextvit_small', 'nextvit', {}, 64),  # 0.21s 30.7M
    ('volo_d1_224', 'volo', {'img_size': 64}, 64),  # 0.16s 25.8M
    ('vitamin_small_224', 'vitamin', {'img_size': 64}, 64),  # 0.14s 21.8M
    ('lowformer_b0', 'lowformer', {}, 64),  # 0.06s 12.5M
    ('cpubone_nano', 'cpubone', {}, 64),  # 0.03s 4.9M
    ('cpubone_t0', 'cpubone', {}, 64),  # 0.03s 6.0M
    ('csatv2', 'csatv2', {}, 64),  # 0.09s 10.7M
]

# name -> dict of extra kwargs for timm.create_model, chosen so the model runs on a small input
SWEEP_MODELS: dict[str, dict] = {name: dict(kwargs) for name, _, kwargs, _ in _ZOO}
# name -> input size (C, H, W) for that model's example input
SWEEP_INPUT: dict[str, tuple[int, int, int]] = {name: (3, size, size) for name, _, _, size in _ZOO}
# name -> family label
FAMILY: dict[str, str] = {name: family for name, family, _, _ in _ZOO}

assert len(SWEEP_MODELS) == len(_ZOO), "duplicate model names in _ZOO"
