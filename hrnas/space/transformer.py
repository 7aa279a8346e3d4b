"""The lightweight transformer of HR-NAS (spec §3).

A feature map is resized to a ``g``×``g`` grid, two standardised coordinate channels are appended, and a
1×1 projector with BatchNorm maps it to ``n`` *queries*: each projected channel is one token whose
``g·g``-dimensional vector is that channel's map. One post-norm encoder layer (self-attention + FFN)
and one decoder layer (learned queries cross-attend to the encoder memory; the residual adds the
memory, so every token keeps its own identity) transform the tokens, a 1×1 reverse projection with
BatchNorm maps the ``n`` token maps to the output channels, and the result is resized to the block's
output size. The γ of the projector's BatchNorm are the importance factors of the queries (§4.1).

Attention is written with explicit matrix products (single head, no bias) so that the analytic cost
(:func:`hrnas.space.cost.transformer_macs`) equals what ``FlopCounterMode`` counts, with or without
autograd (``torch.no_grad``, ``torch.inference_mode``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def coordinate_grid(grid: int) -> Tensor:
    """(1, 2, g, g) standardised column and row indices (mean 0, std 1 over the grid)."""
    idx = torch.arange(grid, dtype=torch.float32)
    std = idx.std(unbiased=False) if grid > 1 else torch.tensor(1.0)
    idx = (idx - idx.mean()) / std
    cols = idx.view(1, grid).expand(grid, grid)
    rows = idx.view(grid, 1).expand(grid, grid)
    return torch.stack([cols, rows]).unsqueeze(0).contiguous()


class Attention(nn.Module):
    """Single-head scaled dot-product attention with bias-free Q/K/V/O projections of width ``dim``."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self.drop = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, query: Tensor, memory: Tensor) -> Tensor:
        """query (B, n, d), memory (B, m, d) → (B, n, d)."""
        q = self.q(query) * self.scale
        k = self.k(memory)
        v = self.v(memory)
        weights = self.drop(torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1))
        return self.o(torch.bmm(weights, v))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, dim, bias=False), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(dim, dim, bias=False)
        )


class _PostNormLayer(nn.Module):
    """Attention and a feed-forward network, each followed by dropout, a residual and a LayerNorm; the
    encoder and the decoder differ only in what attends to what (their ``forward``)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = Attention(dim, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)


class EncoderLayer(_PostNormLayer):
    def forward(self, tokens: Tensor) -> Tensor:
        tokens = self.norm1(tokens + self.drop(self.attn(tokens, tokens)))
        return self.norm2(tokens + self.drop(self.ffn(tokens)))


class DecoderLayer(_PostNormLayer):
    def forward(self, queries: Tensor, memory: Tensor) -> Tensor:
        out = self.norm1(memory + self.drop(self.attn(queries, memory)))
        return self.norm2(out + self.drop(self.ffn(out)))


class LightTransformer(nn.Module):
    """x (B, C_in, H, W) → (B, C_out, *out_size); ``num_queries`` tokens on a ``grid``×``grid`` map.

    The returned tensor is the transformer's *contribution*; the owning block adds it to its output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_queries: int,
        grid: int = 8,
        dropout: float = 0.1,
        bn_momentum: float = 0.01,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {num_queries}")
        dim = grid * grid
        self.grid = grid
        self.num_queries = num_queries
        self.register_buffer("coords", coordinate_grid(grid), persistent=False)
        self.projector = nn.Conv2d(in_channels + 2, num_queries, 1, bias=False)
        self.input_norm = nn.BatchNorm2d(num_queries, eps=bn_eps, momentum=bn_momentum)
        self.encoder = EncoderLayer(dim, dropout)
        self.decoder = DecoderLayer(dim, dropout)
        self.query_embed = nn.Parameter(torch.empty(num_queries, dim))
        self.reverse = nn.Conv2d(num_queries, out_channels, 1, bias=False)
        self.reverse_norm = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        nn.init.xavier_uniform_(self.query_embed)

    def tokens(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W) → normalised projected tokens (B, n, g, g)."""
        pooled = F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        coords = self.coords.to(dtype=pooled.dtype).expand(x.shape[0], -1, -1, -1)
        return self.input_norm(self.projector(torch.cat([pooled, coords], dim=1)))

    def forward(self, x: Tensor, out_size: tuple[int, int] | torch.Size) -> Tensor:
        batch = x.shape[0]
        tokens = self.tokens(x).flatten(2)  # (B, n, g·g)
        memory = self.encoder(tokens)
        # Without autograd the queries are a view of the detached parameter: an expanded view of a parameter
        # that requires grad, fed to a module under no_grad / inference_mode, breaks torch's module tracker
        # (FlopCounterMode). A view rather than a copy keeps every kernel, and so every output bit, the same.
        embed = self.query_embed if torch.is_grad_enabled() else self.query_embed.detach()
        queries = embed.unsqueeze(0).expand(batch, -1, -1)
        decoded = self.decoder(queries, memory)
        maps = decoded.reshape(batch, self.num_queries, self.grid, self.grid)
        out = self.reverse_norm(self.reverse(maps))
        return F.interpolate(out, size=tuple(out_size), mode="bilinear", align_corners=False)
