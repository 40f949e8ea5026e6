"""sha256 manifest of a bundle (``SHA256SUMS``, ``sha256sum -c`` format) and its check."""

from __future__ import annotations

from pathlib import Path

from trt_pipeline.artifacts import sha256_file
from trt_pipeline.errors import PipelineError

SUMS_FILE = "SHA256SUMS"


class BundleIntegrityError(PipelineError):
    """A bundle file is missing, unlisted or not the bytes that were packed (exit 3, as a corrupt artifact)."""

    exit_code = 3


def bundle_files(root: Path) -> list[str]:
    """Every file under ``root`` except the sums file, as sorted POSIX relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != SUMS_FILE)


def write_sums(root: Path) -> tuple[str, ...]:
    files = bundle_files(root)
    lines = [f"{sha256_file(root / name)}  {name}" for name in files]
    (root / SUMS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tuple(files)


def verify_bundle(root: Path | str) -> int:
    """Check every file against ``SHA256SUMS``; returns the number of files checked.

    Raises:
        BundleIntegrityError: naming the first file that is missing, changed or not listed.
    """
    root = Path(root)
    sums = root / SUMS_FILE
    if not sums.is_file():
        raise BundleIntegrityError(f"{root} is not a bundle: {SUMS_FILE} is missing", path=sums,
                                   hint="make it with `autoglm-trt bundle OUT --target ... --out BUNDLE`")
    listed: dict[str, str] = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    hint = "copy the bundle again (or re-extract the .tar); it changed after it was made"
    for name, digest in listed.items():
        path = root / name
        if not path.is_file():
            raise BundleIntegrityError(f"bundle file {name} is missing", path=path, hint=hint)
        if sha256_file(path) != digest:
            raise BundleIntegrityError(f"bundle file {name} does not match {SUMS_FILE} (sha256 differs)", path=path, hint=hint)
    extra = sorted(set(bundle_files(root)) - set(listed))
    if extra:
        raise BundleIntegrityError(f"bundle has files not in {SUMS_FILE}: {', '.join(extra)}", path=root / extra[0], hint=hint)
    return len(listed)
