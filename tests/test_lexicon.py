"""The industry dictionary (slm.lexicon): file formats, case and boundary rules, Chinese, clear errors."""

from __future__ import annotations

import json

import pytest

from slm.errors import DataError
from slm.lexicon import Lexicon

TEXT = """\
# tickers keep their case, names do not
AAPL | $AAPL | Apple | Apple Inc. | 苹果
GE | General Electric
Federal Reserve | Fed | FOMC
"""


@pytest.fixture
def lexicon(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text(TEXT, encoding="utf-8")
    return Lexicon.load(path)


def test_aliases_map_to_their_canonical_term(lexicon):
    assert len(lexicon) == 3
    assert lexicon.entities("$AAPL jumps after Apple Inc. beats; the Fed is silent") == ["AAPL", "Federal Reserve"]
    assert lexicon.entities("FOMC minutes") == ["Federal Reserve"]


def test_capitalised_aliases_match_exact_case_and_names_any_case(lexicon):
    assert lexicon.entities("apple and APPLE both count") == ["AAPL"]
    assert lexicon.entities("ge appliances") == []  # 'GE' is a ticker: exact case only
    assert lexicon.entities("GE cuts guidance") == ["GE"]
    assert lexicon.entities("general electric, GENERAL ELECTRIC") == ["GE"]


def test_ascii_aliases_need_word_boundaries_but_chinese_does_not(lexicon):
    assert lexicon.entities("GENERAL motors and Fedex and pineapple") == []
    assert lexicon.entities("分析师看好苹果公司") == ["AAPL"]


def test_the_longest_alias_wins_and_positions_are_reported(lexicon):
    matches = lexicon.find("Apple Inc. and Federal\nReserve")
    assert [(m.canonical, m.alias) for m in matches] == [
        ("AAPL", "Apple Inc."),
        ("Federal Reserve", "Federal\nReserve"),
    ]
    assert matches[0].start == 0 and matches[0].end == len("Apple Inc.")


def test_csv_and_json_lexicons_hold_the_same_terms(tmp_path, lexicon):
    csv = tmp_path / "terms.csv"
    csv.write_text("entity,alias\nAAPL,$AAPL\nAAPL,Apple\nAAPL,Apple Inc.\nAAPL,苹果\nGE,General Electric\n"
                   "Federal Reserve,Fed\nFederal Reserve,FOMC\n", encoding="utf-8")  # fmt: skip
    js = tmp_path / "terms.json"
    js.write_text(json.dumps({name: list(aliases) for name, aliases in lexicon.terms.items()}), encoding="utf-8")
    assert Lexicon.load(csv).terms == lexicon.terms == Lexicon.load(js).terms


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("AAPL | | Apple\n", "line 1 has an empty field"),
        ("AAPL | Apple\nMSFT | apple\n", "belongs to both 'AAPL' and 'MSFT'"),
        ("# only a comment\n", "has no terms"),
    ],
)
def test_malformed_lexicons_fail_with_one_line_naming_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        Lexicon.load(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
