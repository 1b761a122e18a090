"""Arch: JSON and compact round-trips, validation messages, and the CLI's exit codes on bad input."""

from __future__ import annotations

import json

import pytest
import torch

from hwnas.arch import Arch, load_arch
from hwnas.cli.main import EXIT_ERROR, cli
from hwnas.errors import HwnasError
from hwnas.spaces import SPACES, get_space


@pytest.mark.parametrize("name", sorted(SPACES))
@pytest.mark.parametrize("seed", range(5))
def test_random_archs_round_trip(name, seed):
    space = get_space(name, resolution=32, num_classes=10, in_channels=1)
    arch = Arch.random(space, seed)
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_compact(arch.to_compact()) == arch
    assert load_arch(arch.to_compact()) == arch
    assert Arch.random(space, seed) == arch  # a seed reproduces the arch


def test_compact_form_lists_only_non_default_options():
    arch = Arch("shufflenet", ("shuffle_k3",) * 20, {"resolution": 32})
    assert arch.to_compact() == "shufflenet,resolution=32:" + "-".join(["shuffle_k3"] * 20)


def test_arch_file_loads(tmp_path):
    arch = Arch.random(get_space("proxyless"), seed=1)
    path = tmp_path / "arch.json"
    arch.save(path)
    assert load_arch(path) == arch


def _proxyless(choices):
    return Arch("proxyless", tuple(choices))


def _greedy_with_zero_at(index):
    space = get_space("proxyless-greedy")
    layer = space.layers[index]
    assert layer.stride == 1 and layer.c_in == layer.c_out  # the shape allows a skip: only the op name is wrong
    choices = [candidates.candidates[0] for candidates in space.layers]
    choices[index] = "zero"
    return load_arch(Arch(space.name, tuple(choices)).to_compact())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: load_arch(_proxyless(["mb3_k3"] * 20).to_compact()), "20 choices but space 'proxyless' has 21"),
        (
            lambda: load_arch(_proxyless(["mb3_k3"] * 5 + ["conv_k9"] + ["mb3_k3"] * 15).to_compact()),
            "layer 5 (40->40 channels, stride 1): 'conv_k9' is not allowed (space 'proxyless' has no op 'conv_k9'); legal: mb3_k3",
        ),
        (
            lambda: load_arch(_proxyless(["zero"] + ["mb3_k3"] * 20).to_compact()),
            "layer 0 (16->32 channels, stride 2): 'zero' is not allowed (a skip op needs stride 1 and C_in == C_out)",
        ),
        (lambda: _greedy_with_zero_at(1), "'zero' is not allowed (space 'proxyless-greedy' has no op 'zero')"),
        (lambda: load_arch("{not json"), "not valid JSON"),
        (lambda: Arch.from_json('["a list"]'), "must be a JSON object"),
        (lambda: Arch.from_json('{"space": "proxyless"}'), "missing 'choices'"),
        (lambda: load_arch("nonet:mb3_k3"), "unknown space 'nonet'"),
        (lambda: Arch.from_compact("proxyless,resolution=big:mb3_k3"), "resolution='big' is not a number"),
        (lambda: Arch.from_compact("proxyless,depth=3:mb3_k3"), "unknown space option 'depth'"),
        (lambda: load_arch("neither-a-file-nor-an-arch"), "neither an arch file nor a compact arch"),
    ],
    ids=[
        "wrong-length",
        "unknown-op",
        "zero-where-shape-changes",
        "zero-in-a-space-with-identity",
        "not-json",
        "not-object",
        "no-choices",
        "unknown-space",
        "bad-option-value",
        "unknown-option",
        "not-a-file",
    ],
)
def test_malformed_arch_gives_a_clear_error(make, message):
    with pytest.raises(HwnasError) as caught:
        make()
    assert message in str(caught.value)


def test_bad_arch_fails_the_cli_with_a_message(cli_runner, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"space": "proxyless", "choices": ["mb3_k3"]')
    wrong_length = _proxyless(["mb3_k3"] * 3).to_compact()
    zero_at_stride_2 = _proxyless(["zero"] + ["mb3_k3"] * 20).to_compact()
    for command in (["arch", "show", str(broken)], ["arch", "flops", wrong_length], ["arch", "show", zero_at_stride_2]):
        result = cli_runner.invoke(cli, command)
        assert result.exit_code == EXIT_ERROR, (command, result.output)
        assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert str(broken) in cli_runner.invoke(cli, ["arch", "show", str(broken)]).output  # the message names the file
    binary = tmp_path / "weights.pt"
    binary.write_bytes(bytes(range(256)))
    result = cli_runner.invoke(cli, ["arch", "show", str(binary)])
    assert result.exit_code == EXIT_ERROR and result.output.startswith(f"error: {binary}: ") and "Traceback" not in result.output


def counted_by_hand(arch: Arch) -> dict[str, int]:
    """Multiply-adds of the built child's convs and linears (each weight once per output position), on a real forward."""
    net, flops = arch.build().eval(), 0

    def hook(module, _inputs, output):
        nonlocal flops
        flops += module.weight.numel() * (output.shape[2] * output.shape[3] if output.dim() == 4 else 1)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        net(torch.zeros(1, *arch.build_space().input_shape))
    for handle in handles:
        handle.remove()
    return {"flops": flops, "params": sum(p.numel() for p in net.parameters())}


def test_arch_cli_sample_show_flops(cli_runner, tmp_path):
    out = tmp_path / "a.json"
    sampled = cli_runner.invoke(
        cli, ["arch", "sample", "--space", "shufflenet", "--resolution", "32", "--seed", "4", "-o", str(out)]
    )
    assert sampled.exit_code == 0, sampled.output
    arch = load_arch(out)
    flops = cli_runner.invoke(cli, ["arch", "flops", str(out), "--json"])
    cost = arch.build_space().cost(arch.choices)
    assert json.loads(flops.output) == {"flops": cost.flops, "params": cost.params} == counted_by_hand(arch)
    shown = json.loads(cli_runner.invoke(cli, ["arch", "show", arch.to_compact(), "--json"]).output)
    assert shown["choices"] == list(arch.choices) and sum(row["flops"] for row in shown["layers"]) < cost.flops
    # the same space options override the arch's own args on every command
    at_128 = json.loads(cli_runner.invoke(cli, ["arch", "flops", str(out), "--resolution", "128", "--json"]).output)
    assert at_128["flops"] > cost.flops
    again = cli_runner.invoke(cli, ["arch", "sample", "--space", "shufflenet", "-o", str(out)])
    assert again.exit_code == EXIT_ERROR and "exists" in again.output


def test_version(cli_runner):
    from hwnas import __version__

    result = cli_runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
