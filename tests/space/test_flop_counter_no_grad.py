"""FlopCounterMode counts transformer-enabled networks under ``no_grad`` and ``inference_mode`` too.

The transformer's decoder used to receive an expanded view of the ``query_embed`` parameter; torch's
module tracker (inside FlopCounterMode) then failed on it without autograd. The count must equal the
analytic :func:`hrnas.space.cost.cost` in every grad mode, and the fix must not change the outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from hrnas.space.cost import cost
from hrnas.space.network import build_model
from hrnas.space.transformer import LightTransformer
from hrnas.space.zoo import get_spec

GRAD_MODES: dict[str, Callable[[], AbstractContextManager]] = {
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


@pytest.mark.parametrize("mode", GRAD_MODES)
@pytest.mark.parametrize(("name", "size"), [("test_seg", (48, 48)), ("test_cls_all", (40, 48))])
def test_counter_equals_cost_without_autograd(name: str, size: tuple[int, int], mode: str) -> None:
    spec = get_spec(name)
    assert any(b.num_queries for _, b in spec.blocks())
    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = torch.randn(2, 3, *size)
    with GRAD_MODES[mode](), FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() == 2 * 2 * cost(spec, size).macs  # batch of two


def test_transformer_outputs_and_state_dict_unchanged() -> None:
    """The decoder's queries equal the expanded ``query_embed`` (the former form), in eval and training."""
    torch.manual_seed(1)
    t = LightTransformer(6, 5, 4, grid=4, dropout=0.0)
    assert list(t.state_dict()) == [
        "query_embed", "projector.weight", "input_norm.weight", "input_norm.bias", "input_norm.running_mean",
        "input_norm.running_var", "input_norm.num_batches_tracked", "encoder.attn.q.weight",
        "encoder.attn.k.weight", "encoder.attn.v.weight", "encoder.attn.o.weight", "encoder.norm1.weight",
        "encoder.norm1.bias", "encoder.ffn.0.weight", "encoder.ffn.3.weight", "encoder.norm2.weight",
        "encoder.norm2.bias", "decoder.attn.q.weight", "decoder.attn.k.weight", "decoder.attn.v.weight",
        "decoder.attn.o.weight", "decoder.norm1.weight", "decoder.norm1.bias", "decoder.ffn.0.weight",
        "decoder.ffn.3.weight", "decoder.norm2.weight", "decoder.norm2.bias", "reverse.weight",
        "reverse_norm.weight", "reverse_norm.bias", "reverse_norm.running_mean", "reverse_norm.running_var",
        "reverse_norm.num_batches_tracked",
    ]
    x = torch.randn(3, 6, 10, 12)

    def expanded_form(module: LightTransformer) -> torch.Tensor:
        memory = module.encoder(module.tokens(x).flatten(2))
        decoded = module.decoder(module.query_embed.unsqueeze(0).expand(3, -1, -1), memory)
        maps = decoded.reshape(3, module.num_queries, module.grid, module.grid)
        out = module.reverse_norm(module.reverse(maps))
        return F.interpolate(out, size=(10, 12), mode="bilinear", align_corners=False)

    for train in (False, True):
        t.train(train)
        state = {k: v.clone() for k, v in t.state_dict().items()}
        expected = expanded_form(t)
        t.load_state_dict(state)  # training-mode BN statistics move once per forward
        got = t(x, (10, 12))
        assert torch.equal(got, expected)
        (g_new,) = torch.autograd.grad(got.square().sum(), t.query_embed)
        t.load_state_dict(state)
        (g_old,) = torch.autograd.grad(expanded_form(t).square().sum(), t.query_embed)
        assert torch.equal(g_new, g_old)
