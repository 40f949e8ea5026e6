"""Human-readable sizes for logs, tables and reports (decimal units, as disks and Hub pages show them)."""

from __future__ import annotations


def format_bytes(n: float, digits: int = 2) -> str:
    """``1234567`` -> ``"1.23 MB"``; bytes below 1 kB without decimals."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.{digits}f} {unit}"
        n /= 1000
    return f"{n:.{digits}f} TB"


__all__ = ["format_bytes"]
