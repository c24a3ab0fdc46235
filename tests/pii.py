"""Planted personal data for the redaction tests: fake identifiers in real formats (valid checksums), and a scan
of everything a run wrote for any of them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# kind -> a fake value in a real format (cards pass Luhn, the IBAN and the resident ID their checksums)
PLANTED = {
    "EMAIL": "jane.doe+bank@example.co.uk",
    "PHONE": "+44 20 7946 0958",
    "CN_MOBILE": "13812345678",
    "CARD": "4111 1111 1111 1111",
    "IBAN": "GB82 WEST 1234 5698 7654 32",
    "CN_ID": "110105198807121233",
    "IP": "192.168.10.42",
    "URL": "https://janedoe.example.com/u/42",
    "DOB": "12 March 1985",
}


def sentences(lead: str = "") -> list[str]:
    """One text per planted value, English and Chinese, each naming it in context."""
    p = PLANTED
    return [
        f"{lead}my card {p['CARD']} was charged twice, mail me at {p['EMAIL']}",
        f"{lead}please call me back on {p['PHONE']} about my transfer",
        f"{lead}I was born on {p['DOB']} and my IBAN is {p['IBAN']}",
        f"{lead}the login came from {p['IP']}, see {p['URL']}",
        f"{lead}我的手机是{p['CN_MOBILE']}，身份证号{p['CN_ID']}，卡被冻结了",
    ]


def needles() -> dict[str, list[bytes]]:
    """What must not be found anywhere: each value as written, and its digits/letters without separators."""
    found: dict[str, list[bytes]] = {}
    for kind, value in PLANTED.items():
        forms = {value, re.sub(r"[\s-]", "", value)}
        if kind == "DOB":
            forms = {value}
        found[kind] = [form.encode("utf-8") for form in forms]
    return found


def leaks(paths: Iterable[Path], *texts: str) -> list[str]:
    """Every (place, kind) where a planted value survives: in files under ``paths`` (recursively) or ``texts``."""
    places: list[tuple[str, bytes]] = [(f"text {i}", t.encode("utf-8")) for i, t in enumerate(texts)]
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        places += [(str(file), file.read_bytes()) for file in files]
    return [f"{kind} in {where}" for where, data in places for kind, forms in needles().items()
            if any(form in data for form in forms)]  # fmt: skip
