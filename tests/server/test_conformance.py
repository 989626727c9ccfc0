"""The shared black-box conformance checkers against the demo app (issues #2 and #4):
``httpcheck.py`` (HTTP/1.1 robustness, without --slow) must report 0 failed, and
``wscheck.py`` (RFC 6455, 296 cases) 0 failed and 0 non-strict. The checkers live in
``shared/tools`` beside the repository; a missing checker fails the test, it never skips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

TOOLS = [ROOT.parent / "shared" / "tools", Path("/work/shared/tools")]


def checker(name: str) -> Path:
    found = next((d / name for d in TOOLS if (d / name).exists()), None)
    assert found is not None, f"{name} not found in {[str(d) for d in TOOLS]}"
    return found


def run_checker(name: str, *args: str, timeout: float) -> list[str]:
    result = subprocess.run([sys.executable, str(checker(name)), *args],
                            capture_output=True, text=True, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    return lines


@pytest.mark.timeout(300)
def test_httpcheck_demo_zero_failed(serve):
    server = serve(str(ROOT / "examples" / "demo.py"))
    lines = run_checker("httpcheck.py", server.url, "--pid", str(server.pid), timeout=280)
    failed = [line for line in lines if line.startswith("FAILED")]
    assert lines[-1].startswith("httpcheck:") and " 0 failed" in lines[-1], "\n".join(failed) or lines[-40:]
    assert server.proc.poll() is None  # the server survived every case


@pytest.mark.timeout(120)
def test_wscheck_demo_zero_failed_zero_non_strict(serve):
    server = serve(str(ROOT / "examples" / "demo.py"))
    lines = run_checker("wscheck.py", f"{server.ws_url}/ws", timeout=100)
    bad = [line for line in lines if line.startswith(("FAILED", "NON-STRICT"))]
    assert lines[-1].startswith("wscheck:") and " 0 failed, 0 non-strict" in lines[-1], "\n".join(bad) or lines[-40:]
    assert server.proc.poll() is None
