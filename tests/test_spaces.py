"""Search spaces: published figures, every candidate at every layer, stride adaptation, costs."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from hwnas.arch import Arch
from hwnas.cli.main import cli
from hwnas.errors import HwnasError
from hwnas.spaces import SKIP_OPS, SPACES, Cost, get_space
from hwnas.spaces.base import adapt_strides
from hwnas.spaces.cost import count_cost

# ../shared/reference/published_archs.md, "Single Path One-Shot": choice index per layer,
# 0 = Choice_3, 1 = Choice_5, 2 = Choice_7, 3 = Choice_x (megvii-model/SinglePathOneShot README:
# 323M FLOPs, 3.5M params).
SPOS_INDICES = (2, 1, 0, 1, 2, 0, 2, 0, 2, 0, 2, 3, 0, 0, 0, 0, 3, 2, 3, 3)
SPOS_OPS = ("shuffle_k3", "shuffle_k5", "shuffle_k7", "shuffle_x")

# ../shared/reference/published_archs.md, "ProxylessNAS-Mobile" (osmr/imgclsmob proxylessnas_mobile):
# about 320M FLOPs and about 4.1M params; blocks 3 and 4 of the first stage are the zero op.
PROXYLESS_MOBILE_KERNELS = (5, 3, 3, 3, 7, 3, 5, 5, 7, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7)
PROXYLESS_MOBILE_EXPANSIONS = (3, 3, 3, 3, 3, 3, 3, 3, 6, 3, 3, 3, 6, 3, 3, 3, 6, 6, 3, 3, 6)
PROXYLESS_MOBILE_ZERO_LAYERS = (2, 3)


def spos_arch() -> Arch:
    return Arch("shufflenet", tuple(SPOS_OPS[i] for i in SPOS_INDICES))


def proxyless_mobile_arch() -> Arch:
    choices = [f"mb{e}_k{k}" for k, e in zip(PROXYLESS_MOBILE_KERNELS, PROXYLESS_MOBILE_EXPANSIONS)]
    for layer in PROXYLESS_MOBILE_ZERO_LAYERS:
        choices[layer] = "zero"
    return Arch("proxyless", tuple(choices))


@pytest.mark.parametrize(
    ("make_arch", "published_flops", "published_params"),
    [(spos_arch, 323e6, 3.5e6), (proxyless_mobile_arch, 320e6, 4.1e6)],
    ids=["spos-shufflenet", "proxylessnas-mobile"],
)
def test_published_figures_within_3_percent(make_arch, published_flops, published_params):
    arch = make_arch()
    cost = arch.build_space().cost(arch.choices)
    assert abs(cost.flops - published_flops) / published_flops < 0.03, cost
    assert abs(cost.params - published_params) / published_params < 0.03, cost


def test_cost_counter_matches_a_hand_count():
    conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
    linear = torch.nn.Linear(16, 10)
    # conv: output 16 x 4 x 4, each output needs 8*3*3 multiply-adds; linear: 16*10
    assert count_cost(conv, (8, 8, 8)).flops == 16 * 4 * 4 * 8 * 9
    assert count_cost(conv, (8, 8, 8)).params == 16 * 8 * 9
    assert count_cost(linear, (16,)).flops == 160
    assert count_cost(linear, (16,)).params == 170


def test_whole_net_params_equal_the_built_module():
    arch = spos_arch()
    space = arch.build_space()
    built = sum(p.numel() for p in space.build(arch.choices).parameters())
    assert space.cost(arch.choices).params == built


def _every_candidate():
    for name in ("proxyless", "shufflenet"):
        for resolution in (224, 32):
            space = get_space(name, resolution=resolution)
            for layer in space.layers:
                for op in layer.candidates:
                    yield pytest.param(name, resolution, layer.index, op, id=f"{name}-{resolution}-L{layer.index}-{op}")


_SPACE_CACHE: dict = {}


@pytest.mark.parametrize(("name", "resolution", "index", "op"), list(_every_candidate()))
def test_every_candidate_builds_with_the_right_output_shape(name, resolution, index, op):
    """A smoke test over every candidate: it builds, runs and gives the layer's output shape.

    Its params check counts the same module's ``numel()`` the counter counts, so it only shows
    the counter sees every parameter; ``test_op_costs_match_formulas_written_by_hand`` checks
    the numbers themselves.
    """
    space = _SPACE_CACHE.setdefault((name, resolution), get_space(name, resolution=resolution))
    layer = space.layers[index]
    module = space.build_op(index, op).eval()
    with torch.no_grad():
        out = module(torch.randn(1, layer.c_in, layer.h, layer.w))
    assert tuple(out.shape) == (1, layer.c_out, *layer.out_hw)
    cost = space.op_cost(index, op)
    assert cost.params == sum(p.numel() for p in module.parameters())
    assert (cost.flops == 0) == (op in ("zero", "identity"))


@pytest.mark.parametrize("name", sorted(SPACES))
@pytest.mark.parametrize("resolution", [224, 32, 28])
def test_child_nets_give_logits_and_keep_two_pixels_at_the_end(name, resolution):
    space = get_space(name, resolution=resolution, num_classes=10, in_channels=1)
    assert min(space.head_in_shape[1:]) >= 2
    arch = Arch.random(space, seed=resolution)
    with torch.no_grad():
        out = space.build(arch.choices).eval()(torch.randn(2, 1, resolution, resolution))
    assert out.shape == (2, 10)


def test_stride_rule_demotes_earliest_steps_first():
    strides = [2, 2, 2, 2, 1, 2]  # stem, then stages
    assert adapt_strides(224, strides) == strides  # 224 / 32 = 7 >= 2
    assert adapt_strides(32, strides) == [1, 2, 2, 2, 1, 2]  # 32 / 16 = 2
    assert adapt_strides(8, strides) == [1, 1, 1, 2, 1, 2]  # 8 / 4 = 2


def test_skip_layers_are_identities_with_no_flops_or_params_in_the_child():
    arch = proxyless_mobile_arch()
    space, child = arch.build_space(), arch.build()
    skips = [i for i, op in enumerate(arch.choices) if op in SKIP_OPS]
    assert skips and all(isinstance(child.layers[i], torch.nn.Identity) for i in skips)
    assert all(space.op_cost(i, arch.choices[i]) == Cost(0, 0) for i in skips)
    # the whole net costs its fixed parts and its other layers, nothing more
    assert space.cost(arch.choices) == space.fixed_cost() + sum(
        (space.op_cost(i, op) for i, op in enumerate(arch.choices) if i not in skips), Cost(0, 0)
    )


def test_width_mult_rounds_channels_to_multiples_of_8():
    space = get_space("proxyless", width_mult=0.35)
    assert all(layer.c_out % 8 == 0 for layer in space.layers)


def test_child_net_exports_to_onnx_with_dynamo(tmp_path):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    import onnxruntime

    space = get_space("proxyless", resolution=32, num_classes=10, in_channels=1)
    child = Arch.random(space, seed=3).build().eval()
    x = torch.randn(1, 1, 32, 32)
    path = tmp_path / "child.onnx"
    torch.onnx.export(child, (x,), str(path), dynamo=True)
    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = child(x).numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_spaces_cli_lists_and_describes(cli_runner):
    listed = cli_runner.invoke(cli, ["spaces", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {entry["space"] for entry in json.loads(listed.output)} == set(SPACES)
    shown = cli_runner.invoke(cli, ["spaces", "shufflenet", "--resolution", "32", "--json"])
    assert shown.exit_code == 0, shown.output
    described = json.loads(shown.output)
    assert len(described["layers"]) == 20 and described["space_args"]["resolution"] == 32


def mbconv_by_hand(c_in: int, c_out: int, stride: int, size: int, kernel: int, expand: int) -> tuple[int, int]:
    """Multiply-adds and params of an MBConv (1x1 expand, k x k depthwise, 1x1 project, each conv + BN) from its shape."""
    hidden, out = c_in * expand, -(-size // stride)
    flops = size * size * hidden * c_in + out * out * hidden * kernel * kernel + out * out * c_out * hidden
    params = c_in * hidden + hidden * kernel * kernel + hidden * c_out + 2 * (hidden + hidden + c_out)  # BN: scale and shift
    return flops, params


def shuffle_by_hand(channels: int, size: int, kernel: int) -> tuple[int, int]:
    """A stride-1 ShuffleNetV2 choice block: half the channels through pw -> dw k x k -> pw, the other half passed."""
    half = channels // 2
    flops = size * size * (half * half + half * kernel * kernel + half * half)
    params = half * half + half * kernel * kernel + half * half + 2 * 3 * half
    return flops, params


def test_op_costs_match_formulas_written_by_hand():
    # a worked example: 16 -> 24 channels, stride 2 at 16x16, kernel 5, expand 6 (hidden 96, output 8x8)
    assert mbconv_by_hand(16, 24, 2, 16, 5, 6) == (16 * 16 * 96 * 16 + 8 * 8 * 96 * 25 + 8 * 8 * 24 * 96, 6672)
    space = get_space("proxyless", resolution=32)
    for layer in (space.layers[0], space.layers[5], space.layers[20]):
        for op, (expand, kernel) in {"mb3_k3": (3, 3), "mb6_k7": (6, 7)}.items():
            cost = space.op_cost(layer.index, op)
            assert (cost.flops, cost.params) == mbconv_by_hand(layer.c_in, layer.c_out, layer.stride, layer.h, kernel, expand)
    shuffle = get_space("shufflenet", resolution=32)
    inner = next(layer for layer in shuffle.layers if layer.stride == 1)
    for kernel in (3, 5, 7):
        cost = shuffle.op_cost(inner.index, f"shuffle_k{kernel}")
        assert (cost.flops, cost.params) == shuffle_by_hand(inner.c_in, inner.h, kernel)


def test_spaces_work_on_choices_and_never_import_arch():
    """``hwnas.spaces`` knows nothing of ``hwnas.arch`` (the dependency runs one way: Arch -> spaces)."""
    code = "import sys, hwnas.spaces, hwnas.spaces.dag; assert 'hwnas.arch' not in sys.modules, 'spaces imported hwnas.arch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    space = get_space("proxyless", resolution=32, in_channels=1, num_classes=10, width_mult=0.25)
    choices = space.random_choices(random.Random(0))
    assert space.cost(choices) == Arch("proxyless", choices, space.args.to_dict()).build_space().cost(choices)
    with pytest.raises(HwnasError, match="is for space 'proxyless', not 'shufflenet'"):
        Arch("proxyless", choices, space.args.to_dict()).choices_in(get_space("shufflenet"))
