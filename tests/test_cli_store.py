"""The real ``hotline`` process against settings and stores a user gets wrong.

Reuses the helpers of test_cli.py: every child is ``python -m hotline``, every wait has a
deadline and every child is killed at the end of its test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_cli import cli

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and file modes are POSIX")


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e-9", "0", "-1", "1e9"])
def test_a_heartbeat_out_of_range_is_a_usage_error(tmp_path: Path, value: str) -> None:
    result = cli("run", "--key", "k", "--peer", "p.pub", "--data", "data",
                 "--listen", "127.0.0.1:0", "--heartbeat", value, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("hotline run: error: argument --heartbeat: ")
    assert not (tmp_path / "data").exists()
