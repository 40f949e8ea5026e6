"""Export-friendly GLM-4.1V vision tower.

transformers' ``Glm4vVisionModel`` derives position ids, cu_seqlens and the bicubic-resampled
position embeddings from ``grid_thw`` inside ``forward`` (``.tolist()``, Python loops, per-image
attention splits). Here all of that is computed on the host (:mod:`.host`) and passed in as
tensors, so the graph has one dynamic axis (``num_patches``) and no data-dependent control flow:

* ``rotary_cos``/``rotary_sin`` [N, head_dim]: the 2-D rotary tables,
* ``position_embeddings`` [N, hidden]: the learned table resampled to the image's grid.

**One image per call, full attention, no mask input.** transformers attends within each image
(``cu_seqlens``); several images in one call would need block-diagonal attention. With standard
ONNX ops (what TensorRT parses) a block-diagonal mask -- given as an input, or built in the graph
from per-image lengths or segment ids -- still computes all N x N scores and materialises an
N x N mask on the QK^T -> Softmax path that TensorRT fuses into one attention kernel; for the
images of one call that is sum_i n_i * N work where sum_i n_i^2 is needed. Running the encoder
once per image does the minimum work, keeps the graph MatMul -> Softmax -> MatMul with nothing in
between, and makes every input linear in the patches: for a 13,416-patch screenshot at the real
dims 159 MB of inputs instead of 879 MB, 720 MB of which was the dense bias
(``benchmarks/vision_inputs.py``). The phone agent sends one new screenshot per step, so the
extra calls cost nothing there; prompts with several images loop on the host
(:func:`.host.vision_feeds`: one feed per image, features concatenated in image order).

Conv3d patch embedding and the Conv2d downsample have kernel == stride, so they are written as
matmuls over flattened patches (same maths, friendlier to every backend).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trt_pipeline.models.glm4v import contrib_ops
from trt_pipeline.models.glm4v.config import VisionDims
from trt_pipeline.models.glm4v.decoder_ops import VISION_OPS
from trt_pipeline.models.glm4v.layers import RMSNorm, activation, attention


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class PatchEmbed(nn.Module):
    def __init__(self, dims: VisionDims) -> None:
        super().__init__()
        kernel = (dims.temporal_patch_size, dims.patch_size, dims.patch_size)
        self.proj = nn.Conv3d(dims.in_channels, dims.hidden_size, kernel_size=kernel, stride=kernel)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight.reshape(self.proj.weight.shape[0], -1)
        return F.linear(pixel_values.to(weight.dtype), weight, self.proj.bias)


class VisionMLP(nn.Module):
    def __init__(self, dims: VisionDims) -> None:
        super().__init__()
        # transformers' Glm4VisionMlp uses out_hidden_size as its intermediate size.
        self.gate_proj = nn.Linear(dims.hidden_size, dims.out_hidden_size, bias=False)
        self.up_proj = nn.Linear(dims.hidden_size, dims.out_hidden_size, bias=False)
        self.down_proj = nn.Linear(dims.out_hidden_size, dims.hidden_size, bias=False)
        self.act_fn = activation(dims.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class VisionAttention(nn.Module):
    def __init__(self, dims: VisionDims) -> None:
        super().__init__()
        self.num_heads = dims.num_heads
        self.head_dim = dims.head_dim
        self.scaling = self.head_dim**-0.5
        self.qkv = nn.Linear(dims.hidden_size, dims.hidden_size * 3, bias=False)
        self.proj = nn.Linear(dims.hidden_size, dims.hidden_size, bias=False)
        self.contrib = False  # set by VisionEncoder.use_ops: ONNX Runtime's MultiHeadAttention (flash attention on CPU)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        qkv = self.qkv(x).reshape(n, 3, self.num_heads, self.head_dim).permute(1, 0, 2, 3)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [N, H, D]
        dtype = q.dtype
        cos_f, sin_f = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
        q = (q.float() * cos_f + rotate_half(q.float()) * sin_f).to(dtype)
        k = (k.float() * cos_f + rotate_half(k.float()) * sin_f).to(dtype)
        if self.contrib:  # [1, N, H * D] in and out: no transposes, no N x N scores in memory
            q, k, v = (t.reshape(1, n, -1) for t in (q, k, v))
            out = contrib_ops.multi_head_attention(q, k, v, num_heads=self.num_heads, scale=self.scaling)
            return self.proj(out.reshape(n, -1))
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, H, N, D]
        out = attention(q, k, v, None, self.scaling)  # [1, H, N, D]: full attention within the image
        out = out.squeeze(0).transpose(0, 1).reshape(n, -1)
        return self.proj(out)


class VisionBlock(nn.Module):
    def __init__(self, dims: VisionDims) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dims.hidden_size, dims.rms_norm_eps)
        self.norm2 = RMSNorm(dims.hidden_size, dims.rms_norm_eps)
        self.attn = VisionAttention(dims)
        self.mlp = VisionMLP(dims)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    def __init__(self, dims: VisionDims) -> None:
        super().__init__()
        dim, context = dims.out_hidden_size, dims.intermediate_size
        self.proj = nn.Linear(dim, dim, bias=False)
        self.post_projection_norm = nn.LayerNorm(dim)
        self.gate_proj = nn.Linear(dim, context, bias=False)
        self.up_proj = nn.Linear(dim, context, bias=False)
        self.down_proj = nn.Linear(context, dim, bias=False)
        self.act1 = nn.GELU()
        self.act_fn = activation(dims.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.post_projection_norm(self.proj(x)))
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Downsample(nn.Module):
    """Conv2d(kernel=stride=merge) over each merge block, as one matmul.

    Holds the Conv2d's ``weight`` [out, hidden, m, m] and ``bias`` directly so the checkpoint's
    ``visual.downsample.{weight,bias}`` load unchanged.
    """

    def __init__(self, dims: VisionDims) -> None:
        super().__init__()
        m = dims.spatial_merge_size
        self.merge = m
        self.weight = nn.Parameter(torch.empty(dims.out_hidden_size, dims.hidden_size, m, m))
        self.bias = nn.Parameter(torch.empty(dims.out_hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, hidden = self.merge, x.shape[-1]
        blocks = x.reshape(-1, m, m, hidden).permute(0, 3, 1, 2).reshape(-1, hidden * m * m)
        return F.linear(blocks, self.weight.reshape(self.weight.shape[0], -1), self.bias)


class VisionEmbeddings(nn.Module):
    """The learned position table; resampled per image on the host (:func:`.host.vision_position_embeddings`)."""

    def __init__(self, dims: VisionDims) -> None:
        super().__init__()
        self.position_embedding = nn.Embedding(dims.position_grid**2, dims.hidden_size)


class VisionEncoder(nn.Module):
    """Patches of one image -> merged image features [N / merge^2, text_hidden] (full attention).

    Parameter names follow transformers' ``Glm4vVisionModel`` (``visual.*``) so checkpoints load
    unchanged. ``embeddings.position_embedding`` is held for the host helpers and is not part of
    the exported graph.
    """

    def __init__(self, dims: VisionDims) -> None:
        super().__init__()
        self.dims = dims
        self.embeddings = VisionEmbeddings(dims)
        self.patch_embed = PatchEmbed(dims)
        self.post_conv_layernorm = RMSNorm(dims.hidden_size, dims.rms_norm_eps)
        self.blocks = nn.ModuleList(VisionBlock(dims) for _ in range(dims.depth))
        self.post_layernorm = RMSNorm(dims.hidden_size, dims.rms_norm_eps)
        self.downsample = Downsample(dims)
        self.merger = PatchMerger(dims)
        self.ops = "portable"

    def use_ops(self, ops: str) -> VisionEncoder:
        """Trace as the ``ops`` flavour of :data:`~trt_pipeline.models.glm4v.decoder_ops.VISION_OPS` from now on
        (same weights, same numbers): ``onnxruntime`` spells each block's attention as ONNX Runtime's
        ``MultiHeadAttention``."""
        if ops not in VISION_OPS:
            raise ValueError(f"vision ops {ops!r}: choose one of {', '.join(VISION_OPS)}")
        self.ops = ops
        for block in self.blocks:
            block.attn.contrib = ops == "onnxruntime"
        return self

    def forward(
        self,
        pixel_values: torch.Tensor,
        rotary_cos: torch.Tensor,
        rotary_sin: torch.Tensor,
        position_embeddings: torch.Tensor,
    ) -> torch.Tensor:
        x = self.post_conv_layernorm(self.patch_embed(pixel_values))
        x = x + position_embeddings.to(x.dtype)
        for block in self.blocks:
            x = block(x, rotary_cos, rotary_sin)
        x = self.post_layernorm(x)
        return self.merger(self.downsample(x))
