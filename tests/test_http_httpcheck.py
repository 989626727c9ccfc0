"""Issue #2: the shared conformance checker (shared/tools/httpcheck.py, without --slow) against
the demo app must report 0 failed cases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

HTTPCHECK_CANDIDATES = [ROOT.parent / "shared" / "tools" / "httpcheck.py",
                        Path("/work/shared/tools/httpcheck.py")]


@pytest.mark.timeout(300)
def test_httpcheck_demo_zero_failed(serve):
    checker = next((p for p in HTTPCHECK_CANDIDATES if p.exists()), None)
    assert checker is not None, f"httpcheck.py not found in {HTTPCHECK_CANDIDATES}"
    server = serve(str(ROOT / "examples" / "demo.py"))
    result = subprocess.run(
        [sys.executable, str(checker), server.url, "--pid", str(server.pid)],
        capture_output=True, text=True, timeout=280)
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    failed = [line for line in lines if line.startswith("FAILED")]
    assert lines[-1].startswith("httpcheck:") and " 0 failed" in lines[-1], "\n".join(failed) or result.stdout[-3000:]
    assert result.returncode == 0
    assert server.proc.poll() is None  # the server survived every case
