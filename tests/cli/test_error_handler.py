"""The CLI's one top-level handler: every failure ends in one line on stderr and a defined exit code.

Failures are injected into the library call behind a command (``info`` -> ``checkpoint_info``,
``precision fp16`` -> ``make_fp16``) so each path of the handler is exercised through Typer's runner,
exactly as a user's shell would see it.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import trt_pipeline.models.info as info_module
import trt_pipeline.quantize.precision as precision_module
from trt_pipeline.cli import app
from trt_pipeline.errors import CheckpointError, DiskSpaceError, FilePermissionError

runner = CliRunner()


@pytest.fixture
def crash_dir(tmp_path, monkeypatch) -> Path:
    """Keep saved tracebacks inside the test's folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / "autoglm-trt"


def _info_raises(monkeypatch, error: BaseException) -> None:
    def fail(path):
        raise error

    monkeypatch.setattr(info_module, "checkpoint_info", fail)


def _stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_unexpected_error_prints_one_line_and_saves_the_traceback(monkeypatch, crash_dir, tmp_path):
    _info_raises(monkeypatch, RuntimeError("boom: the index is off by one\nsecond line of the message"))
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1
    lines = _stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: unexpected RuntimeError: boom: the index is off by one (traceback saved to ")
    assert "Traceback" not in result.stderr and "second line" not in result.stderr
    saved = [p for p in crash_dir.iterdir() if p.name.startswith("crash-")]
    assert len(saved) == 1 and str(saved[0]) in lines[0]
    text = saved[0].read_text()
    assert text.startswith("Traceback (most recent call last)") and "RuntimeError: boom" in text and "second line" in text
    assert "in fail" in text  # the frame that raised is in the file


def test_disk_full_is_exit_8_naming_the_file(monkeypatch, crash_dir, tmp_path):
    target = tmp_path / "out" / "onnx" / "fp32" / "decoder.onnx.data"
    _info_raises(monkeypatch, OSError(errno.ENOSPC, "No space left on device", str(target)))
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == DiskSpaceError.exit_code == 8
    assert result.stderr.startswith(f"error: no space left on the device while writing {target}")
    assert "hint: free some disk space" in result.stderr and "Traceback" not in result.stderr
    assert not crash_dir.exists()  # an expected failure leaves no crash file


def test_permission_error_is_exit_2_naming_the_path(monkeypatch, crash_dir, tmp_path):
    target = tmp_path / "read-only" / "export.json"
    _info_raises(monkeypatch, PermissionError(errno.EACCES, "Permission denied", str(target)))
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == FilePermissionError.exit_code == 2
    assert result.stderr.startswith(f"error: permission denied: {target}.")
    assert "--out" in result.stderr and "Traceback" not in result.stderr
    assert not crash_dir.exists()


def test_other_os_errors_are_unexpected(monkeypatch, crash_dir, tmp_path):
    _info_raises(monkeypatch, OSError(errno.EIO, "Input/output error", "/dev/sdz"))
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1 and "unexpected OSError" in result.stderr
    assert len(list(crash_dir.iterdir())) == 1


def test_ctrl_c_exits_130_after_cleanup(monkeypatch, crash_dir, tmp_path):
    partial = tmp_path / ".partial-export"

    def interrupted(path):
        partial.mkdir()
        try:
            raise KeyboardInterrupt
        finally:
            partial.rmdir()  # the library's own clean-up runs while the interrupt propagates

    monkeypatch.setattr(info_module, "checkpoint_info", interrupted)
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 130
    assert _stderr_lines(result) == ["interrupted"]
    assert not partial.exists() and not crash_dir.exists()


def test_pipeline_errors_keep_their_exit_code_in_sub_commands(monkeypatch, crash_dir, tmp_path):
    def missing(folder, cfg, **kwargs):
        raise CheckpointError(f"{folder} has no config.json", path=folder, hint="pass a checkpoint folder")

    monkeypatch.setattr(precision_module, "make_fp16", missing)
    result = runner.invoke(app, ["precision", "fp16", str(tmp_path)])
    assert result.exit_code == CheckpointError.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path} has no config.json")


def test_unexpected_error_in_a_sub_command_is_handled_too(monkeypatch, crash_dir, tmp_path):
    def broken(folder, cfg, **kwargs):
        raise KeyError("decoder")

    monkeypatch.setattr(precision_module, "make_fp16", broken)
    result = runner.invoke(app, ["precision", "fp16", str(tmp_path)])
    assert result.exit_code == 1
    assert _stderr_lines(result)[0].startswith("error: unexpected KeyError: 'decoder' (traceback saved to ")


def test_config_type_error_from_code_is_a_config_error(monkeypatch, crash_dir, tmp_path):
    from trt_pipeline.config import ExportConfig

    def bad_config(path):
        return ExportConfig(opset="eighteen")

    monkeypatch.setattr(info_module, "checkpoint_info", bad_config)
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ExportConfig.opset = 'eighteen'")
    assert not crash_dir.exists()


def test_usage_errors_stay_typer_usage_errors(crash_dir, tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path), "--no-such-flag"])
    assert result.exit_code == 2 and "No such option" in result.output
    assert not crash_dir.exists()


def _console(code: str, *args: str, tmpdir: Path) -> subprocess.Popen:
    """``autoglm-trt ARGS`` in a real process, after ``code`` has replaced a library call."""
    script = f"{code}\nfrom trt_pipeline.cli import app\napp()"
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_real_process_unexpected_error_exit_1_with_traceback_file(tmp_path):
    proc = _console("import trt_pipeline.models.info as m\nm.checkpoint_info = lambda path: 1 / 0", "info", str(tmp_path),
                    tmpdir=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unexpected ZeroDivisionError: division by zero (traceback saved to ")
    saved = lines[0].split("traceback saved to ", 1)[1].split(";", 1)[0]
    assert Path(saved).parent == tmp_path / "autoglm-trt" and "ZeroDivisionError" in Path(saved).read_text()


def test_real_process_sigint_exits_130_after_cleanup(tmp_path):
    marker, partial = tmp_path / "started", tmp_path / ".partial"
    code = (
        "import pathlib, time\nimport trt_pipeline.models.info as m\n"
        "def slow(path):\n"
        f"    partial = pathlib.Path({str(partial)!r}); partial.mkdir()\n"
        "    try:\n"
        f"        pathlib.Path({str(marker)!r}).touch(); time.sleep(60)\n"
        "    finally:\n"
        "        partial.rmdir()\n"
        "m.checkpoint_info = slow"
    )
    proc = _console(code, "info", str(tmp_path), tmpdir=tmp_path)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=10)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted" and not partial.exists()


def test_closed_pipe_is_quiet_not_a_crash(tmp_path) -> None:
    """`autoglm-trt init-checkpoint --help | head -3`: no 'unexpected BrokenPipeError', no crash file."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = f"{sys.executable} -m trt_pipeline.cli init-checkpoint --help | head -1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=env, timeout=120)
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("crash-*.txt"))
    assert result.returncode in (0, 1, 141)  # click exits 1 quietly on EPIPE (click.core.BaseCommand.main)
