"""The sequence-aware ranker in torch: item encoder, self-attention user encoder, cheap scoring.

Cost model (why it is shaped like this): the user side (self-attention over the last ``max_len``
interactions, the query and dense user features) is computed once per event; each candidate then
costs one dot product plus a linear head over three features, so 200 candidates cost about as
much as one more attention step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from app.core.ranking import TYPE_IDS

N_TYPES = len(TYPE_IDS) + 1  # 0 pads


@dataclass(frozen=True)
class ModelConfig:
    n_items: int
    n_buckets: int = 8192
    dim: int = 64
    max_len: int = 50
    max_query_terms: int = 8
    max_item_terms: int = 16
    heads: int = 2
    layers: int = 2
    ffn: int = 128
    dropout: float = 0.2
    user_features: int = 3
    candidate_features: int = 3

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


def masked_mean(emb: nn.Embedding, ids: Tensor) -> Tensor:
    """Mean of the embeddings of non-zero ids over the last axis (zeros pad)."""
    mask = (ids > 0).to(emb.weight.dtype).unsqueeze(-1)
    total: Tensor = (emb(ids) * mask).sum(dim=-2)
    return total / mask.sum(dim=-2).clamp(min=1.0)


class ItemEncoder(nn.Module):
    """Item vector = id embedding (0 = unknown item) + projected mean of its text-term embeddings.

    Items the model never saw (new catalog entries) get a vector from their text alone; training
    drops ids at random so that path is learned.
    """

    def __init__(self, cfg: ModelConfig, terms: nn.Embedding) -> None:
        super().__init__()
        self.ids = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)
        self.terms = terms
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.ids.weight, std=0.02)

    def forward(self, item_ids: Tensor, item_terms: Tensor) -> Tensor:
        vectors: Tensor = self.norm(
            self.ids(item_ids) + self.proj(masked_mean(self.terms, item_terms))
        )
        return vectors


class Block(nn.Module):
    """Pre-norm self-attention block written out by hand so ONNX export stays plain MatMuls."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.dim // cfg.heads
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn), nn.GELU(), nn.Linear(cfg.ffn, cfg.dim)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, bias: Tensor, last_only: bool = False) -> Tensor:
        """``bias`` is (batch, 1, queries, keys) additive attention bias.

        With ``last_only`` only the last position is computed (keys still span the sequence),
        which is all inference needs from the final block.
        """
        h = self.ln1(x)
        queries = h[:, -1:, :] if last_only else h
        k, v = self.kv(h).chunk(2, dim=-1)
        q = self._split(self.q(queries))
        att = (q @ self._split(k).transpose(-1, -2)) / math.sqrt(self.head_dim)
        att = torch.softmax(att + bias, dim=-1)
        mixed = (
            (self.drop(att) @ self._split(v))
            .transpose(1, 2)
            .reshape(queries.shape[0], queries.shape[1], -1)
        )
        x = (x[:, -1:, :] if last_only else x) + self.drop(self.out(mixed))
        result: Tensor = x + self.drop(self.ffn(self.ln2(x)))
        return result


class SequenceRanker(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.terms = nn.Embedding(cfg.n_buckets, cfg.dim, padding_idx=0)
        nn.init.normal_(self.terms.weight, std=0.02)
        self.items = ItemEncoder(cfg, self.terms)
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        self.types = nn.Embedding(N_TYPES, cfg.dim, padding_idx=0)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.final = nn.LayerNorm(cfg.dim)
        self.query = nn.Linear(cfg.dim, cfg.dim)
        self.user = nn.Linear(cfg.user_features, cfg.dim)
        self.head = nn.Linear(cfg.candidate_features, 1)
        self.drop = nn.Dropout(cfg.dropout)

    def _bias(self, mask: Tensor, causal: bool) -> Tensor:
        # -1e9, not -inf: a fully padded row then attends uniformly instead of producing NaN.
        key_pad = (1.0 - mask)[:, None, None, :] * -1e9
        if not causal:
            return key_pad
        n = mask.shape[1]
        future = torch.triu(torch.ones(n, n, device=mask.device), diagonal=1) * -1e9
        return key_pad + future[None, None, :, :]

    def encode(
        self, history: Tensor, mask: Tensor, types: Tensor, last_only: bool = False
    ) -> Tensor:
        """History vectors (batch, max_len, dim), right-aligned, to per-position user states.

        Returns (batch, max_len, dim), or (batch, 1, dim) for the last position with ``last_only``.
        """
        positions = torch.arange(history.shape[1], device=history.device)
        x = history + self.positions(positions)[None] + self.types(types)
        x = self.drop(x) * mask.unsqueeze(-1)
        for i, block in enumerate(self.blocks):
            final = i == len(self.blocks) - 1
            bias = self._bias(mask, causal=True)
            if last_only and final:
                bias = bias[:, :, -1:, :]
            x = block(x, bias, last_only=last_only and final)
        out: Tensor = self.final(x)
        return out

    def user_vector(self, states: Tensor, query_terms: Tensor, user_features: Tensor) -> Tensor:
        """Sequence state + query (mean of hashed term embeddings) + dense user features."""
        query = self.query(masked_mean(self.terms, query_terms))
        has_query = (query_terms > 0).any(dim=-1, keepdim=True).to(states.dtype)
        result: Tensor = states + query * has_query + self.user(user_features)
        return result

    def score(self, user: Tensor, candidates: Tensor, features: Tensor) -> Tensor:
        """(..., dim) users, (..., n, dim) candidates, (..., n, features) -> (..., n) scores."""
        dot = (candidates * user.unsqueeze(-2)).sum(dim=-1)
        result: Tensor = dot + self.head(features).squeeze(-1)
        return result


class ExportRanker(nn.Module):
    """The serving graph: one user vector per event, then scores for its candidates."""

    def __init__(self, model: SequenceRanker) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        history_vectors: Tensor,
        history_mask: Tensor,
        history_types: Tensor,
        query_terms: Tensor,
        user_features: Tensor,
        candidate_vectors: Tensor,
        candidate_features: Tensor,
    ) -> tuple[Tensor, Tensor]:
        states = self.model.encode(history_vectors, history_mask, history_types, last_only=True)
        user = self.model.user_vector(states[:, 0, :], query_terms, user_features)
        return self.model.score(user, candidate_vectors, candidate_features), user


class ExportItemEncoder(nn.Module):
    def __init__(self, model: SequenceRanker) -> None:
        super().__init__()
        self.items = model.items

    def forward(self, item_ids: Tensor, item_terms: Tensor) -> Tensor:
        result: Tensor = self.items(item_ids, item_terms)
        return result
