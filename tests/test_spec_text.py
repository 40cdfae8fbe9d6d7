"""docs/protocol.md is a specification that stands alone: its normative text names no code.

A reader writing a second implementation has the document, not hotline's source, so a
reference into a module, a private name or an API class would point at nothing. Such
references belong in the non-normative appendix ("Implementation notes"). The vectors of
section 15 are normative too, so its text is held to the same rule.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SPEC = Path(__file__).parent.parent / "docs" / "protocol.md"

# A source file, a path into the package, or a dotted name of hotline's API.
CODE_REFERENCE = re.compile(
    r"\.py\b|hotline/(?!3\b)|hotline\.\w|\b(?:LineState|Connection|Identity|PublicKey|Config)\.\w"
    r"|\b_\w+\(|\bstrict_unpack\b|\b_TRANSITIONS\b|\bthe code is right\b"
)


def _sections() -> dict[str, str]:
    text = SPEC.read_text()
    parts = re.split(r"^(## .*)$", text, flags=re.MULTILINE)
    sections = {"preamble": parts[0]}
    sections.update(zip(parts[1::2], parts[2::2], strict=True))
    return sections


def _normative() -> list[tuple[str, str]]:
    return [(title, body) for title, body in _sections().items()
            if not title.startswith("## Appendix")]


def test_the_specification_has_an_appendix_for_implementation_notes() -> None:
    titles = list(_sections())
    assert titles[-1].startswith("## Appendix A. Implementation notes (non-normative)")
    # The appendix is where the references went: it names the code.
    assert CODE_REFERENCE.search(_sections()[titles[-1]])


@pytest.mark.parametrize(("title", "body"), _normative(), ids=lambda value: value[:30])
def test_normative_text_names_no_code(title: str, body: str) -> None:
    found = [line for line in body.splitlines() if CODE_REFERENCE.search(line)]
    assert not found, f"{title}: {found}"


def test_the_keywords_are_those_of_bcp_14() -> None:
    preamble = " ".join(_sections()["## Conventions"].split())
    assert "BCP 14 [RFC 2119] [RFC 8174] when, and only when, they appear in all capitals" in (
        preamble
    )
