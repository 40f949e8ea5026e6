"""CHECKPOINT as a local folder or a Hugging Face Hub id (``zai-org/AutoGLM-Phone-9B``).

A Hub id is resolved through huggingface_hub's cache (``snapshot_download``), so a checkpoint
downloaded once is reused and ``HF_HUB_OFFLINE=1`` is respected: offline, only the cache is
looked at, and a model that is not cached is a clear :class:`CheckpointError`, not a network
timeout.
"""

from __future__ import annotations

import re
from pathlib import Path

from trt_pipeline.errors import CheckpointError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: what the pipeline reads from a checkpoint (no *.bin / *.pt / original formats)
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


def is_hub_id(checkpoint: str | Path) -> bool:
    """``org/name`` that is not an existing local path."""
    text = str(checkpoint)
    return not Path(text).exists() and bool(_REPO_ID.match(text))


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A local folder as is; a Hub id -> its snapshot folder in the huggingface_hub cache."""
    if not is_hub_id(checkpoint):
        return Path(checkpoint)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo = str(checkpoint)
    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        return Path(snapshot_download(repo, allow_patterns=ALLOW_PATTERNS, local_files_only=offline))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{repo} is neither a local folder nor in the Hugging Face cache ({constants.HF_HUB_CACHE})"
            + (" and offline mode is on (HF_HUB_OFFLINE=1)." if offline else " and could not be downloaded."),
            path=Path(constants.HF_HUB_CACHE),
            hint=f"download it once with network access (`hf download {repo}`), or pass a local folder.",
        ) from None
    except (RepositoryNotFoundError, HfHubHTTPError) as error:
        raise CheckpointError(
            f"{repo}: cannot fetch from the Hugging Face Hub ({str(error).splitlines()[0]}).",
            hint="check the id (org/name) and your access token (HF_TOKEN), or pass a local folder.",
        ) from None
