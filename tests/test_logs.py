"""The library does not print: messages go through logging under ``slm``; the CLI shows them on stderr."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import slm
from slm.logs import DONE, HEADING, CliHandler, attach_cli_handler, cli_level, detach_cli_handler, progress_lines


@pytest.fixture
def library_logging() -> Iterator[logging.Logger]:
    """The ``slm`` logger as a program that imports slm finds it: no CLI handler (an earlier CLI test in this
    process may have attached one), level unset; restored afterwards."""
    logger = logging.getLogger("slm")
    handlers, level = list(logger.handlers), logger.level
    logger.handlers[:] = [h for h in handlers if not isinstance(h, CliHandler)]
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def _root_state() -> tuple[list[logging.Handler], int]:
    root = logging.getLogger()
    return list(root.handlers), root.level


def test_a_program_that_configures_no_logging_sees_nothing(library_logging, capfd) -> None:
    before = _root_state()
    assert any(isinstance(h, logging.NullHandler) for h in library_logging.handlers)
    logging.getLogger("slm.fileio").warning("moved x aside")  # would reach the last-resort handler without it
    logging.getLogger("slm.training.run").info("bundle written: x")
    assert capfd.readouterr() == ("", "")
    assert _root_state() == before


def test_the_cli_handler_prints_each_message_as_one_line_on_stderr(library_logging, capfd) -> None:
    before = _root_state()
    attach_cli_handler()
    attach_cli_handler()  # idempotent: every CLI invocation in one process calls it
    try:
        assert sum(isinstance(h, CliHandler) for h in library_logging.handlers) == 1
        assert cli_level() == logging.INFO
        log = logging.getLogger("slm.training.run")
        log.info("data: 3 labels [a, b]", extra=HEADING)  # brackets are text, not Rich markup
        log.warning("note: the ensemble does not beat the transformer")
        log.info("bundle written: out", extra=DONE)
        log.debug("not shown at INFO")
        out, err = capfd.readouterr()
        assert out == ""
        assert err.splitlines() == [
            "data: 3 labels [a, b]",
            "note: the ensemble does not beat the transformer",
            "bundle written: out",
        ]
        assert _root_state() == before  # the slm logger only
    finally:
        detach_cli_handler()
    assert cli_level() is None and library_logging.level == logging.NOTSET


def test_progress_lines_are_left_out_unless_progress_was_asked_for(library_logging, caplog) -> None:
    log = logging.getLogger("slm.compression.static")
    with caplog.at_level(logging.INFO, logger="slm"):
        progress_lines(log, False)("static: distilling")
        progress_lines(log, True)("static: teacher probabilities")
    assert [r.getMessage() for r in caplog.records] == ["static: teacher probabilities"]


def test_machine_info_has_every_field_the_reports_record() -> None:
    from slm.hardware import load_average, machine_info

    info = machine_info(packages=("numpy", "not-a-package-slm"))
    assert set(info) == {"cpu", "cpu_count", "python", "platform", "load_average", "threads", "versions"}
    assert set(info["cpu"]) == {"model", "logical_cpus", "flags"} and isinstance(info["cpu"]["flags"], list)
    assert info["versions"]["numpy"] and info["versions"]["not-a-package-slm"] is None
    load = load_average()
    assert load is None or (len(load) == 3 and all(round(x, 2) == x for x in load))


@pytest.mark.slow
def test_train_without_progress_writes_nothing_and_leaves_the_root_logger_alone(
    banking_csv: Path, tmp_path: Path, library_logging, capfd
) -> None:
    from slm.training.config import TrainConfig

    before = _root_state()
    capfd.readouterr()
    bundle = slm.train(
        banking_csv,
        output=tmp_path / "quiet",
        config=TrainConfig(epochs=1, batch_size=16, max_length=32, seed=7),
        show_progress=False,
    )
    out, err = capfd.readouterr()
    assert bundle is not None and (tmp_path / "quiet" / "manifest.json").is_file()
    assert out == "" and err == "", f"stdout {out!r}, stderr {err!r}"
    assert _root_state() == before
    assert library_logging.level == logging.NOTSET
