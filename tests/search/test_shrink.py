"""Shrink: removing dead channels, kernel groups, whole blocks and queries keeps eval outputs and costs exact."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from hrnas.search.shrink import (
    BlockKeep,
    alive_masks,
    keep_all,
    keep_from_lists,
    keep_to_lists,
    kept_spec,
    shrink,
)
from hrnas.space.cost import cost
from hrnas.space.network import HRNet, block_modules, build_model
from hrnas.space.spec import NetSpec
from hrnas.space.transformer import LightTransformer

SIZE = (32, 32)
ZOO_TEST_SPECS = ("test_seg", "test_cls", "test_cls_all", "test_kpt")


def whole_block_kills(spec: NetSpec) -> list[str]:
    """A residual block, a width-changing stride-1 block and a stride-2 block (when the spec has them)."""
    blocks = [(p, b) for p, b in spec.blocks() if b.total_hidden > 0]
    picks = []
    for want in (
        lambda b: b.residual,
        lambda b: not b.residual and b.stride == 1,
        lambda b: b.stride == 2,
    ):
        path = next((p for p, b in blocks if want(b) and p not in picks), None)
        if path is not None:
            picks.append(path)
    return picks


@torch.no_grad()
def kill_channels_(model: HRNet, spec: NetSpec, gen: torch.Generator, whole_blocks: bool = True) -> dict[str, Tensor]:
    """Zero the dw_bn γ of random channels, of one whole kernel group in every other block and (with
    ``whole_blocks``) of every channel of a few blocks; give the dead channels a fresh random β. Returns
    the dead masks."""
    whole = set(whole_block_kills(spec)) if whole_blocks else set()
    dead_masks = {}
    for i, (path, block) in enumerate(block_modules(model).items()):
        h = block.spec.total_hidden
        if h == 0:
            continue
        dead = torch.rand(h, generator=gen) < 0.3
        if path in whole:
            dead[:] = True
        elif i % 2 == 0:
            g = i % len(block.spec.hidden)
            start = sum(block.spec.hidden[:g])
            dead[start : start + block.spec.hidden[g]] = True
        block.dw_bn.weight[dead] = 0.0
        block.dw_bn.bias[dead] = torch.randn(int(dead.sum()), generator=gen, dtype=block.dw_bn.bias.dtype)
        dead_masks[path] = dead
    return dead_masks


def counted_macs(model: nn.Module, size: tuple[int, int]) -> int:
    x = torch.randn(1, 3, *size, dtype=next(model.parameters()).dtype)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", ZOO_TEST_SPECS)
def test_shrink_keeps_eval_outputs_and_exact_cost(name, make_net):
    spec, model = make_net(name)
    gen = torch.Generator().manual_seed(3)
    dead = kill_channels_(model, spec, gen)
    x = torch.randn(2, 3, *SIZE, generator=gen, dtype=torch.float64)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)

    keep = alive_masks(model, spec, threshold=1e-3, mode="current")
    for path, mask in dead.items():
        assert torch.equal(keep[path].channels, ~mask)
    new_spec, new_model, maps = shrink(model, spec, keep)

    assert not new_model.training and new_model.spec == new_spec
    assert next(new_model.parameters()).dtype == torch.float64
    with torch.no_grad():
        got = new_model(x)
    assert (got - expected).abs().max().item() < 1e-5
    # the old model is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before_state[k]), k

    new_blocks = dict(new_spec.blocks())
    for path in whole_block_kills(spec):
        assert new_blocks[path].total_hidden == 0 and new_blocks[path].kernel_sizes == ()
        assert not hasattr(block_modules(new_model)[path], "project")
    for path, mask in dead.items():
        old_block = dict(spec.blocks())[path]
        kept = [
            (k, int((~mask[s : s + h]).sum()))
            for k, h, s in zip(
                old_block.kernel_sizes,
                old_block.hidden,
                [sum(old_block.hidden[:i]) for i in range(len(old_block.hidden))],
                strict=True,
            )
        ]
        assert new_blocks[path].kernel_sizes == tuple(k for k, n in kept if n > 0)
        assert new_blocks[path].hidden == tuple(n for _, n in kept if n > 0)

    assert cost(new_spec, SIZE).macs == counted_macs(new_model, SIZE)
    assert cost(new_spec, SIZE).params == sum(p.numel() for p in new_model.parameters())
    assert cost(new_spec, SIZE).macs < cost(spec, SIZE).macs

    # the shrunk spec rebuilds the shrunk model exactly (what a checkpoint relies on)
    rebuilt = build_model(NetSpec.from_json(new_spec.to_json())).to(torch.float64)
    rebuilt.load_state_dict(new_model.state_dict(), strict=True)

    names = {n for n, _ in new_model.named_parameters()} | {n for n, _ in new_model.named_buffers()}
    assert set(maps) == names
    old_names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    assert all(m.source is None or m.source in old_names for m in maps.values())


@pytest.mark.parametrize("name", ["test_seg"])
def test_shrink_in_training_mode_matches_too(name, make_net):
    # in training mode BatchNorm removes the dead channels' constant by itself (a block without any
    # channel left keeps the eval-mode constant instead, so none is emptied here)
    spec, model = make_net(name)
    gen = torch.Generator().manual_seed(5)
    kill_channels_(model, spec, gen, whole_blocks=False)
    new_spec, new_model, _ = shrink(model, spec, alive_masks(model, spec, mode="current"))
    for m in list(model.modules()) + list(new_model.modules()):
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    model.train()
    new_model.train()
    x = torch.randn(4, 3, *SIZE, generator=gen, dtype=torch.float64)
    assert (new_model(x) - model(x)).abs().max().item() < 1e-6


class _Constant(nn.Module):
    """The eval output of a transformer with no query: its reverse_norm's constant."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: Tensor, out_size: tuple[int, int]) -> Tensor:
        return self.value.view(1, -1, 1, 1).expand(x.shape[0], -1, *out_size)


def sliced_transformer(t: LightTransformer, alive: Tensor) -> nn.Module:
    """The reference: ``t`` rebuilt with only the ``alive`` queries, by direct slicing of its state."""
    cin, cout = t.projector.in_channels - 2, t.reverse.out_channels
    n = int(alive.sum())
    if n == 0:
        rn = t.reverse_norm
        return _Constant(rn.bias - rn.weight * rn.running_mean / torch.sqrt(rn.running_var + rn.eps))
    ref = LightTransformer(cin, cout, n, grid=t.grid, bn_momentum=t.input_norm.momentum, bn_eps=t.input_norm.eps)
    state = {}
    for key, value in t.state_dict().items():
        if key in ("projector.weight", "query_embed") or (
            key.startswith("input_norm.") and key != "input_norm.num_batches_tracked"
        ):
            value = value[alive]
        elif key == "reverse.weight":
            value = value[:, alive]
        state[key] = value
    ref.load_state_dict(state)
    return ref.to(t.query_embed.dtype).eval()


@pytest.mark.parametrize("name", ["test_seg", "test_cls_all"])
def test_shrink_queries_equals_sliced_transformers(name, make_net):
    spec, model = make_net(name)
    gen = torch.Generator().manual_seed(11)
    blocks = block_modules(model)
    t_paths = [p for p, b in spec.blocks() if b.num_queries > 0]
    alive_masks_ref = {}
    with torch.no_grad():
        for i, path in enumerate(t_paths):
            t = blocks[path].transformer
            n = t.num_queries
            if i in (0, 1):
                alive = torch.zeros(n, dtype=torch.bool)  # the whole transformer goes
            else:
                alive = torch.rand(n, generator=gen) < 0.5
                alive[i % n] = True
                alive[(i + 1) % n] = False
            small = torch.where(torch.rand(n, generator=gen) < 0.5, 0.0, 5e-4).to(t.input_norm.weight)
            t.input_norm.weight[~alive] = small[~alive]
            alive_masks_ref[path] = alive
        # the second block also loses every channel: the transformer's constant goes to empty_bias
        if blocks[t_paths[1]].spec.total_hidden:
            blocks[t_paths[1]].dw_bn.weight.zero_()

    keep = alive_masks(model, spec, threshold=1e-3, mode="current")
    for path, alive in alive_masks_ref.items():
        assert torch.equal(keep[path].queries, alive)
    new_spec, new_model, _ = shrink(model, spec, keep)

    reference = copy.deepcopy(model)
    ref_blocks = block_modules(reference)
    for path, alive in alive_masks_ref.items():
        ref_blocks[path].transformer = sliced_transformer(blocks[path].transformer, alive)
    x = torch.randn(2, 3, *SIZE, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert (new_model(x) - reference(x)).abs().max().item() < 1e-5

    new_blocks = block_modules(new_model)
    assert new_blocks[t_paths[0]].transformer is None and dict(new_spec.blocks())[t_paths[0]].num_queries == 0
    assert new_blocks[t_paths[1]].transformer is None and new_blocks[t_paths[1]].spec.total_hidden == 0
    for path in t_paths[2:]:
        assert new_blocks[path].transformer.num_queries == int(alive_masks_ref[path].sum())
    assert cost(new_spec, SIZE).macs == counted_macs(new_model, SIZE)
    assert cost(new_spec, SIZE).params == sum(p.numel() for p in new_model.parameters())


def test_keep_everything_is_an_exact_copy(make_net):
    spec, model = make_net("test_cls_all")
    new_spec, new_model, maps = shrink(model, spec, keep_all(model, spec))
    assert new_spec == spec
    old = model.state_dict()
    for key, value in new_model.state_dict().items():
        assert torch.equal(value, old[key]), key
    assert all(m.source == name for name, m in maps.items())


def test_shrinking_a_shrunk_model_again(make_net):
    spec, model = make_net("test_seg")
    gen = torch.Generator().manual_seed(2)
    kill_channels_(model, spec, gen)
    spec1, model1, _ = shrink(model, spec, alive_masks(model, spec, mode="current"))
    kill_channels_(model1, spec1, gen)
    spec2, model2, _ = shrink(model1, spec1, alive_masks(model1, spec1, mode="current"))
    x = torch.randn(1, 3, *SIZE, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert (model2(x) - model1(x)).abs().max().item() < 1e-5
    assert cost(spec2, SIZE).macs == counted_macs(model2, SIZE)


def test_alive_masks_modes(make_net):
    spec, model = make_net("test_seg")
    _, ema = make_net("test_seg")
    ema.load_state_dict(model.state_dict())
    path = "stages[1].parallel[1][0]"
    with torch.no_grad():
        block_modules(model)[path].dw_bn.weight[:4] = 0.0  # dead in the model
        block_modules(ema)[path].dw_bn.weight[2:6] = 1e-4  # dead in the EMA
        block_modules(model)[path].transformer.input_norm.weight[0] = 0.0
    cur = alive_masks(model, spec, mode="current")[path].channels
    avg = alive_masks(model, spec, ema_model=ema, mode="ema")[path].channels
    both = alive_masks(model, spec, ema_model=ema, mode="ema_and_current")[path]
    assert cur[:4].tolist() == [False] * 4 and cur[4:].all()
    assert avg[2:6].tolist() == [False] * 4 and avg[:2].all() and avg[6:].all()
    assert both.channels[2:4].tolist() == [False, False] and both.channels[:2].all() and both.channels[4:].all()
    assert both.queries.all()
    with pytest.raises(ValueError, match="needs ema_model"):
        alive_masks(model, spec, mode="ema")
    with pytest.raises(ValueError, match="unknown mode"):
        alive_masks(model, spec, mode="sometimes")


def test_keep_lists_round_trip_and_validation(make_net):
    spec, model = make_net("test_cls_all")
    keep = alive_masks(model, spec, mode="current")
    keep["head.incre[0]"].channels[0] = False
    plain = keep_to_lists(keep)
    again = keep_from_lists(plain)
    assert keep_to_lists(again) == plain
    assert kept_spec(spec, again) == kept_spec(spec, keep)
    bad = dict(keep)
    bad["head.incre[0]"] = BlockKeep(torch.ones(3, dtype=torch.bool), keep["head.incre[0]"].queries)
    with pytest.raises(ValueError, match=r"head\.incre\[0\]: channel mask has 3 entries"):
        shrink(model, spec, bad)
    with pytest.raises(ValueError, match="does not have"):
        kept_spec(spec, {"stages[9].new_branch": keep["head.incre[0]"]})
    other_spec, _ = make_net("test_seg")
    with pytest.raises(ValueError, match="model"):
        shrink(model, other_spec, {})
