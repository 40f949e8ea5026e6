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

from trt_pipeline.artifacts import OutputLayout, read_export_manifest
from trt_pipeline.models.glm4v.contract import ExportContract
from trt_pipeline.errors import CheckpointError, ConfigError


@dataclass
class GenerateRequest:
    src: Path
    prompts: list[str]
    images: list[list[Path]]
    backend: str = "torch"
    precision: str = "fp32"
    max_new_tokens: int = 32
    #: longest prefill call; None = the export's ``sequence_length`` max (whole prompt for torch-export)
    chunk_size: int | None = None
    #: largest image in pixels (h x w), for every backend; None = the processor config's limit
    max_pixels: int | None = None
    #: check ONNX files and host tables against their manifests' sha256/size before loading them
    verify: bool = True
    #: ONNX Runtime session settings (threads, IO binding; runtime.onnxruntime_runner.OrtSettings); None: defaults
    ort: Any = None


@dataclass
class GenerateOutput:
    backend: str
    precision: str | None
    token_ids: list[list[int]]
    texts: list[str]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        fields = ("backend", "precision", "token_ids", "texts")
        return {**{name: getattr(self, name) for name in fields}, "seconds": round(self.seconds, 4)}


@dataclass(frozen=True)
class Source:
    """Where tokenizer/processor, weights and ONNX live for a SRC argument."""

    export_dir: Path | None
    checkpoint: Path | None
    #: the export's image limit (h x w), so images are resized as the export was shaped for
    max_pixels: int | None = None

    @property
    def hf_dir(self) -> Path:
        return OutputLayout(self.export_dir).hf_dir if self.export_dir else self.checkpoint  # type: ignore[return-value]


def resolve_source(src: Path | str) -> Source:
    src = Path(src)
    layout = OutputLayout(src)
    if layout.export_manifest.is_file():
        manifest = read_export_manifest(src)
        checkpoint = manifest.checkpoint_path
        return Source(src, checkpoint if checkpoint is not None and checkpoint.is_dir() else None, manifest.max_pixels)
    if (src / "config.json").is_file():
        return Source(None, src)
    raise CheckpointError(
        f"{src} is neither an export folder ({layout.export_manifest.name}) nor a checkpoint folder (config.json).",
        path=src,
        hint="pass the folder written by `autoglm-trt export` or a Hugging Face checkpoint folder.",
    )


def require_checkpoint(source: Source, backend: str) -> Path:
    """The checkpoint behind ``source``, or a ConfigError saying ``backend`` needs it (an export without one)."""
    if source.checkpoint is None:
        raise ConfigError(
            f"backend {backend!r} needs the source checkpoint, which is not available for {source.export_dir}.",
            path=source.export_dir,
            hint="pass the checkpoint folder itself as SRC.",
        )
    return source.checkpoint


def require_export(source: Source, backend: str) -> Path:
    """The export folder of ``source``, or a ConfigError saying ``backend`` runs exported models (a checkpoint)."""
    if source.export_dir is None:
        raise ConfigError(
            f"backend {backend!r} runs exported models, but {source.checkpoint} is a checkpoint.",
            path=source.checkpoint,
            hint=f"run `autoglm-trt export {source.checkpoint} --out DIR` and pass DIR.",
        )
    return source.export_dir


def run_transformers(
    source: Source, request: GenerateRequest, processing: Any, inputs: Any, model: Any = None
) -> list[list[int]]:
    """transformers' ``generate(do_sample=False)``; ``model`` reuses a loaded model (conversation turns)."""
    import torch

    model = model or _transformers_model(require_checkpoint(source, "torch"))
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


def _transformers_model(checkpoint: Path) -> Any:
    import torch
    from transformers import Glm4vForConditionalGeneration

    return Glm4vForConditionalGeneration.from_pretrained(str(checkpoint), dtype=torch.float32).eval()


def export_contract(out_dir: Path) -> ExportContract:
    """The shapes an export serves (read once per run): limits checked before running, and the chunk size."""
    return ExportContract.from_manifest(read_export_manifest(out_dir))


def export_chunk_size(out_dir: Path) -> int:
    """The longest prefill call an export serves (its ``sequence_length`` max): longer prompts go in chunks."""
    return read_export_manifest(out_dir).dims["sequence_length"].max


def _host_loop(
    assets: Any, runners: tuple[Any, Any], request: GenerateRequest, processing: Any, inputs: Any,
    chunk_size: int | None = None,
    contract: ExportContract | None = None,
) -> list[list[int]]:
    from trt_pipeline.models.glm4v.generation import greedy_generate

    result = greedy_generate(
        assets, runners[0], runners[1], inputs, request.max_new_tokens,
        eos_token_ids=processing.eos_token_ids, pad_token_id=processing.pad_token_id,
        chunk_size=request.chunk_size or chunk_size, contract=contract,
    )
    return result.token_lists()


def _torch_export_runners(source: Source, request: GenerateRequest) -> tuple[Any, tuple[Any, Any], ExportContract | None]:
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.models.glm4v.model import Glm4vExportModel
    from trt_pipeline.runtime.torch_runner import torch_component_runners

    model = Glm4vExportModel.from_pretrained(require_checkpoint(source, "torch-export"), dtype="float32")
    return HostAssets.from_model(model), torch_component_runners(model), None


def _ort_runners(source: Source, request: GenerateRequest) -> tuple[Any, tuple[Any, Any], ExportContract | None]:
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.runtime.onnxruntime_runner import ort_component_runners

    out_dir = require_export(source, "ort")
    runners = ort_component_runners(out_dir, request.precision, verify=request.verify, settings=request.ort)
    return HostAssets.from_export_dir(out_dir, verify=request.verify), runners, export_contract(out_dir)


def _trt_runners(source: Source, request: GenerateRequest) -> tuple[Any, tuple[Any, Any], ExportContract | None]:
    from trt_pipeline.models.glm4v.generation import HostAssets
    from trt_pipeline.runtime.tensorrt_runner import trt_component_runners  # type: ignore[attr-defined]

    out_dir = require_export(source, "trt")
    runners = trt_component_runners(out_dir, request.precision)
    return HostAssets.from_export_dir(out_dir, verify=request.verify), runners, export_contract(out_dir)


#: backends driven by the host stepper: (assets, (vision, decoder) runners, the export's contract)
HOST_BACKENDS: dict[str, Callable[[Source, GenerateRequest], tuple[Any, tuple[Any, Any], ExportContract | None]]] = {
    "torch-export": _torch_export_runners,
    "ort": _ort_runners,
    "trt": _trt_runners,
}


def _host_backend(name: str) -> Callable[[Source, GenerateRequest, Any, Any], list[list[int]]]:
    def run(source: Source, request: GenerateRequest, processing: Any, inputs: Any) -> list[list[int]]:
        assets, runners, contract = HOST_BACKENDS[name](source, request)  # contract: None for torch-export
        chunk = contract.max_chunk if contract is not None else None
        return _host_loop(assets, runners, request, processing, inputs, chunk, contract)

    return run


BACKENDS: dict[str, Callable[[Source, GenerateRequest, Any, Any], list[list[int]]]] = {
    "torch": run_transformers,
    **{name: _host_backend(name) for name in HOST_BACKENDS},
}


def generate(request: GenerateRequest) -> GenerateOutput:
    """Tokenize with the checkpoint's chat template/processor and generate greedily."""
    from trt_pipeline.models.glm4v.generation import strip_after_eos
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    if request.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {request.backend!r}; choose from {sorted(BACKENDS)}.")
    if request.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {request.max_new_tokens}.")
    source = resolve_source(request.src)
    processing = Glm4vProcessing(source.hf_dir, max_pixels=request.max_pixels or source.max_pixels)
    inputs = processing(request.prompts, request.images)
    start = time.perf_counter()
    ids = BACKENDS[request.backend](source, request, processing, inputs)
    seconds = time.perf_counter() - start
    ids = [strip_after_eos(row, processing.eos_token_ids) for row in ids]
    precision = request.precision if request.backend in ("ort", "trt") else None
    return GenerateOutput(request.backend, precision, ids, [processing.decode(r) for r in ids], seconds)


# --- multi-turn replay (``generate --conversation FILE.json``) ---------------------------------


@dataclass
class ConversationTurn:
    """The reply generated after one user message, and its prefill cost."""

    message_index: int
    token_ids: list[int]
    text: str
    prompt_tokens: int
    reused_tokens: int  # cached positions kept from the previous turns (0: prefilled from scratch)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "prefilled_tokens": self.prompt_tokens - self.reused_tokens}


@dataclass
class ConversationOutput:
    backend: str
    precision: str | None
    turns: list[ConversationTurn]
    seconds: float

    @property
    def prefill_tokens_saved(self) -> int:
        return sum(t.reused_tokens for t in self.turns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "turns": [t.to_dict() for t in self.turns],
            "prompt_tokens": sum(t.prompt_tokens for t in self.turns),
            "prefill_tokens_saved": self.prefill_tokens_saved,
            "seconds": round(self.seconds, 4),
        }


def generate_conversation(request: GenerateRequest, conversation: Path | str) -> ConversationOutput:
    """Replay an OpenAI-style conversation: a greedy reply after every user message.

    ``torch`` runs transformers on every full prompt (the reference); the stepper backends keep one
    KV cache and append each turn to it (:class:`~trt_pipeline.models.glm4v.replay.PromptCache`).
    Later turns see the conversation's recorded assistant messages, not the generated replies.
    """
    from trt_pipeline.models.glm4v.generation import strip_after_eos
    from trt_pipeline.models.glm4v.messages import load_conversation
    from trt_pipeline.models.glm4v.processing import Glm4vProcessing

    if request.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {request.backend!r}; choose from {sorted(BACKENDS)}.")
    parsed = load_conversation(conversation)
    turns = parsed.user_turns()
    if not turns:
        raise ConfigError(f"{conversation} has no user message to reply to.", path=conversation)
    source = resolve_source(request.src)
    processing = Glm4vProcessing(source.hf_dir, max_pixels=request.max_pixels or source.max_pixels)
    prompts = [parsed.prefix(index + 1) for index in turns]
    encoded = [processing.encode_messages(p.messages, p.images) for p in prompts]
    eos = processing.eos_token_ids
    start = time.perf_counter()
    if request.backend == "torch":
        model = _transformers_model(require_checkpoint(source, "torch"))
        rows = [(run_transformers(source, request, processing, inputs, model)[0], 0) for inputs in encoded]
    else:
        rows = _replay_on_cache(source, request, encoded, [p.image_keys for p in prompts], eos)
    seconds = time.perf_counter() - start
    out = []
    for index, inputs, (ids, reused) in zip(turns, encoded, rows):
        ids = strip_after_eos(ids, eos)
        out.append(ConversationTurn(index, ids, processing.decode(ids), int(inputs.input_ids.shape[1]), reused))
    precision = request.precision if request.backend in ("ort", "trt") else None
    return ConversationOutput(request.backend, precision, out, seconds)


def _replay_on_cache(
    source: Source, request: GenerateRequest, encoded: Sequence[Any], image_keys: Sequence[Sequence[str]],
    eos: Sequence[int],
) -> list[tuple[list[int], int]]:
    import contextlib

    from trt_pipeline.models.glm4v.replay import PromptCache

    assets, (vision, decoder), contract = HOST_BACKENDS[request.backend](source, request)
    chunk = contract.max_chunk if contract is not None else None
    rows = []
    with contextlib.ExitStack() as stack:
        for runner in (vision, decoder):
            stack.enter_context(runner)
        cache = PromptCache(assets, vision, decoder, chunk_size=request.chunk_size or chunk)
        for inputs, keys in zip(encoded, image_keys):
            result = cache.generate(inputs, keys, request.max_new_tokens, eos)
            rows.append((result.token_ids, result.reused_tokens))
    return rows
