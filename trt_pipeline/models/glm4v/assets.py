"""What a checkpoint must hold besides weights for the export to be servable.

An exported folder is only useful if ``generate``/``serve`` can turn a chat request into tokens
and an image into patches: they read the tokenizer, the chat template and the image processor
config from the export's ``hf/`` copy. A checkpoint without them exports fine and then fails on
the device, so the export checks them up front (:func:`missing_serving_assets`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trt_pipeline.artifacts.layout import EXPORT_MANIFEST
from trt_pipeline.errors import CheckpointError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer.tiktoken")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"


@dataclass(frozen=True)
class MissingAsset:
    """One missing piece: what it is and which file(s) would provide it."""

    name: str
    files: tuple[str, ...]

    def describe(self, checkpoint: Path) -> str:
        return f"{self.name} ({' or '.join(str(checkpoint / f) for f in self.files)})"


def _has_template_in_tokenizer_config(checkpoint: Path) -> bool:
    path = checkpoint / "tokenizer_config.json"
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(
            f"{path} is not valid JSON.", path=path, hint="re-download tokenizer_config.json."
        ) from None
    return isinstance(data, dict) and bool(data.get("chat_template"))


def missing_serving_assets(checkpoint: Path | str) -> list[MissingAsset]:
    """The tokenizer, chat template and image processor config that ``checkpoint`` lacks."""
    checkpoint = Path(checkpoint)
    missing = []
    if not any((checkpoint / f).is_file() for f in TOKENIZER_FILES):
        missing.append(MissingAsset("tokenizer", TOKENIZER_FILES))
    if not any((checkpoint / f).is_file() for f in CHAT_TEMPLATE_FILES) and not _has_template_in_tokenizer_config(
        checkpoint
    ):
        missing.append(MissingAsset("chat template", (*CHAT_TEMPLATE_FILES, "tokenizer_config.json:chat_template")))
    if not (checkpoint / IMAGE_PROCESSOR_FILE).is_file():
        missing.append(MissingAsset("image processor config", (IMAGE_PROCESSOR_FILE,)))
    return missing


def check_serving_assets(checkpoint: Path | str, allow_missing: bool = False) -> list[str]:
    """Refuse a checkpoint that lacks what serving needs, or (``allow_missing``) return warnings.

    Raises:
        CheckpointError: something is missing and ``allow_missing`` is false.
    """
    checkpoint = Path(checkpoint)
    missing = missing_serving_assets(checkpoint)
    if not missing:
        return []
    described = [m.describe(checkpoint) for m in missing]
    if not allow_missing:
        raise CheckpointError(
            f"{checkpoint} lacks what serving the export needs: " + "; ".join(described) + ".",
            path=checkpoint / missing[0].files[0],
            hint="copy these files from the original Hugging Face checkpoint, or pass --allow-missing-tokenizer "
            f"to export anyway (recorded as a warning in {EXPORT_MANIFEST}; generate/serve will not work).",
        )
    return [f"checkpoint lacks {d}: generate/serve cannot use this export" for d in described]


__all__ = ["MissingAsset", "check_serving_assets", "missing_serving_assets"]
