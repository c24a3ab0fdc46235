"""Fonts for PNG charts: DejaVu Sans first, then installed CJK fonts for Chinese/Japanese/Korean labels.

Matplotlib (3.6+) falls back glyph by glyph along ``font.family``, so one call makes Latin
text look as before and CJK labels render instead of empty boxes. A chart with CJK text and no
CJK font installed gets one warning naming the Debian package to install.
"""

from __future__ import annotations

import logging
import re
import warnings
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

# Common CJK families on Linux, macOS and Windows, in order of preference.
CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Source Han Sans SC",
    "Source Han Sans CN", "PingFang SC", "Heiti SC", "Microsoft YaHei", "SimHei", "Noto Sans CJK JP",
    "AR PL UMing CN", "Droid Sans Fallback",
)  # fmt: skip
CJK_TEXT = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
INSTALL_HINT = "install a CJK font (Debian: apt-get install fonts-wqy-microhei or fonts-noto-cjk)"


@cache
def installed_cjk_families() -> tuple[str, ...]:
    """The CJK font families matplotlib can find on this machine, in preference order."""
    from matplotlib import font_manager

    names = {font.name for font in font_manager.fontManager.ttflist}
    if not names & set(CJK_FAMILIES):  # matplotlib's font cache predates a font installed since: look again
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower() for key in ("wqy", "cjk", "droidsansfallback", "sourcehan")):
                font_manager.fontManager.addfont(path)
        names = {font.name for font in font_manager.fontManager.ttflist}
    return tuple(family for family in CJK_FAMILIES if family in names)


def use_cjk_fallback(texts: list[str]) -> tuple[str, ...]:
    """Put the installed CJK families after DejaVu Sans in matplotlib's font family list; returns them.

    Warns once per process when ``texts`` (the chart's labels) hold CJK characters no installed font draws.
    """
    import matplotlib

    found = installed_cjk_families()
    # Fallback runs along font.family itself (a generic "sans-serif" resolves to one font), so list them there.
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", *found, "sans-serif"]
    if not found and any(CJK_TEXT.search(t) for t in texts):
        _warn_missing()
    return found


@cache
def _warn_missing() -> None:
    log.warning(f"warning: chart labels contain CJK text but no CJK font is installed: {INSTALL_HINT}")
    warnings.filterwarnings("ignore", message="Glyph .* missing from")
