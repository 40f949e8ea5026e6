"""Greedy generation over any pair of component runners, and the host tables it needs.

The vision encoder and the decoder are Polygraphy ``BaseRunner``s (torch, ONNX Runtime or
TensorRT); the host work (embeddings, image merge, M-RoPE, mask, KV cache) is the
:class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper`'s. This module only picks tokens: it
mirrors transformers' ``generate(do_sample=False)``: finished rows keep receiving
``pad_token_id``, and generation stops when every row has produced an EOS token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trt_pipeline.artifacts.layout import OutputLayout
from trt_pipeline.artifacts.manifests import read_export_manifest
from trt_pipeline.models.glm4v import stepper
from trt_pipeline.models.glm4v.config import Glm4vDims, load_dims
from trt_pipeline.models.glm4v.processing import MultimodalInputs
from trt_pipeline.models.glm4v.contract import ExportContract
from trt_pipeline.models.glm4v.stepper import DecoderStepper, FeedBuilder


@dataclass
class HostAssets:
    """What the host needs besides the runners: dims and the two tables looked up on the host."""

    dims: Glm4vDims
    embed_table: torch.Tensor  # [vocab, hidden]
    vision_position_table: torch.Tensor  # [grid*grid, vision_hidden]

    @classmethod
    def from_model(cls, model: Any) -> HostAssets:
        return cls(model.dims, model.embed_table.detach(), model.vision_position_table.detach())

    @classmethod
    def from_export_dir(cls, out_dir: Path | str, *, verify: bool = True) -> HostAssets:
        """Load the tables written by ``autoglm-trt export`` (``embeddings/*.safetensors``).

        With ``verify`` each table is checked against the sha256/size recorded in export.json first.
        """
        from safetensors.torch import load_file

        layout = OutputLayout(out_dir)
        if verify:
            manifest = read_export_manifest(layout.root)
            for path in (layout.embed_tokens, layout.vision_pos_embed):
                manifest.verify_file(path)
        dims = load_dims(layout.hf_dir)
        embed = load_file(str(layout.embed_tokens))["weight"]
        table = load_file(str(layout.vision_pos_embed))["weight"]
        return cls(dims, embed, table)


@dataclass
class GenerationResult:
    tokens: torch.Tensor  # [B, new_tokens]
    step_logits: list[torch.Tensor] = field(default_factory=list)  # each [B, vocab] (last position)
    image_features: torch.Tensor | None = None

    def token_lists(self) -> list[list[int]]:
        return [row.tolist() for row in self.tokens]


def encode_images(assets: HostAssets, vision_runner: Any, inputs: MultimodalInputs) -> torch.Tensor | None:
    """Run the vision runner once per image of the batch; features concatenated in image order."""
    if inputs.pixel_values is None:
        return None
    return stepper.encode_images(FeedBuilder.for_runner(assets, vision_runner), vision_runner, inputs)


def prefill_embeddings(
    assets: HostAssets, inputs: MultimodalInputs, image_features: torch.Tensor | None
) -> torch.Tensor:
    """Token embeddings with image features written into the placeholder positions (row-major)."""
    return FeedBuilder(assets).prompt_embeddings(inputs, image_features)


@contextlib.contextmanager
def activated(*runners: Any) -> Iterator[None]:
    """Activate the runners that are not active yet (and only those) for the block: a caller that
    keeps its runners active across many requests (serve, compare) pays no session set-up per call."""
    with contextlib.ExitStack() as stack:
        for runner in runners:
            if runner is not None and not runner.is_active:
                stack.enter_context(runner)
        yield


def check_against_contract(contract: ExportContract | None, assets: HostAssets, inputs: MultimodalInputs,
                           new_tokens: int) -> None:
    """Refuse, before any runner works, a request the export's limits cannot serve: batch, prompt +
    new tokens, and each image's token count (ShapeError naming the limit)."""
    if contract is None:
        return
    contract.check_request(int(inputs.input_ids.shape[0]), int(inputs.input_ids.shape[1]), new_tokens)
    if inputs.image_grid_thw is not None:
        merge2 = assets.dims.vision.spatial_merge_size ** 2
        contract.check_image_tokens([int(g.prod()) // merge2 for g in inputs.image_grid_thw])


def greedy_generate(
    assets: HostAssets,
    vision_runner: Any,
    decoder_runner: Any,
    inputs: MultimodalInputs,
    max_new_tokens: int,
    eos_token_ids: Sequence[int] = (),
    pad_token_id: int = 0,
    collect_logits: bool = False,
    chunk_size: int | None = None,
    contract: ExportContract | None = None,
) -> GenerationResult:
    """Greedy decoding of ``max_new_tokens`` tokens (fewer if every row hits EOS).

    The prompt is prefilled in chunks of at most ``chunk_size`` tokens (None: one call). With a
    ``contract`` (the export's limits) a request the artifact cannot serve is refused up front,
    before the vision encoder or decoder runs.
    """
    batch = inputs.input_ids.shape[0]
    check_against_contract(contract, assets, inputs, max_new_tokens)
    with activated(vision_runner, decoder_runner):
        image_features = encode_images(assets, vision_runner, inputs)
        decoder = DecoderStepper(assets, decoder_runner, chunk_size=chunk_size, contract=contract)
        step = decoder.prefill_prompt(inputs, image_features)
        finished = torch.zeros(batch, dtype=torch.bool)
        eos = torch.tensor(list(eos_token_ids), dtype=torch.long)
        tokens: list[torch.Tensor] = []
        step_logits: list[torch.Tensor] = []
        for index in range(max_new_tokens):
            logits = step.last_logits
            if collect_logits:
                step_logits.append(logits)
            token = logits.argmax(dim=-1)
            token = torch.where(finished, torch.full_like(token, pad_token_id), token)
            tokens.append(token)
            if len(eos):
                finished |= torch.isin(token, eos)
            if bool(finished.all()) or index + 1 == max_new_tokens:
                break
            step = decoder.decode(token)
    return GenerationResult(torch.stack(tokens, dim=1), step_logits, image_features)


def strip_after_eos(ids: Sequence[int], eos: Sequence[int]) -> list[int]:
    """Cut a row after its first EOS (what follows is padding for finished rows), keeping the EOS."""
    out = []
    for token in ids:
        out.append(int(token))
        if token in eos:
            break
    return out


def teacher_forced_tokens(
    assets: HostAssets,
    vision_runner: Any,
    decoder_runner: Any,
    inputs: MultimodalInputs,
    reference: Sequence[int],
    chunk_size: int | None = None,
    contract: ExportContract | None = None,
) -> list[int]:
    """The decoder's argmax at each step of ``reference`` given the prompt and the reference's prefix.

    One prefill of prompt + ``reference[:-1]`` (a batch of one) with logits at the positions that
    predict each reference token: ``out[i]`` is what the decoder picks after ``reference[:i]``.
    Unlike greedy generation an early flip does not change the later inputs, so the share of
    ``out[i] == reference[i]`` measures each step's quality on its own (teacher forcing).
    """
    if inputs.input_ids.shape[0] != 1:
        raise ValueError(f"teacher forcing takes one prompt at a time, got a batch of {inputs.input_ids.shape[0]}")
    if not reference:
        return []
    forced = torch.tensor([list(reference[:-1])], dtype=torch.long)
    ones = torch.ones_like(forced)
    extended = MultimodalInputs(torch.cat([inputs.input_ids, forced], 1), torch.cat([inputs.attention_mask, ones], 1),
                                torch.cat([inputs.mm_token_type_ids, torch.zeros_like(forced)], 1),
                                inputs.pixel_values, inputs.image_grid_thw)
    prompt = inputs.input_ids.shape[1]
    check_against_contract(contract, assets, inputs, len(reference))
    with activated(vision_runner, decoder_runner):
        image_features = encode_images(assets, vision_runner, inputs)
        decoder = DecoderStepper(assets, decoder_runner, chunk_size=chunk_size, contract=contract)
        step = decoder.prefill_prompt(extended, image_features, logits=range(prompt - 1, prompt - 1 + len(reference)))
    return step.logits[0].argmax(dim=-1).tolist()
