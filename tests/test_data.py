"""Data layer: loading, validation messages, reports, splitting, label alignment (real data slices)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from slm.data import DataReport, TextDataset, align_labels, load_dataset, split_dataset
from slm.data.splitting import min_examples_per_class
from slm.errors import ConfigError, DataError
from tests.conftest import DATA


def _data(rel: str) -> Path:
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (expected the shared data folder beside the repo)")
    return path


def _raises(fn: Callable[[], object], match: str) -> str:
    """Run ``fn``, expect a DataError matching ``match``, and check the message is one line."""
    with pytest.raises(DataError, match=match) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert info.value.exit_code == 2
    return message


@pytest.fixture(scope="module")
def banking() -> pd.DataFrame:
    """Banking77 train rows: 10 intents x 30 rows (all texts distinct)."""
    df = pd.read_csv(_data("banking77/train.csv"), dtype=str, keep_default_na=False)
    intents = sorted(df["category"].unique())[:10]
    df = df[df["category"].isin(intents)].groupby("category").head(30)
    return df.reset_index(drop=True)


@pytest.fixture(scope="module")
def fin() -> pd.DataFrame:
    """Finance tweets with integer sentiment labels (first 100 rows of each label)."""
    df = pd.read_csv(_data("fin_tweets_sentiment/sent_train.csv"))
    return df.groupby("label").head(100).reset_index(drop=True)


@pytest.fixture(scope="module")
def clinc() -> pd.DataFrame:
    """CLINC150 train pairs as (query, intent): 8 intents x 20 rows."""
    raw = json.loads(_data("clinc150/data_full.json").read_text(encoding="utf-8"))
    df = pd.DataFrame(raw["train"], columns=["query", "intent"])
    intents = sorted(df["intent"].unique())[:8]
    return df[df["intent"].isin(intents)].groupby("intent").head(20).reset_index(drop=True)


def _write(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` in the format given by the extension."""
    suffix = path.suffix
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix in (".tsv", ".tab"):
        df.to_csv(path, index=False, sep="\t")
    elif suffix in (".jsonl", ".ndjson"):
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        raise AssertionError(suffix)
    return path


# ---------------------------------------------------------------- formats and detection


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"])
def test_each_format_loads_the_same_rows(banking: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    ds, report = load_dataset(_write(banking, tmp_path / f"train{suffix}"))
    assert ds.texts == banking["text"].tolist()
    assert ds.labels == banking["category"].tolist()
    assert not ds.multi_label
    assert ds.label_names == sorted(banking["category"].unique())
    assert report.format == {".ndjson": "jsonl"}.get(suffix, suffix[1:])
    assert (report.text_col, report.label_col) == ("text", "category")
    assert report.n_rows == report.n_rows_read == len(banking)
    assert ds.source == str(tmp_path / f"train{suffix}")


def test_fmt_overrides_extension(banking: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "train.data"
    banking.to_csv(path, index=False, sep="\t")
    ds, report = load_dataset(path, fmt="tsv")
    assert report.format == "tsv" and len(ds) == len(banking)


def test_real_files_are_detected() -> None:
    ds, report = load_dataset(_data("banking77/train.csv"))
    assert (report.text_col, report.label_col) == ("text", "category")
    assert report.n_rows == 10003 and report.n_classes == 77 == len(ds.label_names)
    assert report.warnings == []

    ds, report = load_dataset(_data("symptom2disease/Symptom2Disease.csv"))
    assert (report.text_col, report.label_col) == ("text", "label")  # the 'index' column is ignored
    assert report.n_classes == 24 and report.n_duplicates > 0

    ds, report = load_dataset(_data("waimai_10k/waimai_10k.csv"))
    assert (report.text_col, report.label_col) == ("review", "label")
    assert set(ds.label_names) == {"0", "1"}


def test_finance_labels_stay_strings_and_long_texts_warn() -> None:
    ds, report = load_dataset(_data("fin_tweets_sentiment/sent_train.csv"))
    assert ds.label_names == ["0", "1", "2"]
    assert all(isinstance(lab, str) for lab in ds.labels)
    assert list(report.class_counts.values()) == sorted(report.class_counts.values(), reverse=True)
    assert report.text_chars["max"] > 2000 >= report.text_chars["median"]
    assert any("longer than 2000 characters" in w for w in report.warnings)
    json.dumps(report.to_dict())  # JSON-serialisable


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_integer_labels_become_strings(fin: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    assert fin["label"].dtype.kind == "i"
    ds, _ = load_dataset(_write(fin, tmp_path / f"fin{suffix}"))
    assert set(ds.labels) == {"0", "1", "2"}
    assert ds.labels == [str(v) for v in fin["label"]]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_clinc_query_intent_detected(clinc: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    ds, report = load_dataset(_write(clinc, tmp_path / f"clinc{suffix}"))
    assert (report.text_col, report.label_col) == ("query", "intent")
    assert ds.texts == clinc["query"].tolist() and len(ds.label_names) == 8


def test_unnamed_text_column_is_the_long_string_column(banking: pd.DataFrame, tmp_path: Path) -> None:
    df = pd.DataFrame({"row_id": range(len(banking)), "utt": banking["text"], "intent": banking["category"].str[:4]})
    _, report = load_dataset(_write(df, tmp_path / "x.csv"))
    assert (report.text_col, report.label_col) == ("utt", "intent")
    # with two columns and a recognisable text column, the other one is the label
    two = pd.DataFrame({"sentence": banking["text"], "y_true": banking["category"]})
    _, report = load_dataset(_write(two, tmp_path / "two.csv"))
    assert (report.text_col, report.label_col) == ("sentence", "y_true")


def test_ambiguous_columns_ask_for_options(banking: pd.DataFrame, tmp_path: Path) -> None:
    df = pd.DataFrame({"a": banking["text"], "b": banking["text"].str[::-1], "c": banking["category"]})
    path = _write(df, tmp_path / "x.csv")
    message = _raises(lambda: load_dataset(path), r"--text-col.*columns: 'a', 'b', 'c'")
    assert "x.csv" in message
    _raises(lambda: load_dataset(path, label_col="c"), r"--text-col")
    ds, _ = load_dataset(path, text_col="a", label_col="c")
    assert ds.texts == banking["text"].tolist()

    both = pd.DataFrame({"text": banking["text"], "label": banking["category"], "intent": banking["category"]})
    _raises(lambda: load_dataset(_write(both, tmp_path / "y.csv")), r"--label-col.*'label', 'intent'")


def test_explicit_columns(tmp_path: Path) -> None:
    path = _data("symptom2disease/Symptom2Disease.csv")
    ds, report = load_dataset(path, text_col="text", label_col="label")
    assert len(ds) == 1200 and report.label_col == "label"
    ds2, _ = load_dataset(path, text_col="TEXT", label_col="Label")  # case-insensitive fallback
    assert ds2.texts == ds.texts


# ---------------------------------------------------------------- multi-label


def test_multi_label_by_separator(banking: pd.DataFrame, tmp_path: Path) -> None:
    df = banking[["text", "category"]].copy()
    shifted = df["category"].shift(1).fillna(df["category"].iloc[-1])
    df["category"] = [
        f" {a} | {b} |" if i % 3 == 0 else a for i, (a, b) in enumerate(zip(df["category"], shifted, strict=True))
    ]
    ds, report = load_dataset(_write(df, tmp_path / "ml.csv"), label_sep="|")
    assert ds.multi_label and report.multi_label and report.label_sep == "|"
    assert ds.labels[0] == sorted(ds.labels[0], key=ds.labels[0].index) and len(ds.labels[0]) in (1, 2)
    assert all(
        isinstance(labs, list) and labs and all(lab == lab.strip() and lab for lab in labs) for labs in ds.labels
    )
    assert ds.labels[1] == [banking["category"][1]]
    assert ds.label_names == sorted(banking["category"].unique())
    assert sum(report.class_counts.values()) == sum(len(labs) for labs in ds.labels)


def test_multi_label_by_flag_columns(fin: pd.DataFrame, tmp_path: Path) -> None:
    names = ["bearish", "bullish", "neutral"]
    df = pd.DataFrame({"text": fin["text"]})
    for code, name in enumerate(names):
        df[name] = (fin["label"] == code).astype(int)
    df.loc[0, "neutral"] = 1  # one row with two labels
    for suffix in (".csv", ".parquet"):
        ds, report = load_dataset(_write(df, tmp_path / f"flags{suffix}"), label_cols=["neutral", "bearish", "bullish"])
        assert ds.multi_label and report.label_cols == ["neutral", "bearish", "bullish"]
        assert ds.label_names == ["neutral", "bearish", "bullish"]
        assert ds.labels[1] == [names[fin["label"][1]]]
        assert set(ds.labels[0]) == {"neutral", names[fin["label"][0]]}

    df["neutral"] = df["neutral"].astype(str).replace({"1": "true", "0": "false"})
    ds, _ = load_dataset(_write(df, tmp_path / "bools.jsonl"), label_cols=names)
    assert ds.labels[1] == [names[fin["label"][1]]]

    df.loc[5, "bullish"] = 7
    _raises(
        lambda: load_dataset(_write(df, tmp_path / "bad.csv"), label_cols=names),
        r"bad\.csv: label column 'bullish' has 1 row whose value is not 0/1 \(e\.g\. '7'\) "
        r"\(first at data row 6\)",
    )


# ---------------------------------------------------------------- errors


def test_file_errors(banking: pd.DataFrame, tmp_path: Path) -> None:
    _raises(lambda: load_dataset(tmp_path / "nope.csv"), r"nope\.csv: file not found")
    _write(banking, tmp_path / "train.csv")
    _raises(lambda: load_dataset(tmp_path), r"is a directory.*train\.csv")
    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    _raises(lambda: load_dataset(tmp_path / "sheet.xlsx"), r"sheet\.xlsx: unsupported file type \.xlsx.*CSV")
    (tmp_path / "notes.txt").write_text("x")
    _raises(lambda: load_dataset(tmp_path / "notes.txt"), r"notes\.txt: unsupported file type .*--format")
    with pytest.raises(ConfigError):
        load_dataset(tmp_path / "train.csv", fmt="xml")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("zero.csv", b"", r"zero\.csv: file is empty \(0 bytes\)"),
        ("space.jsonl", b"\n  \n", r"space\.jsonl: file is empty"),
        ("header.csv", b"text,category\n", r"header\.csv: has no data rows.*'text', 'category'"),
        ("zero.parquet", b"", r"zero\.parquet: file is empty"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    (tmp_path / name).write_bytes(content)
    _raises(lambda: load_dataset(tmp_path / name), match)


def test_non_utf8_reports_line_and_offset(banking: pd.DataFrame, tmp_path: Path) -> None:
    lines = banking.head(10).to_csv(index=False).encode("utf-8").split(b"\n")
    lines[4] = lines[4].replace(b" ", " caf\xe9 ".encode("latin-1"), 1)
    data = b"\n".join(lines)
    path = tmp_path / "latin.csv"
    path.write_bytes(data)
    offset = data.index(b"\xe9")
    _raises(
        lambda: load_dataset(path),
        rf"latin\.csv: is not valid UTF-8.*0xe9 at line 5, .*byte offset {offset}\)",
    )
    jsonl = tmp_path / "latin.jsonl"
    jsonl.write_bytes(b'{"text": "ok", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    _raises(lambda: load_dataset(jsonl), r"not valid UTF-8.*line 2")


def test_utf8_bom_is_accepted(banking: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + banking.to_csv(index=False).encode("utf-8"))
    _, report = load_dataset(path)
    assert report.text_col == "text"


def test_malformed_rows_report_line(banking: pd.DataFrame, tmp_path: Path) -> None:
    rows = banking.head(8)
    csv_lines = rows.to_csv(index=False).splitlines()
    csv_lines[6] += ",extra"
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("\n".join(csv_lines) + "\n", encoding="utf-8")
    _raises(lambda: load_dataset(bad_csv), r"bad\.csv: line 7 has 3 fields but the header has 2")

    every = tmp_path / "every.csv"  # every row one field too many: pandas alone would make an index
    every.write_text(
        "text,label\n" + "".join(f"{t},{c},x\n" for t, c in zip(rows["text"], rows["category"], strict=True))
    )
    _raises(lambda: load_dataset(every), r"every\.csv: line 2 has 3 fields")

    quote = tmp_path / "quote.csv"
    quote.write_text('text,label\nfine,a\nalso fine,b\n"never closed,a\nmore,b\n')
    _raises(lambda: load_dataset(quote), r"quote\.csv: unclosed quote starting near line 4")

    jsonl_lines = rows.to_json(orient="records", lines=True).splitlines()
    jsonl_lines[4] = jsonl_lines[4][:-3]
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text("\n".join(jsonl_lines) + "\n")
    _raises(lambda: load_dataset(bad_jsonl), r"bad\.jsonl: line 5 is not valid JSON")
    array = tmp_path / "array.jsonl"
    array.write_text(json.dumps(rows.to_dict("records")))
    _raises(lambda: load_dataset(array), r"array\.jsonl: line 1 is a JSON list, expected an object")

    fake = tmp_path / "fake.parquet"
    fake.write_text(rows.to_csv(index=False))
    _raises(lambda: load_dataset(fake), r"fake\.parquet: cannot be read as Parquet")


def test_missing_column_lists_available(banking: pd.DataFrame, tmp_path: Path) -> None:
    path = _write(banking, tmp_path / "train.jsonl")
    _raises(
        lambda: load_dataset(path, label_col="intent"),
        r"train\.jsonl: label column 'intent' not found; available columns: 'text', 'category'",
    )
    _raises(lambda: load_dataset(path, text_col="utterance"), r"text column 'utterance' not found")
    _raises(lambda: load_dataset(path, label_cols=["a", "b"]), r"label column 'a' not found")


def test_blank_texts_dropped_or_fatal(banking: pd.DataFrame, tmp_path: Path) -> None:
    df = banking.copy()
    df.loc[[3, 7], "text"] = ["", "   "]
    ds, report = load_dataset(_write(df, tmp_path / "blank.csv"))
    assert report.n_blank_dropped == 2 and report.n_rows == len(df) - 2 == len(ds)
    assert any("dropped 2 rows with blank text" in w for w in report.warnings)
    assert ds.texts[0] == banking["text"][0]  # texts are not stripped or altered

    df["text"] = " "
    _raises(
        lambda: load_dataset(_write(df, tmp_path / "allblank.csv")),
        r"all \d+ texts in column 'text' are blank",
    )


def test_blank_labels_are_an_error(banking: pd.DataFrame, tmp_path: Path) -> None:
    df = banking.copy()
    df.loc[[4, 9, 11], "category"] = ["", " ", ""]
    _raises(
        lambda: load_dataset(_write(df, tmp_path / "nolab.csv")),
        r"nolab\.csv: 3 rows have a blank or missing label in column 'category' \(first at data row 5\)",
    )
    df = banking.copy().astype(object)
    df.loc[2, "category"] = None
    _raises(lambda: load_dataset(_write(df, tmp_path / "null.parquet")), r"1 row has a blank or missing label")


def test_class_count_errors(banking: pd.DataFrame, tmp_path: Path) -> None:
    one = banking[banking["category"] == banking["category"][0]]
    _raises(
        lambda: load_dataset(_write(one, tmp_path / "one.csv")),
        rf"one\.csv: only one label found in column 'category': '{banking['category'][0]}' \(30\); "
        "a classifier needs at least 2",
    )
    ds, _ = load_dataset(tmp_path / "one.csv", min_classes=1)  # e.g. a single-class evaluation file
    assert len(ds.label_names) == 1

    df = banking.groupby("category").head(3).copy()
    _raises(
        lambda: load_dataset(_write(df, tmp_path / "few.csv"), min_per_class=4),
        r"few\.csv: 10 labels have fewer than 4 examples: .*\(3\).* and 5 more; each label needs at least 4",
    )
    rare = pd.concat([banking, df.iloc[[0]].assign(category="rare_intent")])
    _raises(
        lambda: load_dataset(_write(rare, tmp_path / "rare.csv"), min_per_class=2),
        r"1 label has fewer than 2 examples: 'rare_intent' \(1\)",
    )


# ---------------------------------------------------------------- warnings and report


def test_duplicate_and_conflict_warnings(banking: pd.DataFrame, tmp_path: Path) -> None:
    dup = banking.iloc[:4]
    conflict = banking.iloc[[10]].assign(category=banking["category"].iloc[-1])
    df = pd.concat([banking, dup, conflict], ignore_index=True)
    ds, report = load_dataset(_write(df, tmp_path / "dup.csv"))
    assert report.n_duplicates == 5 and report.n_conflicting_duplicates == 1
    assert len(ds) == len(df)  # duplicates are reported, not removed
    assert any("5 rows repeat an earlier text" in w for w in report.warnings)
    assert any("1 text appears with different labels" in w for w in report.warnings)


def test_imbalance_warning(banking: pd.DataFrame, tmp_path: Path) -> None:
    big = banking["category"][0]
    small = banking["category"].iloc[-1]
    head = banking[banking["category"] == big]
    df = pd.concat([head, head.assign(text=head["text"] + " please"), banking[banking["category"] == small].head(4)])
    _, report = load_dataset(_write(df, tmp_path / "imb.csv"))
    assert report.imbalance_ratio == 15.0
    assert list(report.class_counts) == [big, small]
    assert any(f"'{big}' has 60 examples but '{small}' only 4 (ratio 15.0:1)" in w for w in report.warnings)


def test_report_to_dict(banking: pd.DataFrame, tmp_path: Path) -> None:
    _, report = load_dataset(_write(banking, tmp_path / "t.parquet"))
    assert isinstance(report, DataReport)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["n_classes"] == 10 and d["format"] == "parquet" and d["imbalance_ratio"] == 1.0
    assert set(d["text_chars"]) == {"mean", "median", "p95", "max"}


# ---------------------------------------------------------------- splitting


def _rows(ds: TextDataset) -> list[tuple[str, str]]:
    return [(t, json.dumps(lab)) for t, lab in zip(ds.texts, ds.labels, strict=True)]


def test_split_is_stratified_disjoint_complete(banking: pd.DataFrame) -> None:
    ds = TextDataset(banking["text"].tolist(), banking["category"].tolist(), source="banking")
    train, val, test = split_dataset(ds, seed=1)
    assert (len(train), len(val), len(test)) == (240, 30, 30)
    for part in (train, val, test):
        assert part.label_names == ds.label_names
        assert set(part.labels) == set(ds.label_names)  # every class in every split
    assert set(val.label_counts().values()) == {3}
    all_rows = _rows(train) + _rows(val) + _rows(test)
    assert sorted(all_rows) == sorted(_rows(ds)) and len(set(all_rows)) == len(ds)


def test_split_is_deterministic_per_seed(banking: pd.DataFrame) -> None:
    ds = TextDataset(banking["text"].tolist(), banking["category"].tolist())
    first = split_dataset(ds, seed=7)
    again = split_dataset(ds, seed=7)
    other = split_dataset(ds, seed=8)
    assert [p.texts for p in first] == [p.texts for p in again]
    assert first[1].texts != other[1].texts


def test_split_sizes_zero_give_empty_parts(banking: pd.DataFrame) -> None:
    ds = TextDataset(banking["text"].tolist(), banking["category"].tolist())
    train, val, test = split_dataset(ds, val_size=0.2, test_size=0)
    assert (len(train), len(val), len(test)) == (240, 60, 0) and test.label_names == ds.label_names
    train, val, test = split_dataset(ds, val_size=0, test_size=0)
    assert (len(train), len(val), len(test)) == (300, 0, 0)
    with pytest.raises(ConfigError):
        split_dataset(ds, val_size=0.6, test_size=0.5)


def test_min_examples_per_class() -> None:
    assert min_examples_per_class(0.1, 0.1) == 3
    assert min_examples_per_class(0.1, 0) == min_examples_per_class(0, 0.1) == 2
    assert min_examples_per_class(0, 0) == 1
    assert min_examples_per_class(0.5, 0.3) > 3


def test_split_rejects_too_small_classes(banking: pd.DataFrame) -> None:
    df = pd.concat([banking, banking.iloc[:2].assign(category="tiny")])
    ds = TextDataset(df["text"].tolist(), df["category"].tolist(), source="data.csv")
    _raises(
        lambda: split_dataset(ds),
        r"data\.csv: class 'tiny' has 2 examples; "
        r"splitting into train/validation/test needs at least 3 per class",
    )
    train, val, test = split_dataset(ds, test_size=0)  # 2 examples are enough without a test split
    assert "tiny" in train.labels and len(test) == 0

    few = banking.groupby("category").head(2)
    ds = TextDataset(few["text"].tolist(), few["category"].tolist(), source="few.csv")
    _raises(
        lambda: split_dataset(ds),
        r"few\.csv: 10 classes have too few examples: .*'.*' \(2\).*at least 3 per class",
    )


def test_split_rejects_held_out_smaller_than_class_count() -> None:
    df = pd.read_csv(_data("banking77/train.csv"), dtype=str, keep_default_na=False).groupby("category").head(4)
    ds = TextDataset(df["text"].tolist(), df["category"].tolist(), source="b77.csv")
    _raises(
        lambda: split_dataset(ds),
        r"b77\.csv: cannot make a stratified test split: .*fewer than the 77 classes",
    )


def test_split_multi_label(fin: pd.DataFrame) -> None:
    names = ["bearish", "bullish", "neutral"]
    labels = [[names[v]] + (["neutral"] if i % 4 == 0 and v != 2 else []) for i, v in enumerate(fin["label"])]
    ds = TextDataset(fin["text"].tolist(), labels, multi_label=True, label_names=names)
    train, val, test = split_dataset(ds, seed=3)
    assert len(train) + len(val) + len(test) == len(ds)
    for part in (train, val, test):
        assert part.multi_label and part.label_names == names
        assert set(names) <= set(part.label_counts())
    assert [p.texts for p in split_dataset(ds, seed=3)] == [train.texts, val.texts, test.texts]


# ---------------------------------------------------------------- align_labels


def test_align_labels(banking: pd.DataFrame, tmp_path: Path) -> None:
    train, _ = load_dataset(_write(banking, tmp_path / "train.csv"))
    order = list(reversed(train.label_names))
    sub = banking[banking["category"].isin(order[:3])]
    val, _ = load_dataset(_write(sub, tmp_path / "val.csv"))
    aligned = align_labels(val, order)
    assert aligned.label_names == order and aligned.texts == val.texts
    assert (aligned.targets() >= 0).all()

    test_df = pd.read_csv(_data("banking77/test.csv"), dtype=str, keep_default_na=False).head(200)
    test, _ = load_dataset(_write(test_df, tmp_path / "test.csv"))
    message = _raises(lambda: align_labels(test, order), r"test\.csv: \d+ labels not seen in training: '")
    assert "rows)" in message
    ml = TextDataset(val.texts, [[lab] for lab in val.labels], multi_label=True, source="val.csv")
    _raises(lambda: align_labels(ml, order, multi_label=False), r"val\.csv: is multi-label but the training data")


def test_list_valued_labels_are_multi_label(clinc: pd.DataFrame, tmp_path: Path) -> None:
    df = pd.DataFrame({"query": clinc["query"], "intents": [[i, "assistant"] for i in clinc["intent"]]})
    ds, report = load_dataset(_write(df, tmp_path / "lists.jsonl"), label_col="intents")
    assert ds.multi_label and report.multi_label
    assert ds.labels[0] == [clinc["intent"][0], "assistant"]
    assert report.class_counts["assistant"] == len(df)
