"""Safetensors weight discovery, validation and zero-copy loading for HF checkpoints.

The real checkpoint is ~20 GB of bf16 in sharded safetensors. We never hold two copies:
``safetensors.safe_open(...).get_tensor`` returns tensors backed by a memory map of the file, and
they are assigned straight into a model built on the ``meta`` device. A dtype conversion (e.g.
bf16 checkpoint, fp32 export) copies one tensor at a time.

Before any tensor is read every file's header is checked against its size (a truncated download
is named, not a cryptic deserialisation error), and the tensor names and shapes are checked
against what the model expects (missing / mis-shaped tensors are named with their file).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from trt_pipeline.errors import CheckpointError

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

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class TensorEntry:
    """Where a tensor lives and what its header says."""

    file: Path
    checkpoint_name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel * _DTYPES[self.dtype].itemsize if self.dtype in _DTYPES else 0


def normalize_name(checkpoint_name: str) -> str:
    """Map a checkpoint tensor name onto the export-friendly model's parameter name."""
    for prefix, replacement in _PREFIX_RULES:
        if checkpoint_name.startswith(prefix):
            return replacement + checkpoint_name[len(prefix) :]
    return checkpoint_name


def read_header(file: Path) -> dict[str, dict]:
    """Parse and validate one safetensors header without touching tensor data.

    Raises CheckpointError when the file is shorter than its header declares (a truncated
    download or copy), naming the file and the byte counts.
    """
    size = file.stat().st_size
    with open(file, "rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) < 8:
            raise _truncated(file, size, 8)
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > size - 8:
            raise _truncated(file, size, 8 + header_len)
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(
                f"{file}: the safetensors header is not valid JSON (corrupt file).",
                path=file,
                hint="re-download this shard.",
            ) from None
    header.pop("__metadata__", None)
    data_end = max((info["data_offsets"][1] for info in header.values()), default=0)
    expected = 8 + header_len + data_end
    if size < expected:
        raise _truncated(file, size, expected)
    return header


def _truncated(file: Path, size: int, expected: int) -> CheckpointError:
    return CheckpointError(
        f"{file} is truncated: {size} bytes on disk, its header declares {expected} bytes.",
        path=file,
        hint="the download or copy was interrupted; fetch this file again.",
    )


def weight_files(checkpoint: Path) -> list[Path]:
    """The safetensors files of a checkpoint (via the index when sharded)."""
    index = checkpoint / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError):
            raise CheckpointError(
                f"{index} is not a valid safetensors index (needs a `weight_map`).",
                path=index,
                hint="re-download the index file.",
            ) from None
        files = sorted({checkpoint / name for name in weight_map.values()})
        for file in files:
            if not file.is_file():
                raise CheckpointError(
                    f"{file} is listed in {index.name} but missing.",
                    path=file,
                    hint="download every shard named in the index.",
                )
        return files
    single = checkpoint / SINGLE_FILE
    if single.is_file():
        return [single]
    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise CheckpointError(
            f"no *.safetensors weights in {checkpoint}.",
            path=checkpoint,
            hint="a checkpoint needs model.safetensors or model.safetensors.index.json + shards "
            "(config-only checkpoints work for `info` only).",
        )
    return files


def scan_checkpoint(checkpoint: Path | str) -> dict[str, TensorEntry]:
    """Every tensor of a checkpoint, keyed by our parameter name, with file/dtype/shape."""
    checkpoint = Path(checkpoint)
    entries: dict[str, TensorEntry] = {}
    for file in weight_files(checkpoint):
        for name, info in read_header(file).items():
            entries[normalize_name(name)] = TensorEntry(
                file=file, checkpoint_name=name, dtype=info["dtype"], shape=tuple(info["shape"])
            )
    return entries


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
