"""Helpers of the stepper tests: an export's fp32 decoder on ONNX Runtime, its contract, greedy decoding."""

from __future__ import annotations

from pathlib import Path

import torch

from trt_pipeline.artifacts import read_export_manifest
from trt_pipeline.models.glm4v.contract import ExportContract
from trt_pipeline.models.glm4v.stepper import DecoderStepper
from trt_pipeline.runtime.onnxruntime_runner import OrtSettings, onnx_path, ort_runner


def decoder_runner(export_dir: Path, io_binding: bool = True):
    """The export's fp32 decoder on ONNX Runtime, one thread (IO-bound unless ``io_binding`` is False)."""
    return ort_runner(onnx_path(export_dir, "fp32", "decoder"), settings=OrtSettings(intra_op_threads=1, io_binding=io_binding))


def contract_of(export_dir: Path) -> ExportContract:
    return ExportContract.from_manifest(read_export_manifest(export_dir))


def greedy(stepper: DecoderStepper, prompt: torch.Tensor, steps: int, chunk_size: int | None = None):
    """Logits [1, 1 + steps, vocab] of the prompt's last position and each decode step; the tokens."""
    logits = [stepper.prefill_tokens(prompt, chunk_size=chunk_size).logits]
    tokens = []
    for _ in range(steps):
        token = logits[-1][:, -1].argmax(-1)
        tokens.append(int(token))
        logits.append(stepper.decode(token).logits)
    return torch.cat(logits, dim=1), tokens
