"""Building blocks shared by the vision tower and the text decoder (names mirror transformers)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 like ``Glm4vRMSNorm`` (keeps FP16 graphs stable).

    Spelled ``x / sqrt(mean(x^2) + eps) * weight`` (Pow, ReduceMean, Add, Sqrt, Div, Mul in ONNX),
    the pattern ONNX Runtime's ``SimplifiedLayerNormFusion`` turns into one
    ``SimplifiedLayerNormalization`` kernel; transformers' ``x * rsqrt(...)`` exports as
    Sqrt + Reciprocal + Mul, which it does not fuse. Every TensorRT version parses these ops
    (opset 23 ``RMSNormalization`` needs TensorRT >= 10.15, not JetPack 6's 10.3). Exports in fp16 /
    bf16 (``--dtype``) keep the ``rsqrt`` spelling (see ``forward``); fp16 made from the fp32 export
    by AutoCast carries the fusable form.
    """

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps
        self.fused = False  # the decoder's ``fused`` ops flavour: one opset-23 RMSNormalization node
        self.contrib = False  # the ``onnxruntime`` flavour: add_norm is one SkipSimplifiedLayerNormalization

    def add_norm(self, x: torch.Tensor, delta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(norm(x + delta), x + delta)``: a residual add and this norm (``delta`` None: no add).

        The ``onnxruntime`` flavour traces the pair as one ``SkipSimplifiedLayerNormalization``; the
        others as the ``Add`` and the norm they always had.
        """
        if delta is None:
            return self(x), x
        if self.contrib:
            from trt_pipeline.models.glm4v.contrib_ops import skip_rms_norm

            return skip_rms_norm(delta, x, self.weight, self.variance_epsilon)
        x = x + delta
        return self(x), x

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        if self.fused:  # exported as RMSNormalization (stash type fp32); half inputs normalised in fp32 first
            shape = (hidden_states.shape[-1],)
            if input_dtype == torch.float32:
                return F.rms_norm(hidden_states, shape, self.weight, self.variance_epsilon)
            normed = F.rms_norm(hidden_states.to(torch.float32), shape, None, self.variance_epsilon)
            return self.weight * normed.to(input_dtype)
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        if input_dtype == torch.float32:
            hidden_states = hidden_states / torch.sqrt(variance + self.variance_epsilon)
        else:
            # fp16/bf16 exports keep transformers' spelling: wrapped in Casts, the fusable form was
            # fused by ONNX Runtime in the exported graph but not in its onnxsim'd twin (or the other
            # way round), which moved the fp16 logits by an ulp (2.4e-4) and failed the simplify check
            hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def activation(name: str) -> nn.Module:
    """The activations GLM-4.1V configs use, by transformers' ACT2FN name."""
    table: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}
    if name not in table:
        raise ValueError(f"unsupported activation {name!r}; supported: {sorted(table)}")
    return table[name]()


def attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """Eager attention with an optional additive bias, softmax in fp32 (as transformers' eager path).

    Shapes: query [B, H, Sq, D], key/value [B, H, Sk, D], bias broadcastable to [B, H, Sq, Sk]
    (None: full attention, as the vision encoder's one image per call).
    Written with plain matmul/softmax so ONNX export yields MatMul/Softmax that TensorRT fuses.
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if bias is not None:
        scores = scores + bias
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, value)
