"""The systemd unit template contrib/systemd/hotline@.service.

Its ``ExecStart`` must be a ``hotline run`` the command line accepts, its hardening must be
the documented one, and ``systemd-analyze verify`` (where it is installed) must find nothing
to say about it: an unknown or misspelt key is only a warning there, so its output is checked
too, not only its status.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hotline.cli._parser import build_parser

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "contrib" / "systemd" / "hotline@.service"

HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "StateDirectory": "hotline/%i",
    "StateDirectoryMode": "0700",
    "UMask": "0077",
    "CapabilityBoundingSet": "",
}


def read_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each a list of (key, value) in order: keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"line {number} is not KEY=VALUE"
        assert current is not None, f"line {number} is before the first section"
        assert not raw.endswith("\\"), f"line {number}: no continuation lines"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in section if name == key]


def test_the_unit_has_its_sections_and_hardening() -> None:
    sections = read_unit(UNIT.read_text())
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    for key, expected in HARDENING.items():
        assert values(service, key) == [expected], key
    assert values(service, "SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    assert values(service, "LoadCredential") == ["key:/etc/hotline/%i.key"]
    assert values(sections["Install"], "WantedBy") == ["multi-user.target"]


def test_exec_start_is_a_run_the_command_line_accepts() -> None:
    service = read_unit(UNIT.read_text())["Service"]
    (command,) = values(service, "ExecStart")
    # What systemd would run for hotline@alice with HOTLINE_OPTIONS as docs/operations.md
    # shows it.
    expanded = (command.replace("%d", "/run/credentials/hotline@alice.service")
                .replace("%S", "/var/lib").replace("%i", "alice")
                .replace("$HOTLINE_OPTIONS", "--peer /etc/hotline/alice.pub --listen 0.0.0.0:7400"))
    executable, *argv = shlex.split(expanded)
    assert executable.endswith("/hotline")
    args = build_parser().parse_args(argv)
    assert args.command == "run"
    assert args.key == "/run/credentials/hotline@alice.service/key"
    assert args.peer == "/etc/hotline/alice.pub"
    assert args.data == "/var/lib/hotline/alice"
    assert args.listen == ("0.0.0.0", 7400)
    assert args.json


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_has_nothing_to_say(tmp_path: Path) -> None:
    # verify checks that the executable exists: point it at this interpreter's hotline.
    hotline = Path(sys.executable).with_name("hotline")
    if not hotline.exists():
        pytest.skip("no hotline script beside this interpreter")
    unit = tmp_path / "hotline@test.service"
    unit.write_text(UNIT.read_text().replace("/opt/hotline/bin/hotline", str(hotline)))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    about_unit = [line for line in result.stderr.splitlines() if unit.name in line]
    assert about_unit == [], result.stderr
