"""Benchmark backends: a registry, not an if/elif chain.

Every backend answers the same three questions for the decoder (and one for the vision encoder):

* ``prefill_fn(length)``: a zero-argument callable running one prefill of ``length`` prompt tokens
  (empty KV cache);
* ``decode_fn(context)``: fill the KV cache to ``context`` tokens first, then return a callable running
  one decode step (1 new token attending to ``context`` cached ones) and an ``after`` hook that puts
  the cache back to ``context`` so every timed step sees exactly that context;
* ``image_fn(num_patches)``: one vision-encoder pass over an image of ``num_patches`` patches.

Backends (names as on the command line):

``torch``
    transformers eager ``Glm4vForConditionalGeneration`` (fp32) with its own ``DynamicCache``:
    prefill = one forward over the prompt with ``use_cache=True`` and ``logits_to_keep=1`` (the LM
    head on the last position, as the exported decoder is fed), decode = one forward of one token with
    ``past_key_values``.
``torch-export``
    our export-friendly torch modules (exactly what gets exported), fed like the ONNX graphs.
``ort-<precision>``
    ONNX Runtime CPU sessions of ``OUT/onnx/<precision>/{decoder,vision_encoder}.onnx``.
``trt-<precision>``
    TensorRT engines ``OUT/engines/*.<precision>.engine`` (GPU hosts only; skipped elsewhere).

For the exported backends the timed call includes the host work of a real generation step (the
:class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper`'s embedding-row lookup, M-RoPE cos/sin
tables and attention mask; for images the vision rotary / position-table resampling / attention
bias), because transformers does the same inside its forward. Prefill asks for last-position logits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trt_pipeline.artifacts import OutputLayout, read_export_manifest
from trt_pipeline.errors import ConfigError
from trt_pipeline.precisions import PRECISIONS as REGISTERED_PRECISIONS

StepFn = Callable[[], Any]


def pin_threads(threads: int) -> None:
    """Pin torch to ``threads`` intra-op threads and 1 inter-op thread (ONNX Runtime: per session)."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already started in this process; intra-op pinning still applies
        pass


@dataclass
class BenchSetup:
    """What every backend needs: the export folder, its dims and ranges, threads and a seed."""

    out_dir: Path
    threads: int
    batch_size: int = 1
    seed: int = 0
    inter_op_threads: int | None = 1
    io_binding: bool = True
    #: Whether the backends load the vision encoder. A run that measures no image case leaves it unloaded: the
    #: 9B's fp32 vision encoder is a 3.6 GB session, which a decode benchmark's peak RSS would otherwise count.
    vision: bool = True

    def __post_init__(self) -> None:
        from trt_pipeline.models.glm4v.config import load_dims

        self.out_dir = Path(self.out_dir)
        self.layout = OutputLayout(self.out_dir)
        self.manifest = read_export_manifest(self.out_dir)
        self.ranges = self.manifest.ranges
        self.dims = load_dims(self.layout.hf_dir)

    @property
    def checkpoint(self) -> Path:
        return self.manifest.checkpoint_path or self.layout.hf_dir

    def token_ids(self, length: int, salt: int = 0) -> np.ndarray:
        """Random text token ids (below the image special tokens), shape [batch, length]."""
        rng = np.random.default_rng(self.seed + 7919 * salt + length)
        high = min(self.dims.text.vocab_size, self.dims.image_start_token_id)
        return rng.integers(0, high, size=(self.batch_size, length), dtype=np.int64)

    def image(self, num_patches: int) -> tuple[np.ndarray, Any]:
        """Random pixel patches and a one-image grid [[1, h, w]] with h*w == num_patches."""
        import torch

        from trt_pipeline.export.validate import image_grids

        merge = self.dims.vision.spatial_merge_size
        grid = torch.tensor(image_grids(num_patches, merge, split=False))
        rng = np.random.default_rng(self.seed + num_patches)
        pixels = rng.standard_normal((num_patches, self.dims.vision.patch_dim)).astype(np.float32)
        return pixels, grid


class Backend:
    """Base class; subclasses fill ``load`` and the three ``*_fn`` methods."""

    family: str = ""

    def __init__(self, name: str, setup: BenchSetup, precision: str | None = None) -> None:
        self.name = name
        self.setup = setup
        self.precision = precision
        self.weight_bytes = 0
        self.kv_dtype_bytes = 4
        #: the decoder's KV-cache layout, and how a decode step updated it (``bench.roofline.KV_UPDATES``)
        self.kv_cache = "concat"
        self.kv_update = "copy"
        self.notes: list[str] = []

    @classmethod
    def unavailable(cls, name: str, setup: BenchSetup, precision: str | None) -> str | None:
        """Why this backend cannot run here (None: it can). Cheap: no model is loaded."""
        return None

    def load(self) -> None:
        raise NotImplementedError

    def prefill_fn(self, length: int) -> StepFn:
        raise NotImplementedError

    def decode_fn(self, context: int) -> tuple[StepFn, StepFn | None]:
        raise NotImplementedError

    def image_fn(self, num_patches: int) -> StepFn | None:
        return None

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# transformers eager (the PyTorch reference)
# --------------------------------------------------------------------------------------------


class TransformersBackend(Backend):
    family = "torch"

    @classmethod
    def unavailable(cls, name: str, setup: BenchSetup, precision: str | None) -> str | None:
        if not (setup.checkpoint / "config.json").is_file():
            return f"the source checkpoint {setup.checkpoint} named in {setup.manifest.path} is not available"
        return None

    def load(self) -> None:
        import torch
        from transformers import Glm4vForConditionalGeneration
        from transformers.utils import logging as hf_logging

        from trt_pipeline.bench.roofline import torch_decoder_weight_bytes

        pin_threads(self.setup.threads)
        hf_logging.disable_progress_bar()
        self.torch = torch
        self.model = Glm4vForConditionalGeneration.from_pretrained(str(self.setup.checkpoint), dtype=torch.float32).eval()
        self.weight_bytes = torch_decoder_weight_bytes(self.model.named_parameters(remove_duplicate=False))

    def _forward(self, ids: Any, cache: Any = None) -> Any:
        with self.torch.inference_mode():
            return self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)

    def prefill_fn(self, length: int) -> StepFn:
        ids = self.torch.from_numpy(self.setup.token_ids(length))
        return lambda: self._forward(ids)

    def decode_fn(self, context: int) -> tuple[StepFn, StepFn | None]:
        ids = self.torch.from_numpy(self.setup.token_ids(context, salt=1))
        cache = self._forward(ids).past_key_values
        token = self.torch.from_numpy(self.setup.token_ids(1, salt=2))
        return (lambda: self._forward(token, cache)), (lambda: cache.crop(context - cache.get_seq_length()))

    def image_fn(self, num_patches: int) -> StepFn | None:
        pixels, grid = self.setup.image(num_patches)
        pixels_t = self.torch.from_numpy(pixels)

        def run() -> Any:
            with self.torch.inference_mode():
                return self.model.model.get_image_features(pixels_t, grid, return_dict=True)

        return run

    def close(self) -> None:
        self.model = None


# --------------------------------------------------------------------------------------------
# Exported decoder/vision graphs, fed by the host (torch-export, ort, trt)
# --------------------------------------------------------------------------------------------


class HostFedBackend(Backend):
    """Host feeding through one :class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper` over a
    (vision, decoder) pair of active Polygraphy runners (torch-export, ONNX Runtime, TensorRT)."""

    vision: Any
    decoder: Any

    def _host(self) -> None:
        from trt_pipeline.models.glm4v.generation import HostAssets

        self.assets = HostAssets.from_export_dir(self.setup.out_dir)

    def _activate(self, vision: Any, decoder: Any) -> None:
        """Activate the runners and make the stepper (chunks of the exported ``sequence_length`` max)."""
        from trt_pipeline.models.glm4v.contract import ExportContract
        from trt_pipeline.models.glm4v.stepper import DecoderStepper, FeedBuilder
        from trt_pipeline.runtime.host_threads import single_thread_host_torch

        if self.family in ("ort", "trt"):  # the model runs outside torch: host ops on one thread, as `serve`
            single_thread_host_torch()

        if vision is not None and not self.setup.vision:
            vision = None  # never activated: no session or engine is loaded for it
            self.notes.append("vision encoder not loaded: no image case is measured")
        self.vision, self.decoder = vision, decoder
        for runner in (vision, decoder):
            if runner is not None:
                runner.activate()
        chunk = self.setup.ranges["sequence_length"].max
        # the export's contract, as `serve` and `generate` step it (an inplace cache fed in blocks where it can be)
        contract = ExportContract.from_manifest(self.setup.manifest)
        self.stepper = DecoderStepper(self.assets, decoder, chunk_size=chunk, check_inputs=False, contract=contract)
        self.kv_cache = self.stepper.builder.kv_layout.kind
        arena = self.stepper.arena
        if arena is not None and arena.block is not None:
            kept = "one kept binding per block (KeptDecode)" if self.stepper.kept is not None else "bound per step"
            fed = (f"in blocks of {arena.block} rows" if arena.layout.sequence_major
                   else "whole (shared [1, kv, capacity, D] buffers; GroupQueryAttention reads the attended rows)")
            self.notes.append(f"kv cache fed {fed}; batch-of-one decode: {kept}")
        self.vision_builder = FeedBuilder.for_runner(self.assets, vision) if vision is not None else None

    def _ids(self, length: int, salt: int = 0) -> Any:
        import torch

        return torch.from_numpy(self.setup.token_ids(length, salt=salt))

    def prefill_fn(self, length: int) -> StepFn:
        ids = self._ids(length)

        def run() -> Any:
            self.stepper.reset(self.setup.batch_size)
            return self.stepper.prefill_tokens(ids, chunk_size=length)

        return run

    def decode_fn(self, context: int) -> tuple[StepFn, StepFn | None]:
        """Fill the cache (prefill chunks within the exported range), then time one decode step on it."""
        self.stepper.reset(self.setup.batch_size)
        self.stepper.prefill_tokens(self._ids(context, salt=1))
        filled = self.stepper.save()
        token = self._ids(1, salt=2).view(-1)
        self.kv_update = cache_update(self.stepper.decode(token))  # the step's output is dropped before the load
        self.stepper.load(filled)
        return (lambda: self.stepper.decode(token)), (lambda: self.stepper.load(filled))

    def image_fn(self, num_patches: int) -> StepFn | None:
        if self.vision is None:
            return None
        import torch

        pixels, grid = self.setup.image(num_patches)
        pixels_t = torch.from_numpy(pixels)
        return lambda: self.vision.infer(self.vision_builder.vision_feed(pixels_t, grid), check_inputs=False)

    def close(self) -> None:
        for runner in (self.vision, self.decoder):
            if runner is not None and runner.is_active:
                runner.deactivate()


def cache_update(step: Any) -> str:
    """``in place`` when every ``present.*`` of a decode step is memory of its fed ``past_key_values.*``
    (an ``--kv-cache inplace`` export on a runner that binds them), else ``copy``."""
    presents = [name for name in step.outputs if name.startswith("present.")]
    aliased = presents and all(np.shares_memory(np.asarray(step.outputs[name]),
                                                np.asarray(step.feed[name.replace("present.", "past_key_values.", 1)]))
                               for name in presents)
    return "in place" if aliased else "copy"


class TorchExportBackend(HostFedBackend):
    family = "torch-export"

    unavailable = TransformersBackend.unavailable

    def load(self) -> None:
        from trt_pipeline.bench.roofline import torch_decoder_weight_bytes
        from trt_pipeline.models.glm4v.model import Glm4vExportModel
        from trt_pipeline.runtime.torch_runner import torch_component_runners

        pin_threads(self.setup.threads)
        self._host()
        self.model = Glm4vExportModel.from_pretrained(self.setup.checkpoint, dtype="float32")
        manifest = self.setup.manifest  # the modules of the flavour that was exported
        self.model.decoder.use_graph(manifest.decoder_ops, manifest.kv_cache)
        self.weight_bytes = torch_decoder_weight_bytes(self.model.named_parameters(remove_duplicate=False))
        self._activate(*torch_component_runners(self.model))


class OrtBackend(HostFedBackend):
    family = "ort"

    @classmethod
    def unavailable(cls, name: str, setup: BenchSetup, precision: str | None) -> str | None:
        path = setup.layout.onnx_path(str(precision), "decoder")
        if not path.is_file():
            producer = "autoglm-trt export" if precision == "fp32" else f"the {precision} precision stage"
            return f"{path} not found (run {producer} first)"
        return None

    def ort_settings(self) -> Any:
        """The session settings every ORT backend of this run uses (recorded in bench.json)."""
        from trt_pipeline.runtime.onnxruntime_runner import OrtSettings

        return OrtSettings(intra_op_threads=self.setup.threads, inter_op_threads=self.setup.inter_op_threads,
                           io_binding=self.setup.io_binding)

    def load(self) -> None:
        from trt_pipeline.bench.roofline import onnx_weight_bytes
        from trt_pipeline.models.glm4v.stepper import runner_inputs
        from trt_pipeline.runtime.onnxruntime_runner import onnx_path, ort_runner

        self._host()
        settings = self.ort_settings()
        self.notes.append(f"onnxruntime settings: {settings.to_dict()}")
        path = onnx_path(self.setup.out_dir, str(self.precision), "decoder")
        decoder = ort_runner(path, name=f"{self.name}:decoder", settings=settings)
        self.weight_bytes = onnx_weight_bytes(path)
        vision = self.setup.layout.onnx_path(str(self.precision), "vision_encoder")
        vision_runner = None
        if vision.is_file():
            vision_runner = ort_runner(onnx_path(self.setup.out_dir, str(self.precision), "vision_encoder"),
                                       name=f"{self.name}:vision", settings=settings)
        self._activate(vision_runner, decoder)
        self.kv_dtype_bytes = runner_inputs(decoder)["past_key_values.0.key"].itemsize


class TensorRTBackend(HostFedBackend):
    family = "trt"

    @classmethod
    def unavailable(cls, name: str, setup: BenchSetup, precision: str | None) -> str | None:
        try:
            from trt_pipeline.engine.tensorrt_import import require_tensorrt
        except ImportError as error:
            return f"the TensorRT engine package is not available ({error})"
        from trt_pipeline.errors import TensorRTUnavailableError

        try:
            require_tensorrt()
        except TensorRTUnavailableError as error:
            return f"TensorRT/GPU not available: {error.message}"
        engine = setup.layout.engine_path("decoder", str(precision))
        if not engine.is_file():
            return f"{engine} not found (run the build stage on this GPU first)"
        return None

    def load(self) -> None:
        from trt_pipeline.runtime.tensorrt_runner import trt_component_runners

        self._host()
        self._activate(*trt_component_runners(self.setup.out_dir, str(self.precision)))
        from trt_pipeline.bench.roofline import onnx_weight_bytes

        onnx = self.setup.layout.onnx_path(str(self.precision), "decoder")
        self.weight_bytes = onnx_weight_bytes(onnx) if onnx.is_file() else 0


#: backend family -> class. ``ort`` and ``trt`` take a precision suffix (``ort-fp16``).
BACKENDS: dict[str, type[Backend]] = {
    "torch": TransformersBackend,
    "torch-export": TorchExportBackend,
    "ort": OrtBackend,
    "trt": TensorRTBackend,
}
PRECISION_FAMILIES = ("ort", "trt")
PRECISIONS = REGISTERED_PRECISIONS


def parse_backend(name: str) -> tuple[type[Backend], str | None]:
    """``"ort-fp16"`` -> (OrtBackend, "fp16"); ``"torch"`` -> (TransformersBackend, None)."""
    if name in BACKENDS and name not in PRECISION_FAMILIES:
        return BACKENDS[name], None
    family, _, precision = name.rpartition("-")
    if family in PRECISION_FAMILIES and precision in PRECISIONS:
        return BACKENDS[family], precision
    valid = ["torch", "torch-export"] + [f"{f}-{p}" for f in PRECISION_FAMILIES for p in PRECISIONS]
    raise ConfigError(f"unknown bench backend {name!r}; choose from {', '.join(valid)}.")


def make_backend(name: str, setup: BenchSetup) -> Backend:
    cls, precision = parse_backend(name)
    return cls(name, setup, precision)


def default_threads() -> int:
    """Every core this process may run on (the affinity mask when the OS exposes it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return os.cpu_count() or 1


__all__ = [
    "BACKENDS",
    "Backend",
    "BenchSetup",
    "default_threads",
    "make_backend",
    "parse_backend",
    "pin_threads",
]
