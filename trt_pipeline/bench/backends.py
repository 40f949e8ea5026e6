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
    prefill = one forward over the prompt with ``use_cache=True`` (logits for every position, as the
    ONNX decoder computes), decode = one forward of one token with ``past_key_values``.
``torch-export``
    our export-friendly torch modules (exactly what gets exported), fed like the ONNX graphs.
``ort-<precision>``
    ONNX Runtime CPU sessions of ``OUT/onnx/<precision>/{decoder,vision_encoder}.onnx``.
``trt-<precision>``
    TensorRT engines ``OUT/engines/*.<precision>.engine`` (GPU hosts only; skipped elsewhere).

For the exported backends the timed call includes the host work of a real generation step: the
embedding-row lookup, the M-RoPE cos/sin tables and the attention mask (and for images the vision
rotary / position-table resampling / attention bias), because transformers does the same inside
its forward.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trt_pipeline.errors import ConfigError

StepFn = Callable[[], Any]

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(double)": np.float64}


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

    def __post_init__(self) -> None:
        from trt_pipeline.export.dims import dims_from_json
        from trt_pipeline.export.exporter import read_export_manifest
        from trt_pipeline.models.glm4v.config import load_dims

        self.out_dir = Path(self.out_dir)
        self.manifest = read_export_manifest(self.out_dir)
        self.ranges = dims_from_json(self.manifest["dims"])
        self.dims = load_dims(self.out_dir / "hf")

    @property
    def checkpoint(self) -> Path:
        return Path(self.manifest["checkpoint"]["path"])

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
            return f"the source checkpoint {setup.checkpoint} named in export.json is not available"
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
            return self.model(input_ids=ids, past_key_values=cache, use_cache=True)

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
    """Shared host feeding: embeddings, M-RoPE tables, mask and a KV cache handed back step by step."""

    input_dtypes: dict[str, Any]

    def _host(self) -> None:
        from trt_pipeline.models.glm4v.generation import HostAssets
        from trt_pipeline.models.glm4v.io_spec import past_names, present_names

        self.assets = HostAssets.from_export_dir(self.setup.out_dir)
        self.embed = self.assets.embed_table.float().numpy()
        layers = self.setup.dims.text.num_hidden_layers
        self.past_names, self.present_names = past_names(layers), present_names(layers)

    def _dtype(self, name: str) -> Any:
        return self.input_dtypes.get(name, np.float32)

    def feed(self, ids: np.ndarray, past: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        import torch

        from trt_pipeline.models.glm4v import host

        text = self.setup.dims.text
        batch, seq = ids.shape
        past_len = 0 if past is None else next(iter(past.values())).shape[2]
        positions = torch.arange(past_len, past_len + seq).view(1, 1, -1).expand(3, batch, -1)
        cos, sin = host.text_rope(text, positions)
        feed = {
            "inputs_embeds": self.embed[ids].astype(self._dtype("inputs_embeds"), copy=False),
            "attention_mask": np.ones((batch, past_len + seq), dtype=np.int64),
            "rope_cos": cos.numpy().astype(self._dtype("rope_cos"), copy=False),
            "rope_sin": sin.numpy().astype(self._dtype("rope_sin"), copy=False),
        }
        if past is None:
            shape = (batch, text.num_key_value_heads, 0, text.head_dim)
            past = {name: np.zeros(shape, dtype=self._dtype(name)) for name in self.past_names}
        feed.update(past)
        return feed

    def run_decoder(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def run_vision(self, feed: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError

    def prefill_fn(self, length: int) -> StepFn:
        ids = self.setup.token_ids(length)
        return lambda: self.run_decoder(self.feed(ids, None))

    def fill_cache(self, context: int) -> dict[str, np.ndarray]:
        """Run prefill chunks (each within the exported sequence_length range) up to ``context`` tokens."""
        ids = self.setup.token_ids(context, salt=1)
        chunk = self.setup.ranges["sequence_length"].max
        past = None
        for start in range(0, context, chunk):
            out = self.run_decoder(self.feed(ids[:, start:start + chunk], past))
            past = {p: np.asarray(out[q]) for p, q in zip(self.past_names, self.present_names)}
        assert past is not None
        return past

    def decode_fn(self, context: int) -> tuple[StepFn, StepFn | None]:
        past = self.fill_cache(context)
        token = self.setup.token_ids(1, salt=2)
        return (lambda: self.run_decoder(self.feed(token, past))), None

    def image_fn(self, num_patches: int) -> StepFn | None:
        from trt_pipeline.models.glm4v import host

        pixels, grid = self.setup.image(num_patches)
        table = self.assets.vision_position_table.float()

        def run() -> Any:
            feeds = host.vision_inputs(self.setup.dims.vision, table, grid)
            feed = {"pixel_values": pixels, **{k: v.float().numpy() for k, v in feeds.items()}}
            return self.run_vision(feed)

        return run


class RunnerPairBackend(HostFedBackend):
    """Host feeding over a (vision, decoder) pair of active Polygraphy runners (torch-export, TensorRT)."""

    vision: Any
    decoder: Any

    def run_decoder(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.decoder.infer(feed, check_inputs=False)

    def run_vision(self, feed: dict[str, np.ndarray]) -> Any:
        return self.vision.infer(feed, check_inputs=False)

    def close(self) -> None:
        for runner in (self.vision, self.decoder):
            if runner.is_active:
                runner.deactivate()


class TorchExportBackend(RunnerPairBackend):
    family = "torch-export"

    unavailable = TransformersBackend.unavailable

    def load(self) -> None:
        from trt_pipeline.bench.roofline import torch_decoder_weight_bytes
        from trt_pipeline.models.glm4v.model import Glm4vExportModel
        from trt_pipeline.runtime.torch_runner import torch_component_runners

        pin_threads(self.setup.threads)
        self._host()
        self.input_dtypes = {}
        self.model = Glm4vExportModel.from_pretrained(self.setup.checkpoint, dtype="float32")
        self.weight_bytes = torch_decoder_weight_bytes(self.model.named_parameters(remove_duplicate=False))
        self.vision, self.decoder = torch_component_runners(self.model)
        self.vision.activate()
        self.decoder.activate()


class OrtBackend(HostFedBackend):
    family = "ort"

    @classmethod
    def unavailable(cls, name: str, setup: BenchSetup, precision: str | None) -> str | None:
        path = setup.out_dir / "onnx" / str(precision) / "decoder.onnx"
        if not path.is_file():
            producer = "autoglm-trt export" if precision == "fp32" else f"the {precision} precision stage"
            return f"{path} not found (run {producer} first)"
        return None

    def _session(self, component: str) -> Any:
        import onnxruntime as ort

        from trt_pipeline.runtime.onnxruntime_runner import onnx_path

        path = onnx_path(self.setup.out_dir, str(self.precision), component)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = self.setup.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:
            from trt_pipeline.errors import OnnxModelError

            raise OnnxModelError(f"ONNX Runtime cannot load {path}: {str(error).splitlines()[0]}", path=path) from None

    def load(self) -> None:
        from trt_pipeline.bench.roofline import onnx_weight_bytes
        from trt_pipeline.runtime.onnxruntime_runner import onnx_path

        self._host()
        self.session = self._session("decoder")
        self.input_dtypes = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.weight_bytes = onnx_weight_bytes(onnx_path(self.setup.out_dir, str(self.precision), "decoder"))
        self.kv_dtype_bytes = np.dtype(self._dtype(self.past_names[0])).itemsize
        vision = self.setup.out_dir / "onnx" / str(self.precision) / "vision_encoder.onnx"
        self.vision_session = self._session("vision_encoder") if vision.is_file() else None
        if self.vision_session is not None:
            self.vision_dtypes = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in self.vision_session.get_inputs()}

    def run_decoder(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))

    def run_vision(self, feed: dict[str, np.ndarray]) -> Any:
        feed = {k: v.astype(self.vision_dtypes.get(k, np.float32), copy=False) for k, v in feed.items()}
        return self.vision_session.run(None, feed)

    def image_fn(self, num_patches: int) -> StepFn | None:
        return super().image_fn(num_patches) if self.vision_session is not None else None

    def close(self) -> None:
        self.session = self.vision_session = None


class TensorRTBackend(RunnerPairBackend):
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
        engine = setup.out_dir / "engines" / f"decoder.{precision}.engine"
        if not engine.is_file():
            return f"{engine} not found (run the build stage on this GPU first)"
        return None

    def load(self) -> None:
        from trt_pipeline.runtime.tensorrt_runner import trt_component_runners

        self._host()
        self.input_dtypes = {}
        self.vision, self.decoder = trt_component_runners(self.setup.out_dir, str(self.precision))
        self.decoder.activate()
        self.vision.activate()
        from trt_pipeline.bench.roofline import onnx_weight_bytes

        onnx = self.setup.out_dir / "onnx" / str(self.precision) / "decoder.onnx"
        self.weight_bytes = onnx_weight_bytes(onnx) if onnx.is_file() else 0


#: backend family -> class. ``ort`` and ``trt`` take a precision suffix (``ort-fp16``).
BACKENDS: dict[str, type[Backend]] = {
    "torch": TransformersBackend,
    "torch-export": TorchExportBackend,
    "ort": OrtBackend,
    "trt": TensorRTBackend,
}
PRECISION_FAMILIES = ("ort", "trt")
PRECISIONS = ("fp32", "fp16", "int8")


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
