"""Print the trtexec flags documented by one TensorRT release, from its ``samples/common/sampleOptions.cpp``.

This regenerates and checks the table in :mod:`trt_pipeline.bundle.trtexec` (``TRTEXEC_RELEASES``). Only
the help text of the options trtexec itself parses for a build is read (``BaseModelOptions``,
``ModelOptions``, ``BuildOptions``, ``SystemOptions``, ``InferenceOptions``), not the safety builder's.

    git clone https://github.com/NVIDIA/TensorRT && cd TensorRT
    python tools/trtexec_flags.py --repo . v10.3.0 v10.16 v11.0 main
"""

from __future__ import annotations

import argparse
import re
import subprocess

#: The ``help`` functions whose text lists the options trtexec accepts for a build.
HELP_FUNCTIONS = ("BaseModelOptions", "ModelOptions", "BuildOptions", "SystemOptions", "InferenceOptions")


def help_text(source: str) -> str:
    """The bodies of the ``X::help(std::ostream& os)`` functions in :data:`HELP_FUNCTIONS`."""
    bodies = []
    for name in HELP_FUNCTIONS:
        match = re.search(rf"void {name}::help\(std::ostream& os[^)]*\)\n\{{(.*?)\n\}}\n", source, re.S)
        if match:
            bodies.append(match.group(1))
    return "\n".join(bodies)


def documented_flags(source: str) -> set[str]:
    """Every ``--flag`` (and alias, e.g. ``--versionCompatible, --vc``) that starts a help line."""
    flags = set()
    for line in re.findall(r'"\s{2,}(--[A-Za-z0-9]+(?:[=<\w>]*)?(?:,\s*--[A-Za-z0-9]+)*)', help_text(source)):
        flags.update(re.findall(r"--[A-Za-z0-9]+", line))
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, help="a clone of NVIDIA/TensorRT")
    parser.add_argument("refs", nargs="+", help="tags or branches, e.g. v10.3.0 main")
    args = parser.parse_args()
    for ref in args.refs:
        commit = subprocess.run(["git", "-C", args.repo, "rev-parse", f"{ref}^{{commit}}"], check=True,
                                capture_output=True, text=True).stdout.strip()
        source = subprocess.run(["git", "-C", args.repo, "show", f"{ref}:samples/common/sampleOptions.cpp"],
                                check=True, capture_output=True, text=True).stdout
        print(f"{ref} {commit}: {' '.join(sorted(documented_flags(source)))}")


if __name__ == "__main__":
    main()
