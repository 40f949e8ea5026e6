"""``autoglm-trt generate``: greedy generation with one of several backends.

Backends (a registry, so TensorRT plugs in without touching the others):

* ``torch``: transformers' ``Glm4vForConditionalGeneration.generate(do_sample=False)``, the reference;
* ``torch-export``: our export-friendly torch modules driven by the host loop;
* ``ort``: ONNX Runtime sessions of ``OUT/onnx/PRECISION`` driven by the same host loop;
* ``trt``: TensorRT engines of ``OUT/engines`` (GPU hosts only).

``SRC`` is either an export folder (has ``export.json``; its ``hf/`` holds tokenizer and
processor configs and the manifest names the source checkpoint) or a checkpoint folder (torch
backends only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_pipeline.errors import ConfigError, PipelineError


@dataclass
class GenerateRequest:
    src: Path
    prompts: list[str]
    images: list[list[Path]]
    backend: str = "torch"
    precision: str = "fp32"
    max_new_tokens: int = 32


@dataclass
class GenerateOutput:
    backend: str
    precision: str | None
    token_ids: list[list[int]]
    texts: list[str]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "token_ids": self.token_ids,
            "texts": self.texts,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class Source:
    """Where tokenizer/processor, weights and ONNX live for a SRC argument."""

    export_dir: Path | None
    checkpoint: Path | None

    @property
    def hf_dir(self) -> Path:
        return self.export_dir / "hf" if self.export_dir else self.checkpoint  # type: ignore[operator,return-value]


def resolve_source(src: Path | str) -> Source:
    src = Path(src)
    if (src / "export.json").is_file():
        from trt_pipeline.export.exporter import read_export_manifest

        checkpoint = Path(read_export_manifest(src)["checkpoint"]["path"])
        return Source(src, checkpoint if checkpoint.is_dir() else None)
    if (src / "config.json").is_file():
        return Source(None, src)
    raise PipelineError(
        f"{src} is neither an export folder (export.json) nor a checkpoint folder (config.json).",
        path=src,
        hint="pass the folder written by `autoglm-trt export` or a Hugging Face checkpoint folder.",
    )


def _need_checkpoint(source: Source, backend: str) -> Path:
    if source.checkpoint is None:
        raise PipelineError(
            f"backend {backend!r} needs the source checkpoint, which is not available for {source.export_dir}.",
            path=source.export_dir,
            hint="pass the checkpoint folder itself as SRC.",
        )
    return source.checkpoint


def _need_export(source: Source, backend: str) -> Path:
    if source.export_dir is None:
        raise PipelineError(
            f"backend {backend!r} runs exported models, but {source.checkpoint} is a checkpoint.",
            path=source.checkpoint,
            hint=f"run `autoglm-trt export {source.checkpoint} --out DIR` and pass DIR.",
        )
    return source.export_dir


def run_transformers(source: Source, request: GenerateRequest, processing: Any, inputs: Any) -> list[list[int]]:
    import torch
    from transformers import Glm4vForConditionalGeneration

    checkpoint = _need_checkpoint(source, "torch")
    model = Glm4vForConditionalGeneration.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(
            **inputs.hf_kwargs(),
            max_new_tokens=request.max_new_tokens,
            do_sample=False,
            eos_token_id=processing.eos_token_ids or None,
            pad_token_id=processing.pad_token_id,
        )
    new = out[:, inputs.input_ids.shape[1]:]
    return [row.tolist() for row in new]


def _host_loop(assets: Any, runners: tuple[Any, Any], request: GenerateRequest, processing: Any, inputs: Any) -> list[list[int]]:
    from trt_pipeline.models.glm4v.generation import greedy_generate

    result = greedy_generate(
        assets, runners[0], runners[1], inputs, request.max_new_tokens,
        eos_token_ids=processing.eos_token_ids, pad_token_id=processing.pad_token_id,
    )
    return result.token_lists()


def run_torch_export(source: Source, request: GenerateRequest, processing: Any, inputs: Any) -> list[list[int]]:
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.models.glm4v.model import Glm4vExportModel
    from trt_pipeline.runtime.torch_runner import torch_component_runners

    model = Glm4vExportModel.from_pretrained(_need_checkpoint(source, "torch-export"), dtype="float32")
    return _host_loop(HostAssets.from_model(model), torch_component_runners(model), request, processing, inputs)


def run_onnxruntime(source: Source, request: GenerateRequest, processing: Any, inputs: Any) -> list[list[int]]:
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.runtime.onnxruntime_runner import ort_component_runners

    out_dir = _need_export(source, "ort")
    runners = ort_component_runners(out_dir, request.precision)
    return _host_loop(HostAssets.from_export_dir(out_dir), runners, request, processing, inputs)


def run_tensorrt(source: Source, request: GenerateRequest, processing: Any, inputs: Any) -> list[list[int]]:
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.runtime.tensorrt_runner import trt_component_runners  # type: ignore[attr-defined]

    out_dir = _need_export(source, "trt")
    runners = trt_component_runners(out_dir, request.precision)
    return _host_loop(HostAssets.from_export_dir(out_dir), runners, request, processing, inputs)


BACKENDS: dict[str, Callable[[Source, GenerateRequest, Any, Any], list[list[int]]]] = {
    "torch": run_transformers,
    "torch-export": run_torch_export,
    "ort": run_onnxruntime,
    "trt": run_tensorrt,
}


def generate(request: GenerateRequest) -> GenerateOutput:
    """Tokenize with the checkpoint's chat template/processor and generate greedily."""
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    if request.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {request.backend!r}; choose from {sorted(BACKENDS)}.")
    if request.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {request.max_new_tokens}.")
    source = resolve_source(request.src)
    processing = Glm4vProcessing(source.hf_dir)
    inputs = processing(request.prompts, request.images)
    start = time.perf_counter()
    ids = BACKENDS[request.backend](source, request, processing, inputs)
    seconds = time.perf_counter() - start
    ids = [_strip_after_eos(row, processing.eos_token_ids) for row in ids]
    precision = request.precision if request.backend in ("ort", "trt") else None
    return GenerateOutput(request.backend, precision, ids, [processing.decode(r) for r in ids], seconds)


def _strip_after_eos(ids: Sequence[int], eos: Sequence[int]) -> list[int]:
    """Cut a row after its first EOS (the rest is padding for finished rows)."""
    out = []
    for token in ids:
        out.append(int(token))
        if token in eos:
            break
    return out
