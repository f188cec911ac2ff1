"""Which timm growth pairs does the default graft make function-preserving? No training.

    python benchmarks/growth_sweep.py [--pairs resnet18:resnet34,...] [--json benchmarks/results/growth_sweep.json]

Each source is a timm model with random but non-trivial batch-norm statistics and affines (a
wrong channel map then shows; as in ``tests/test_growth.py``), grafted with the default
``netgraft.transfer`` onto a larger model of its family. The gap is the largest
|target − source| logit on a random 64×64 batch in eval mode, relative to the source's largest
logit (at least 1): *exact* below 1e-4. *contains* says whether the target holds every source
layer (``match.embeds``, what ``report.function_gap`` is measured for); for those that are not
exact, the report's ``function_note`` names the known reason. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch
from torch import nn

import netgraft
from netgraft.bench import save_result
from netgraft.match import embeds

EXACT = 1e-4
PAIRS = (
    # deeper
    "resnet18:resnet34,resnet18d:resnet34d,resnet26:resnet50,resnet50:resnet101,"
    "resnet50d:resnet101d,resnet14t:resnet26t,efficientnet_b0:efficientnet_b1,"
    "efficientnet_lite0:efficientnet_lite1,tf_efficientnetv2_b0:tf_efficientnetv2_b1,"
    "tf_efficientnetv2_b0:tf_efficientnetv2_b3,densenet121:densenet169,"
    # wider, or both
    "efficientnet_b0:efficientnet_b3,efficientnet_b0:efficientnet_b4,"
    "mobilenetv2_050:mobilenetv2_100,mobilenetv2_050:mobilenetv2_140,"
    "mobilenetv2_100:mobilenetv2_140,mobilenetv2_100:mobilenetv2_110d,"
    "mobilenetv3_large_075:mobilenetv3_large_100,mobilenetv3_small_075:mobilenetv3_small_100,"
    "mobilenetv3_small_050:mobilenetv3_small_100,mnasnet_050:mnasnet_100,"
    "semnasnet_050:semnasnet_100,lcnet_050:lcnet_100,tinynet_e:tinynet_a,repvgg_a0:repvgg_a1,"
    "regnetz_b16:regnetz_c16,regnetx_002:regnetx_004,regnetx_016:regnetx_032,"
    "convnext_atto:convnext_nano,convnext_atto:convnext_femto,ghostnet_050:ghostnet_100,"
    # through concatenations and channel splits (added 2026-11-26, session 10)
    "densenet121:densenet201,ghostnet_050:ghostnet_130,cs3darknet_s:cs3darknet_m,"
    "cs3darknet_m:cs3darknet_l,cs3darknet_focus_s:cs3darknet_focus_m,"
    # normalizer-free: per-block input scales, weight-standardised convs (session 18)
    "nf_resnet26:nf_resnet50,nf_regnet_b0:nf_regnet_b3,eca_nfnet_l0:eca_nfnet_l1,"
    # multi-branch modules whose new copies start as identities as a whole (session 18)
    "hrnet_w18_small:hrnet_w18,hrnet_w18:hrnet_w30,"
    # a split piece that no layer reads whole (MobileViT-v2's 1-channel query, session 18)
    "mobilevitv2_050:mobilevitv2_100,"
    # a residual added to the first channels of a block's output (ReXNet, session 18)
    "rexnet_100:rexnet_130,"
    # a stage flattened into one block in the source only (EdgeNeXt, session 19)
    "edgenext_xx_small:edgenext_x_small,"
    # a stage gets shallower or block types change: not growth
    "regnety_002:regnety_004,efficientnetv2_rw_t:efficientnetv2_rw_s,fbnetv3_b:fbnetv3_d,"
    "hardcorenas_a:hardcorenas_f,mixnet_s:mixnet_m,ese_vovnet19b_slim:ese_vovnet19b_dw,"
    "resnext26ts:resnext50_32x4d,"
    # vision transformers (added 2026-11-26, session 11), built for 64 px (`MODEL_KWARGS`)
    "vit_tiny_patch16_224:vit_small_patch16_224,deit_tiny_patch16_224:deit_small_patch16_224,"
    "vit_small_patch16_224:vit_base_patch16_224,"
    "swin_tiny_patch4_window7_224:swin_small_patch4_window7_224,"
    "swinv2_cr_tiny_224:swinv2_cr_small_224,levit_128s:levit_128,pit_ti_224:pit_xs_224,"
    "convit_tiny:convit_small,"
    # EVA-02: a packed gated MLP (GluMlp) and rotary embeddings (added 2026-11-28, session 24)
    "eva02_tiny_patch14_224:eva02_small_patch14_224")

#: how a model is built for the sweep's 64 px inputs (transformers fix their input size)
_SMALL = {"img_size": 64}
MODEL_KWARGS: dict[str, dict] = {
    **dict.fromkeys(("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
                     "deit_tiny_patch16_224", "deit_small_patch16_224", "swinv2_cr_tiny_224",
                     "swinv2_cr_small_224", "levit_128s", "levit_128", "pit_ti_224",
                     "pit_xs_224", "convit_tiny", "convit_small", "eva02_tiny_patch14_224",
                     "eva02_small_patch14_224"), _SMALL),
    **dict.fromkeys(("swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224"),
                    {"img_size": 64, "window_size": 4}),
}


def trained_looking(model: nn.Module, seed: int = 1) -> nn.Module:
    """`model` in eval mode with random but non-trivial norm statistics and affines, and
    ConvNeXt's layer scales and the normalizer-free nets' gains opened, so that a wrong channel
    map shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith("gamma") and p.ndim == 1:  # open ConvNeXt's layer scales
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("gain"):  # and NF-ResNet's residual gains, which start at 0
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model.eval()


def measure(source_name: str, target_name: str, size: int = 64) -> dict:
    import timm

    torch.manual_seed(0)
    source = trained_looking(timm.create_model(source_name, num_classes=10,
                                               **MODEL_KWARGS.get(source_name, {})))
    target = timm.create_model(target_name, num_classes=10, **MODEL_KWARGS.get(target_name, {}))
    start = time.perf_counter()
    # a model built for 64 px is traced on 64 px (LeViT keeps no record of its size)
    example = torch.randn(2, 3, size, size) if source_name in MODEL_KWARGS else None
    report = netgraft.transfer(source, target, example_input=example)
    seconds = time.perf_counter() - start
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = source(x)
        gap = ((target.eval()(x) - expected).abs().max()
               / expected.abs().max().clamp(min=1.0)).item()
    return {"source": source_name, "target": target_name, "contains": embeds(report.matching),
            "gap": gap, "exact": gap < EXACT, "coverage": round(report.coverage, 4),
            "similarity": round(report.similarity, 4), "note": report.function_note or "",
            "transfer_seconds": round(seconds, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=PAIRS,
                        help="comma-separated source:target timm names (default: the 51 pairs above)")
    parser.add_argument("--json", default="benchmarks/results/growth_sweep.json")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    pairs = [p.split(":") for p in args.pairs.split(",") if p]
    bad = [":".join(p) for p in pairs if len(p) != 2]
    if bad:
        parser.error(f"--pairs: write each pair as source:target, got {bad}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=netgraft.NetgraftWarning)
    start, rows = time.perf_counter(), []
    for source, target in pairs:
        row = measure(source, target)
        rows.append(row)
        verdict = "exact" if row["exact"] else "contains" if row["contains"] else "no"
        print(f"{source} → {target}: {verdict}, gap {row['gap']:.1e}", flush=True)
    lines = ["| source → target | holds the source | relative gap | exact | coverage | "
             "known reason |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source']} → {r['target']} | {'yes' if r['contains'] else 'no'} | "
                     f"{r['gap']:.1e} | {'yes' if r['exact'] else 'no'} | "
                     f"{100 * r['coverage']:.0f}% | {r['note'][:90]} |")
    exact = sum(r["exact"] for r in rows)
    held = sum(r["contains"] and not r["exact"] for r in rows)
    summary = (f"{exact} of {len(rows)} exact; {held} hold the source but are not exact; "
               f"{len(rows) - exact - held} do not hold it")
    table = "\n".join(lines)
    print("\n" + table + "\n\n" + summary)
    save_result(args.json, "growth_sweep", {"exact_below": EXACT, "pairs": rows,
                                             "summary": summary, "table": table}, start=start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
