"""Model specs: a timm name or factory, optionally with builder arguments."""
import pytest
import torch
from safetensors.torch import load_file

from netgraft.cli import main
from netgraft.errors import ModelSpecError
from netgraft.models import canonical_spec, create_model, head_shape, parse_spec, split_specs

VIT = "vit_tiny_patch16_224(img_size=32, patch_size=8, depth=2)"


def test_parse_spec_reads_literals():
    assert parse_spec("resnet18") == ("resnet18", {})
    assert parse_spec(" swin_tiny_patch4_window7_224(img_size=64, window_size=4, depths=(2, 2, 2, 2),"
                      " norm_layer_name='x', drop_path_rate=0.1, qkv_bias=False) ") == (
        "swin_tiny_patch4_window7_224",
        {"img_size": 64, "window_size": 4, "depths": (2, 2, 2, 2), "norm_layer_name": "x",
         "drop_path_rate": 0.1, "qkv_bias": False})
    assert parse_spec("my.models:net(width=3)") == ("my.models:net", {"width": 3})


@pytest.mark.parametrize("spec, message", [
    ("vit(", "cannot read its arguments"),
    ("(img_size=32)", "no model name before '('"),
    ("vit(32)", "only key=value arguments"),
    ("vit(**opts)", "only key=value arguments"),
    ("vit(a=1)(b=2)", "only key=value arguments"),
    ("vit(act=nn.GELU)", "the value of act (nn.GELU) is not a Python literal"),
    ("vit(a=__import__('os'))", "is not a Python literal"),
    ("vit(a={[1]: 2})", "the value of a ({[1]: 2}) is not a Python literal"),
    ("vit(a=1, a=2)", "a is given twice"),
])
def test_bad_specs_say_what_to_write(spec, message):
    with pytest.raises(ModelSpecError, match="write name\\(key=value") as info:
        parse_spec(spec)
    assert message in str(info.value)


def test_canonical_spec_is_one_spelling():
    assert canonical_spec(" resnet18 ") == "resnet18"
    one = canonical_spec('vit_tiny_patch16_224( img_size = 32, global_pool="avg" )')
    assert one == "vit_tiny_patch16_224(img_size=32,global_pool='avg')"
    assert canonical_spec(one) == one and parse_spec(one) == parse_spec(
        'vit_tiny_patch16_224(img_size=32, global_pool="avg")')


def test_split_specs_keeps_arguments_together():
    assert split_specs("resnet18,vit(img_size=32,depths=(2,2)),b") == [
        "resnet18", "vit(img_size=32,depths=(2,2))", "b"]
    assert split_specs("a(x=1):b(y='u:v'):wider", ":") == ["a(x=1)", "b(y='u:v')", "wider"]
    # brackets and separators inside string values are text
    assert split_specs(r"m(s='(,', t='a\'),b'),resnet18") == [r"m(s='(,', t='a\'),b')", "resnet18"]


def test_create_model_passes_the_arguments_to_timm():
    model = create_model(VIT, num_classes=7, in_chans=1)
    assert model.patch_embed.proj.weight.shape == (192, 1, 8, 8)
    assert len(model.blocks) == 2
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 7)
    # given twice alike is fine, otherwise the clash is named
    assert create_model("resnet18(num_classes=5)", num_classes=5).fc.out_features == 5
    with pytest.raises(ModelSpecError, match="num_classes=5 in the spec but num_classes=10"):
        create_model("resnet18(num_classes=5)", num_classes=10)
    with pytest.raises(ModelSpecError, match="timm could not build 'resnet18'"):
        create_model("resnet18(no_such_option=1)")
    # a checkpoint's head is read whatever the arguments
    state = {"head.weight": torch.zeros(4, 192), "patch_embed.proj.weight": torch.zeros(192, 1, 8, 8)}
    assert head_shape(VIT, state) == {"num_classes": 4, "in_chans": 1}


def test_cli_grafts_models_built_with_arguments(tmp_path, capsys):
    """A ViT built for 32-pixel images grows into a deeper, wider one computing the same."""
    src, out = tmp_path / "src.safetensors", tmp_path / "dst.safetensors"
    torch.manual_seed(0)
    source = create_model(VIT, num_classes=10, in_chans=1).eval()
    from safetensors.torch import save_file
    save_file(source.state_dict(), str(src))
    target_spec = "vit_small_patch16_224(img_size=32, patch_size=8, depth=4)"
    code = main(["transfer", "--source", VIT, "--source-weights", str(src), "--target", target_spec,
                 "--num-classes", "10", "--in-chans", "1", "--out", str(out), "-q"])
    assert code == 0
    # the summary names the models as given, and its "[graft]" is text, not console markup
    assert f"{VIT} → {target_spec} [graft]: " in capsys.readouterr().out.replace("\n", "")
    target = create_model(target_spec, num_classes=10, in_chans=1).eval()
    target.load_state_dict(load_file(str(out)))
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(target(x), source(x), atol=1e-4 * source(x).abs().max().item())


def test_a_users_module_is_found_in_the_working_folder_and_its_import_errors_are_named(
        tmp_path, monkeypatch):
    """QA (session 16): the console scripts do not search the working folder (`python -m`
    does), and a module with a syntax error, or a search space needing arguments, printed a
    traceback."""
    import sys

    from netgraft.errors import NetgraftError
    from netgraft.nas import get_space

    (tmp_path / "ng_s16_nets.py").write_text(
        "import torch\n"
        "def net():\n    return torch.nn.Sequential(torch.nn.Linear(4, 3))\n"
        "class NeedsArgs:\n    def __init__(self, x):\n        pass\n")
    (tmp_path / "ng_s16_broken.py").write_text("def f(:\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    model = create_model("ng_s16_nets:net")
    assert isinstance(model[0], torch.nn.Linear) and model[0].in_features == 4
    with pytest.raises(ModelSpecError, match="importing 'ng_s16_broken' for model "
                                             "'ng_s16_broken:f' failed: SyntaxError"):
        create_model("ng_s16_broken:f")
    with pytest.raises(NetgraftError, match="importing 'ng_s16_broken' for search space"):
        get_space("ng_s16_broken:X")
    with pytest.raises(NetgraftError, match="search space 'ng_s16_nets:NeedsArgs': building it "
                                            "raised TypeError"):
        get_space("ng_s16_nets:NeedsArgs")
    with pytest.raises(ModelSpecError, match="cannot import 'ng_s16_missing' for model .* or in "
                                             "the working folder"):
        create_model("ng_s16_missing:net")
