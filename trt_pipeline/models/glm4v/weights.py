"""Safetensors weight discovery, validation and zero-copy loading for HF checkpoints.

The real checkpoint is ~20 GB of bf16 in sharded safetensors. We never hold two copies:
``safetensors.safe_open(...).get_tensor`` returns tensors backed by a memory map of the file, and
they are assigned straight into a model built on the ``meta`` device. A dtype conversion (e.g.
bf16 checkpoint, fp32 export) copies one tensor at a time.

Before any tensor is read every file's header is read with ``safetensors.safe_open`` (which checks
the header against the file size: a truncated download is named, not a cryptic deserialisation
error), and the tensor names and shapes are checked against what the model expects (missing /
mis-shaped tensors are named with their file). Headers only: ``info`` reads a 20 GB checkpoint
in milliseconds, without torch.

Pickle weights (``pytorch_model.bin``) are never loaded: unpickling runs arbitrary code. A
checkpoint that has only those is refused with the command that converts it to safetensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trt_pipeline.errors import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    import torch

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# Checkpoint key prefixes -> our module names. transformers 5 writes `model.visual.*`,
# `model.language_model.*` and `lm_head.*`; older Qwen2-VL-style exports wrote `visual.*` and
# `model.*` for the text model.
_PREFIX_RULES: tuple[tuple[str, str], ...] = (
    ("model.visual.", "visual."),
    ("model.language_model.", "language_model."),
    ("lm_head.", "lm_head."),
    ("visual.", "visual."),
    ("model.", "language_model."),
)

#: safetensors dtype -> bytes per element
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

# tensor-name prefix -> component of the model, for per-component counts (transformers 5 layout,
# then the pre-4.52 layout)
_COMPONENT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.language_model.embed_tokens.", "text_embed_tokens"),
    ("model.language_model.layers.", "text_layers"),
    ("model.language_model.norm.", "text_norm"),
    ("model.embed_tokens.", "text_embed_tokens"),
    ("model.layers.", "text_layers"),
    ("model.norm.", "text_norm"),
    ("lm_head.", "lm_head"),
    ("model.visual.", "vision"),
    ("visual.", "vision"),
)
PICKLE_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json", "*.pt", "*.pth", "*.ckpt")


@dataclass(frozen=True)
class TensorEntry:
    """Where a tensor lives and what its header says."""

    file: Path
    checkpoint_name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES.get(self.dtype, 0)

    @property
    def component(self) -> str:
        """``text_layers``, ``vision``, ``lm_head``, ... (``other`` for names of no known part)."""
        for prefix, component in _COMPONENT_PREFIXES:
            if self.checkpoint_name.startswith(prefix):
                return component
        return "other"


def normalize_name(checkpoint_name: str) -> str:
    """Map a checkpoint tensor name onto the export-friendly model's parameter name."""
    for prefix, replacement in _PREFIX_RULES:
        if checkpoint_name.startswith(prefix):
            return replacement + checkpoint_name[len(prefix) :]
    return checkpoint_name


def read_header(file: Path) -> dict[str, Any]:
    """One safetensors file's header: tensor name -> ``{"dtype", "shape"}``, plus ``__metadata__``
    when the file has any. No tensor data is read.

    Raises CheckpointError naming the file when it is truncated, empty or corrupt (safetensors
    checks that the header covers the file exactly).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy") as handle:
            header: dict[str, Any] = {}
            metadata = handle.metadata()
            if metadata is not None:
                header["__metadata__"] = dict(metadata)
            for name in handle.keys():
                tensor = handle.get_slice(name)
                header[name] = {"dtype": tensor.get_dtype(), "shape": list(tensor.get_shape())}
    except (SafetensorError, OSError) as error:
        size = file.stat().st_size if file.is_file() else 0
        reason = str(error)
        if "not fully covered" in reason or "too small" in reason:
            message = f"{file} is truncated: {size} bytes on disk, not what its safetensors header declares ({reason})."
        else:
            message = f"{file} is corrupt: {size} bytes on disk, its safetensors header cannot be read ({reason})."
        raise CheckpointError(
            message, path=file, hint="the download or copy was interrupted, or the file was damaged; fetch this file again."
        ) from None
    return header


def _pickle_only_error(checkpoint: Path, pickles: list[Path]) -> CheckpointError:
    names = ", ".join(p.name for p in pickles[:3])
    convert = (
        "python -c \"from transformers import Glm4vForConditionalGeneration as M; "
        f"M.from_pretrained('{checkpoint}').save_pretrained('{checkpoint}-safetensors')\""
    )
    return CheckpointError(
        f"{checkpoint} holds only PyTorch pickle weights ({names}), no *.safetensors: autoglm-trt never "
        "unpickles a checkpoint (loading a pickle can run arbitrary code).",
        path=checkpoint,
        hint=f"if you trust its source, convert it once to safetensors: {convert} "
        "(or use the Hugging Face `safetensors/convert` space), then pass the new folder.",
    )


def find_weight_files(checkpoint: Path) -> list[Path]:
    """The safetensors files of a checkpoint (via the index when sharded); ``[]`` for config-only.

    Raises CheckpointError for an invalid index, a shard the index names but that is missing, or
    a checkpoint whose weights exist only as pickles.
    """
    index = checkpoint / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = {str(name) for name in weight_map.values()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise CheckpointError(
                f"{index} is not a valid safetensors index (needs a `weight_map`).",
                path=index,
                hint="re-download the index file.",
            ) from None
        files = sorted(checkpoint / name for name in names)
        for file in files:
            if not file.is_file():
                raise CheckpointError(
                    f"{file} is listed in {index.name} but missing.",
                    path=file,
                    hint="download every shard named in the index.",
                )
        return files
    single = checkpoint / SINGLE_FILE
    files = [single] if single.is_file() else sorted(checkpoint.glob("*.safetensors"))
    if not files:
        pickles = sorted({p for pattern in PICKLE_PATTERNS for p in checkpoint.glob(pattern)})
        if pickles:
            raise _pickle_only_error(checkpoint, pickles)
    return files


def weight_files(checkpoint: Path) -> list[Path]:
    """Like :func:`find_weight_files`, but a checkpoint without weights is an error."""
    files = find_weight_files(checkpoint)
    if not files:
        raise CheckpointError(
            f"no *.safetensors weights in {checkpoint}.",
            path=checkpoint,
            hint="a checkpoint needs model.safetensors or model.safetensors.index.json + shards "
            "(config-only checkpoints work for `info` only).",
        )
    return files


def scan_files(files: Iterable[Path]) -> dict[str, TensorEntry]:
    """Every tensor of the given safetensors files, keyed by our parameter name."""
    entries: dict[str, TensorEntry] = {}
    for file in files:
        for name, info in read_header(file).items():
            if name == "__metadata__":
                continue
            entries[normalize_name(name)] = TensorEntry(
                file=file, checkpoint_name=name, dtype=info["dtype"], shape=tuple(info["shape"])
            )
    return entries


def scan_checkpoint(checkpoint: Path | str) -> dict[str, TensorEntry]:
    """Every tensor of a checkpoint, keyed by our parameter name, with file/dtype/shape."""
    return scan_files(weight_files(Path(checkpoint)))


def check_expected(
    entries: Mapping[str, TensorEntry],
    expected: Mapping[str, tuple[int, ...]],
    checkpoint: Path,
    optional: Iterable[str] = (),
) -> None:
    """Refuse missing or mis-shaped tensors, naming each tensor and its file."""
    optional = set(optional)
    missing = [name for name in expected if name not in entries and name not in optional]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(
            f"{checkpoint}: missing tensor(s) {shown}.",
            path=checkpoint,
            hint="the checkpoint is incomplete or of another model; re-download every shard.",
        )
    for name, shape in expected.items():
        entry = entries.get(name)
        if entry is not None and tuple(entry.shape) != tuple(shape):
            raise CheckpointError(
                f"{entry.file}: tensor {entry.checkpoint_name} has shape {list(entry.shape)}, "
                f"expected {list(shape)} from config.json.",
                path=entry.file,
                hint="config.json and the weights disagree; use the config.json shipped with these weights.",
            )


def load_tensors(
    entries: Mapping[str, TensorEntry], names: Iterable[str], dtype: torch.dtype | None
) -> Iterable[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)``; tensors are memory-mapped and only copied to change dtype."""
    from safetensors import SafetensorError, safe_open

    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(entries[name].file, []).append(name)
    for file, file_names in by_file.items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for name in file_names:
                    tensor = handle.get_tensor(entries[name].checkpoint_name)
                    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                        tensor = tensor.to(dtype)
                    yield name, tensor
        except SafetensorError as error:
            raise CheckpointError(
                f"{file}: cannot read safetensors data ({error}).", path=file, hint="re-download this shard."
            ) from None


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """'float32' / 'fp16' / 'bf16' / torch.dtype / None (keep the checkpoint's dtype)."""
    import torch

    if name is None or isinstance(name, torch.dtype):
        return name
    aliases = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "auto": None,
    }
    if name not in aliases:
        from trt_pipeline.errors import ConfigError

        raise ConfigError(f"unknown dtype {name!r}; use one of {sorted(aliases)}.")
    return aliases[name]
