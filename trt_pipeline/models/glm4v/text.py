"""Export-friendly GLM-4.1V text decoder with an explicit KV cache.

Inputs are plain tensors (``inputs_embeds``, ``attention_mask``, host-computed M-RoPE
``rope_cos``/``rope_sin`` and per-layer past keys/values); outputs are logits and the present
keys/values. There is no Cache object and no Python branch on tensor values, so one ONNX graph
serves prefill (past length 0) and decode (sequence length 1).

The causal + padding mask is built inside the graph from shapes only: query ``i`` sits at
absolute index ``past + i`` and may attend key ``j`` when ``j <= past + i`` and
``attention_mask[b, j] == 1``. Every query may always attend to itself, so left-padding rows
never become fully masked (a fully masked row would give NaN in FP16 and poison the cache).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trt_pipeline.models.glm4v.config import TextDims
from trt_pipeline.models.glm4v import contrib_ops
from trt_pipeline.models.glm4v.decoder_ops import DECODER_OPS, KV_CACHES, kv_cache_refusal
from trt_pipeline.models.glm4v.layers import RMSNorm, activation


def rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    """GLM's interleaved rotation: pairs (x0, x1) -> (-x1, x0)."""
    x1 = x[..., 0::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` channels of x [B, H, S, D]; cos/sin are [B, 1, S, rotary_dim].

    The reference formulation (transformers' ``apply_multimodal_rotary_pos_emb``); the decoder
    runs the equivalent :func:`head_rotary_tables` + :func:`apply_head_rotary`.
    """
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    x_rot = x_rot * cos + rotate_half_interleaved(x_rot) * sin
    return torch.cat([x_rot, x_pass], dim=-1)


def head_rotary_tables(cos: torch.Tensor, sin: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step tables over the whole head: cos padded with 1, sin signed (-s, +s per pair) and padded with 0.

    Built once per forward from the host's tables (``[B, S, 1, rotary_dim]`` in the decoder), so
    that every layer's rotary is ``x * cos + swap_pairs(x) * sin`` (:func:`apply_head_rotary`):
    three element-wise ops and a pair swap over the whole head, no slicing into rotary/pass-through
    halves, no concatenation back, no negation per layer. The pass-through channels see ``x * 1 + y * 0``,
    which is exact. The sign pattern comes from the tables themselves (no constant tensor), so a
    weight-free (meta-device) trace has nothing to materialise.
    """
    pairs = sin.unflatten(-1, (-1, 2))
    signed = torch.stack((-pairs[..., 0], pairs[..., 1]), dim=-1).flatten(-2)
    extra = head_dim - cos.shape[-1]
    if extra:
        cos = F.pad(cos, (0, extra), value=1.0)
        signed = F.pad(signed, (0, extra), value=0.0)
    return cos, signed


def apply_head_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Interleaved partial rotary of x [..., D] with :func:`head_rotary_tables`' tables (broadcastable to x).

    ``swap_pairs`` turns (x0, x1) into (x1, x0) with one reversed slice on a trailing axis of 2;
    multiplied by the signed sin it gives GLM's (-x1, x0) rotation."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return x * cos + swapped * signed_sin


def fused_rotary_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``RotaryEmbedding``'s cos/sin caches ``[B, S, rotary_dim / 2]`` from the host's ``[B, S, rotary_dim]``.

    The host repeats every frequency twice for the interleaved pairs (:func:`host.text_rope`); the
    op takes each frequency once and pairs channels itself, so one strided slice per step serves
    every layer (the decoder's inputs stay the same for both flavours)."""
    return cos[..., 0::2], sin[..., 0::2]


def grouped_query_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, scaling: float
) -> torch.Tensor:
    """GQA without repeating K/V: query [B, H, S, D] against key/value [B, kv, T, D].

    Query heads ``kv * groups + g`` share KV head ``kv`` (transformers' ``repeat_kv`` order), so the
    query is viewed ``[B, kv, groups * S, D]``: every query row of a KV head's group is one more row
    of ONE matmul against that head's keys/values (``[B, kv, T, D]``, read in place: no K/V copy per
    query head). A broadcast ``[B, kv, groups, S, D] x [B, kv, 1, D, T]`` matmul instead runs one
    small GEMM per query head, each streaming the head's keys again: 1.13x slower decode steps on the
    small preset (ONNX Runtime CPU, 1 thread). Only the mask is added in the 5-D view
    ``[B, kv, groups, S, T]`` (``bias`` is ``[B, 1, 1, S, T]``: never repeated per query head, which at
    a 5k-token prefill over a 25k cache would be GBs); the views use -1 for T, so the graph needs no
    per-layer shape arithmetic for the key axis. The softmax runs in fp32 as transformers' eager path.
    Returns ``[B, H, S, D]``.
    """
    b, heads, s, d = query.shape
    kv = key.shape[1]
    groups = heads // kv
    scores = torch.matmul(query.reshape(b, kv, groups * s, d), key.transpose(2, 3)) * scaling
    scores = scores.view(b, kv, groups, s, -1) + bias
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights.view(b, kv, groups * s, -1), value).reshape(b, heads, s, d)


def inplace_kv_index(batch: int, past: torch.Tensor, query_length: int, width: int, device: torch.device) -> torch.Tensor:
    """``scatter`` index of the new rows of an ``inplace`` cache ``[B, T, width]``: rows ``past .. past + S - 1``.

    Made once per forward (``past`` from :func:`attended_end`, the same past length the causal bias
    uses; every row of a left-padded batch writes there) and shared by every layer: it traces to ONE
    index (Expand) and one ``ScatterElements`` per cache tensor, where ``index_put`` would broadcast
    its values again for every tensor (one more node each).
    """
    positions = torch.arange(query_length, device=device) + past
    return positions.view(1, query_length, 1).expand(batch, query_length, width)


def attended_end(attention_mask: torch.Tensor) -> torch.Tensor:
    """Rows up to and including the last position any row attends (``attention_mask`` 1): a 0-d int64.

    What lets an ``inplace`` cache be fed longer than ``past + S``: the rows after it are free (their
    mask is 0, and they lie after every query, so the causal bias hides them too), and a host that
    keeps its cache in a few fixed-size views binds them once instead of per step (see
    :class:`~trt_pipeline.models.glm4v.kv_arena.KvArena`). The new tokens are the last attended rows
    (a host always attends them), so for a cache fed exactly ``past + S`` long this is ``T``, as
    the shape-only graph had it.
    """
    index = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
    return (attention_mask.long() * index).amax(dim=(0, 1))


def shared_kv_lengths(end: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupQueryAttention's ``seqlens_k`` (int32 ``[B]``: the last attended row, :func:`attended_end` - 1, for
    every row) and ``total_sequence_length`` (int32 scalar: the fed rows ``T``, which the bias spans)."""
    batch, total = attention_mask.shape
    seqlens_k = (end - 1).to(torch.int32).reshape(1).expand(batch)
    return seqlens_k, torch.full((), total, dtype=torch.int32, device=attention_mask.device)


def causal_padding_bias(
    attention_mask: torch.Tensor, query_length: int, dtype: torch.dtype, past: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Additive bias [B, 1, S, T] from a [B, T] 0/1 mask; past length ``past`` (default ``T - S``, shape-derived)."""
    total = attention_mask.shape[1]
    device = attention_mask.device
    if past is None:
        past = total - query_length
    key_index = torch.arange(total, device=device).unsqueeze(0)  # [1, T]
    query_index = torch.arange(query_length, device=device).unsqueeze(1) + past  # [S, 1]
    causal = key_index <= query_index  # [S, T]
    allowed = causal.unsqueeze(0) & attention_mask.bool().unsqueeze(1)  # [B, S, T]
    allowed = allowed | (key_index == query_index).unsqueeze(0)
    zero = torch.zeros((), dtype=dtype, device=device)
    # finfo(dtype).min like transformers' masks: float32's min would round to -inf in bf16/fp16
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)
    return torch.where(allowed, zero, neg).unsqueeze(1)


def check_graph(ops: str, kv_cache: str, advice: str = "") -> None:
    """ValueError unless ``ops`` (:data:`DECODER_OPS`) can trace the ``kv_cache`` contract (:data:`KV_CACHES`)."""
    if ops not in DECODER_OPS:
        raise ValueError(f"decoder ops {ops!r}: choose one of {', '.join(DECODER_OPS)}")
    if kv_cache not in KV_CACHES:
        raise ValueError(f"KV cache {kv_cache!r}: choose one of {', '.join(KV_CACHES)}")
    why = kv_cache_refusal(ops, kv_cache)
    if why is not None:
        raise ValueError(f"the {ops} decoder ops cannot trace a {kv_cache} KV cache: {why}{advice}")


class TextAttention(nn.Module):
    def __init__(self, dims: TextDims) -> None:
        super().__init__()
        self.num_heads = dims.num_attention_heads
        self.num_kv_heads = dims.num_key_value_heads
        self.head_dim = dims.head_dim
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(dims.hidden_size, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(dims.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(dims.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, dims.hidden_size, bias=False)
        self.fused = False  # set by TextDecoder.use_ops: opset-23 Attention/RotaryEmbedding instead of spelled-out ops
        self.contrib = False  # set by TextDecoder.use_ops: the onnxruntime flavour's GroupQueryAttention

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor,
        past_key: torch.Tensor,
        past_value: torch.Tensor,
        kv_index: torch.Tensor | None = None,
        lengths: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, S, hidden]; cos/sin [B, S, 1, D] from :func:`head_rotary_tables`; bias [B, 1, 1, S, T].

        (Fused: cos/sin [B, S, rotary_dim / 2] from :func:`fused_rotary_tables`, bias [B, 1, S, T];
        with ``kv_index`` (:func:`inplace_kv_index`) the past is an ``inplace`` cache ``[B, T, kv * D]``;
        onnxruntime: ``lengths`` = GroupQueryAttention's ``seqlens_k`` and ``total_sequence_length``
        (:func:`shared_kv_lengths`), the past a ``shared`` cache ``[B, kv, T, D]``.)"""
        if self.fused:
            return self._fused(x, cos, sin, bias, past_key, past_value, kv_index, lengths)
        b, s, _ = x.shape
        heads = self.num_heads + self.num_kv_heads
        # query and key heads go through one rotary (same tables, [B, S, 1, D]) and one transpose
        qk = torch.cat([self.q_proj(x), self.k_proj(x)], dim=-1).view(b, s, heads, self.head_dim)
        q, k = apply_head_rotary(qk, cos, sin).transpose(1, 2).split([self.num_heads, self.num_kv_heads], dim=1)
        v = self.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        key = torch.cat([past_key.to(k.dtype), k], dim=2)
        value = torch.cat([past_value.to(v.dtype), v], dim=2)
        out = grouped_query_attention(q, key, value, bias, self.scaling)
        out = out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)
        return self.o_proj(out), key, value

    def _fused(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor,
        past_key: torch.Tensor, past_value: torch.Tensor, kv_index: torch.Tensor | None = None,
        lengths: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same attention as opset 23 ops: one ``RotaryEmbedding`` per projection, one ``Attention``.

        Q/K/V stay ``[B, S, heads * D]`` (the ops' 3-D form, so no transposes in the graph); the
        Attention op groups query heads per KV head itself and returns the present cache
        ``[B, kv, past + S, D]``; in bf16/fp16 exports ``softmax_precision`` 1 (float) keeps the
        softmax in fp32, as transformers' eager path does.
        """
        from torch.onnx import ops

        rotary_dim = 2 * cos.shape[-1]
        q = ops.rotary_embedding(self.q_proj(x), cos, sin, interleaved=True, num_heads=self.num_heads,
                                 rotary_embedding_dim=rotary_dim)
        k = ops.rotary_embedding(self.k_proj(x), cos, sin, interleaved=True, num_heads=self.num_kv_heads,
                                 rotary_embedding_dim=rotary_dim)
        # fp32 graphs leave softmax_precision out (the same precision, and ONNX Runtime's CUDA Attention
        # refuses the attribute); half graphs ask for a float softmax like transformers' eager path
        half = q.dtype != torch.float32
        if self.contrib:  # GroupQueryAttention writes the new rows into the shared cache and reads the attended ones
            seqlens_k, total = lengths  # type: ignore[misc]
            out, key, value = contrib_ops.group_query_attention(
                q, k, self.v_proj(x), past_key.to(q.dtype), past_value.to(q.dtype), bias, seqlens_k, total,
                num_heads=self.num_heads, kv_num_heads=self.num_kv_heads, scale=self.scaling)
            return self.o_proj(out), key, value
        if kv_index is not None:  # inplace cache: write the new rows, attend over the whole (sequence-major) cache
            key = past_key.to(q.dtype).scatter(1, kv_index, k)
            value = past_value.to(q.dtype).scatter(1, kv_index, self.v_proj(x))
            out = ops.attention(q, key, value, bias, q_num_heads=self.num_heads, kv_num_heads=self.num_kv_heads,
                                scale=self.scaling, softmax_precision=1 if half else None)[0]
            return self.o_proj(out), key, value
        out, key, value, _ = ops.attention(q, k, self.v_proj(x), bias, past_key.to(q.dtype), past_value.to(q.dtype),
                                           q_num_heads=self.num_heads, kv_num_heads=self.num_kv_heads,
                                           scale=self.scaling, softmax_precision=1 if half else None)
        return self.o_proj(out), key, value


class TextMLP(nn.Module):
    def __init__(self, dims: TextDims) -> None:
        super().__init__()
        self.intermediate_size = dims.intermediate_size
        self.gate_up_proj = nn.Linear(dims.hidden_size, 2 * dims.intermediate_size, bias=False)
        self.down_proj = nn.Linear(dims.intermediate_size, dims.hidden_size, bias=False)
        self.activation_fn = activation(dims.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        gate, up = gate_up[..., : self.intermediate_size], gate_up[..., self.intermediate_size :]
        return self.down_proj(up * self.activation_fn(gate))


class DecoderLayer(nn.Module):
    def __init__(self, dims: TextDims) -> None:
        super().__init__()
        eps = dims.rms_norm_eps
        self.self_attn = TextAttention(dims)
        self.mlp = TextMLP(dims)
        self.input_layernorm = RMSNorm(dims.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(dims.hidden_size, eps)
        self.post_self_attn_layernorm = RMSNorm(dims.hidden_size, eps)
        self.post_mlp_layernorm = RMSNorm(dims.hidden_size, eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor,
        past_key: torch.Tensor,
        past_value: torch.Tensor,
        kv_index: torch.Tensor | None = None,
        delta: torch.Tensor | None = None,
        lengths: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (residual stream, the MLP's output still to be added to it, present key, present value).

        The last residual add is left to the next layer's :meth:`RMSNorm.add_norm` (or the caller), so
        the onnxruntime flavour runs every add + RMSNorm pair as one ``SkipSimplifiedLayerNormalization``;
        the other flavours trace the same Add then norm as before. ``delta``: the previous layer's.
        """
        h, x = self.input_layernorm.add_norm(x, delta)
        attn_out, key, value = self.self_attn(h, cos, sin, bias, past_key, past_value, kv_index, lengths)
        h, x = self.post_attention_layernorm.add_norm(x, self.post_self_attn_layernorm(attn_out))
        return x, self.post_mlp_layernorm(self.mlp(h)), key, value


class TextModel(nn.Module):
    """Decoder layers + final norm (``language_model.*`` in the checkpoint)."""

    def __init__(self, dims: TextDims) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(dims.vocab_size, dims.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(dims) for _ in range(dims.num_hidden_layers))
        self.norm = RMSNorm(dims.hidden_size, dims.rms_norm_eps)


class TextDecoder(nn.Module):
    """inputs_embeds + mask + rope + logit positions + past KV -> logits at those positions + present KV.

    ``logits_positions`` (int64 ``[num_logits]``, indices into the current chunk, shared by every
    row of the left-padded batch) selects the positions the LM head is computed for: the host asks
    for ``[S - 1]`` when it only samples the next token (a 5k-token prefill then returns 600 KB of
    logits instead of 3 GB) and for ``arange(S)`` when validation compares every position. It is
    an index tensor consumed by a ``Gather``, not a count: TensorRT treats it as an ordinary
    execution tensor (no shape-tensor input that must live on the host and be pinned per profile,
    as a scalar ``logits_to_keep`` feeding a ``Slice`` would be), the output shape follows from
    its *shape* (the ``num_logits`` axis of the optimization profile) and any set of positions
    can be asked for, not only a suffix.

    ``forward`` takes the past keys/values as a flat list ``[k0, v0, k1, v1, ...]`` so that
    ``torch.onnx.export`` maps them one-to-one onto ``past_key_values.{i}.key/value`` inputs.
    The token embedding table stays on the host (looked up before the graph) so image
    features can be merged into the sequence without a gather over a 151k-row table on device.
    """

    def __init__(self, dims: TextDims, language_model: TextModel, lm_head: nn.Linear) -> None:
        super().__init__()
        self.dims = dims
        self.language_model = language_model
        self.lm_head = lm_head
        self.ops = "portable"
        self.kv_cache = "concat"

    def use_graph(self, ops: str, kv_cache: str = "concat") -> TextDecoder:
        """Trace as export.json's ``decoder_graph`` says: ``ops`` flavour and ``kv_cache`` contract."""
        check_graph(ops, kv_cache)
        self.kv_cache = kv_cache
        return self.use_ops(ops)

    def use_kv_cache(self, kind: str) -> TextDecoder:
        """Trace with the ``kind`` KV-cache contract of :data:`~trt_pipeline.models.glm4v.io_spec.KV_CACHES` (inplace: fused ops only)."""
        check_graph(self.ops, kind)
        self.kv_cache = kind
        return self

    def use_ops(self, ops: str) -> TextDecoder:
        """Trace as the ``ops`` flavour of :data:`DECODER_OPS` from now on (same weights, same numbers)."""
        check_graph(ops, self.kv_cache, " (use_graph(ops, kv_cache) sets both)")
        self.ops = ops
        for module in self.language_model.modules():  # every attention and RMSNorm of the text model
            if isinstance(module, (TextAttention, RMSNorm)):
                module.fused = ops in ("fused", "onnxruntime")  # onnxruntime: fused + contrib attention / norms
                module.contrib = ops == "onnxruntime"
        return self

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        rope_cos: torch.Tensor,
        rope_sin: torch.Tensor,
        logits_positions: torch.Tensor,
        *past_key_values: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        x = inputs_embeds
        # an inplace / shared cache may run past the attended rows (free rows: attended_end); concat's is exact
        end = attended_end(attention_mask) if self.kv_cache != "concat" else None
        past = end - x.shape[1] if end is not None else None
        bias = causal_padding_bias(attention_mask, x.shape[1], x.dtype, past)  # [B, 1, S, T]
        # the host computes the tables in fp32; transformers then casts them to the model dtype
        if self.ops != "portable":  # fused, onnxruntime: the opset-23 RotaryEmbedding tables
            cos, sin = fused_rotary_tables(rope_cos.to(x.dtype), rope_sin.to(x.dtype))
        else:
            bias = bias.unsqueeze(1)  # [B, 1, 1, S, T]: the grouped-query view's mask
            cos, sin = head_rotary_tables(rope_cos.unsqueeze(2).to(x.dtype), rope_sin.unsqueeze(2).to(x.dtype),
                                          self.dims.head_dim)  # [B, S, 1, D]: rotary runs before the head transpose
        kv_index = None
        if self.kv_cache == "inplace":
            width = self.dims.num_key_value_heads * self.dims.head_dim
            kv_index = inplace_kv_index(x.shape[0], past, x.shape[1], width, x.device)
        lengths = shared_kv_lengths(end, attention_mask) if self.kv_cache == "shared" else None
        presents: list[torch.Tensor] = []
        delta = None
        for index, layer in enumerate(self.language_model.layers):
            x, delta, key, value = layer(x, cos, sin, bias, past_key_values[2 * index], past_key_values[2 * index + 1],
                                         kv_index, delta, lengths)
            presents.extend((key, value))
        x = x + delta
        x = x.index_select(1, logits_positions)  # RMSNorm and the LM head are per-position
        logits = self.lm_head(self.language_model.norm(x))
        return (logits, *presents)
