"""Run one fuzz target under atheris: python fuzz/run.py TARGET [libFuzzer flags]

TARGET is ``frames``, ``records``, ``handshake`` or ``connection``. The command runs
``fuzz/fuzz_TARGET.py`` with

- the seed corpus ``fuzz/corpus/TARGET`` (read only: libFuzzer writes new inputs only to the
  first directory it is given),
- a working corpus ``fuzz/.work/TARGET`` (kept between runs; ignored by git), and
- crash/timeout/OOM reproducers written as ``fuzz/.work/artifacts/TARGET-*``,

plus the defaults below; a flag given on the command line replaces the default of the same
name. ``--work=DIR`` puts the working corpus and the artifacts under DIR instead.

Examples::

    python fuzz/run.py records -runs=1000000
    python fuzz/run.py connection -max_total_time=600
    python fuzz/fuzz_records.py crash-1234   # replay one input (any target file)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
TARGETS = ("frames", "records", "handshake", "connection")
DEFAULTS = {
    "-max_len": "8192",  # the seeds are under 4 KiB; room to splice two of them
    "-timeout": "10",  # seconds for one input: anything slower is a hang
    "-rss_limit_mb": "1536",  # unbounded allocation shows up as an OOM
    "-print_final_stats": "1",
}


def command(target: str, flags: list[str], work: Path) -> list[str]:
    corpus = work / target
    artifacts = work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    given = {flag.split("=", 1)[0] for flag in flags}
    options = [f"{k}={v}" for k, v in DEFAULTS.items() if k not in given]
    if "-artifact_prefix" not in given:
        options.append(f"-artifact_prefix={artifacts}{os.sep}{target}-")
    return [sys.executable, str(FUZZ / f"fuzz_{target}.py"), *options, *flags,
            str(corpus), str(FUZZ / "corpus" / target)]


def main(argv: list[str]) -> None:
    work = FUZZ / ".work"
    args = []
    for arg in argv:
        if arg.startswith("--work="):
            work = Path(arg.split("=", 1)[1]).resolve()
        else:
            args.append(arg)
    if not args or args[0] not in TARGETS:
        sys.exit(f"usage: python fuzz/run.py {{{','.join(TARGETS)}}} [--work=DIR] [flags]")
    cmd = command(args[0], args[1:], work)
    print(" ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
