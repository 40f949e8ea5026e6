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
from torch import nn

from trt_pipeline.models.glm4v.config import TextDims
from trt_pipeline.models.glm4v.layers import RMSNorm, activation, attention


def rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    """GLM's interleaved rotation: pairs (x0, x1) -> (-x1, x0)."""
    x1 = x[..., 0::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` channels of x [B, H, S, D]; cos/sin are [B, 1, S, rotary_dim]."""
    rotary_dim = cos.shape[-1]
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    x_rot = x_rot * cos + rotate_half_interleaved(x_rot) * sin
    return torch.cat([x_rot, x_pass], dim=-1)


def causal_padding_bias(attention_mask: torch.Tensor, query_length: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive bias [B, 1, S, T] from a [B, T] 0/1 mask; past length = T - S (shape-derived)."""
    total = attention_mask.shape[1]
    device = attention_mask.device
    key_index = torch.arange(total, device=device).unsqueeze(0)  # [1, T]
    query_index = torch.arange(query_length, device=device).unsqueeze(1) + (total - query_length)  # [S, 1]
    causal = key_index <= query_index  # [S, T]
    allowed = causal.unsqueeze(0) & attention_mask.bool().unsqueeze(1)  # [B, S, T]
    allowed = allowed | (key_index == query_index).unsqueeze(0)
    zero = torch.zeros((), dtype=dtype, device=device)
    # finfo(dtype).min like transformers' masks: float32's min would round to -inf in bf16/fp16
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)
    return torch.where(allowed, zero, neg).unsqueeze(1)


class TextAttention(nn.Module):
    def __init__(self, dims: TextDims) -> None:
        super().__init__()
        self.num_heads = dims.num_attention_heads
        self.num_kv_heads = dims.num_key_value_heads
        self.head_dim = dims.head_dim
        self.groups = self.num_heads // self.num_kv_heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(dims.hidden_size, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(dims.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(dims.hidden_size, self.num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, dims.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        bias: torch.Tensor,
        past_key: torch.Tensor,
        past_value: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_partial_rotary(q, cos, sin)
        k = apply_partial_rotary(k, cos, sin)
        key = torch.cat([past_key.to(k.dtype), k], dim=2)
        value = torch.cat([past_value.to(v.dtype), v], dim=2)
        out = attention(q, self._repeat_kv(key), self._repeat_kv(value), bias, self.scaling)
        out = out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)
        return self.o_proj(out), key, value

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        """GQA: [B, kv, T, D] -> [B, kv*groups, T, D] (expand+reshape, like transformers' repeat_kv)."""
        if self.groups == 1:
            return x
        b, kv, t, d = x.shape
        return x[:, :, None, :, :].expand(b, kv, self.groups, t, d).reshape(b, kv * self.groups, t, d)


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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn_out, key, value = self.self_attn(self.input_layernorm(x), cos, sin, bias, past_key, past_value)
        x = x + self.post_self_attn_layernorm(attn_out)
        x = x + self.post_mlp_layernorm(self.mlp(self.post_attention_layernorm(x)))
        return x, key, value


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
        bias = causal_padding_bias(attention_mask, x.shape[1], x.dtype)
        # the host computes the tables in fp32; transformers then casts them to the model dtype
        cos = rope_cos.unsqueeze(1).to(x.dtype)
        sin = rope_sin.unsqueeze(1).to(x.dtype)
        presents: list[torch.Tensor] = []
        for index, layer in enumerate(self.language_model.layers):
            x, key, value = layer(x, cos, sin, bias, past_key_values[2 * index], past_key_values[2 * index + 1])
            presents.extend((key, value))
        x = x.index_select(1, logits_positions)  # RMSNorm and the LM head are per-position
        logits = self.lm_head(self.language_model.norm(x))
        return (logits, *presents)
