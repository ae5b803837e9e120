"""Logging goes to stderr only, and no secret reaches a log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crawlkeeper.logs import REDACTED, redact, register_secret, scrub, setup_logging

CANARY = "CANARY-LOG-3f8a2d"

pytestmark = pytest.mark.usefixtures("restore_logging")


def test_registered_secret_is_masked_everywhere(capfd: pytest.CaptureFixture[str]) -> None:
    setup_logging("DEBUG")
    register_secret(CANARY)
    log = logging.getLogger("crawlkeeper.test_logging")
    log.debug("plain message with %s inside", CANARY)
    log.info("in the format string itself: " + CANARY)
    log.warning("dict args %(token)s", {"token": CANARY})
    try:
        raise ValueError(f"failed with {CANARY}")
    except ValueError:
        log.exception("something broke")
    out, err = capfd.readouterr()
    assert out == ""
    assert CANARY not in err
    assert err.count(REDACTED) >= 4
    assert "plain message with *** inside" in err
    assert "ValueError: failed with ***" in err  # the traceback is there, redacted
    assert "something broke" in err


def test_third_party_loggers_and_exception_chains_are_redacted(capfd: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO")
    register_secret(CANARY)
    other = logging.getLogger("some.library")
    try:
        try:
            raise KeyError(CANARY)
        except KeyError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError:
        other.error("library error", exc_info=True)
    out, err = capfd.readouterr()
    assert out == ""
    assert "library error" in err and "KeyError" in err
    assert CANARY not in err


def test_header_and_key_value_patterns_are_masked(capfd: pytest.CaptureFixture[str]) -> None:
    setup_logging("DEBUG")
    log = logging.getLogger("crawlkeeper.test_logging")
    log.info("request headers: Authorization: Bearer xyz-unregistered-123")
    log.info("Cookie: session=abc-unregistered-456")
    log.info("config {'password': 'hunter2-unregistered', 'token': 'tok-unregistered-789'}")
    log.info("x-api-key=key-unregistered-000")
    out, err = capfd.readouterr()
    assert out == ""
    for leaked in ("xyz-unregistered-123", "abc-unregistered-456", "hunter2-unregistered", "tok-unregistered-789",
                   "key-unregistered-000"):
        assert leaked not in err
    assert "Authorization: ***" in err
    assert "Cookie: ***" in err


def test_levels_and_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    setup_logging("WARNING")
    log = logging.getLogger("crawlkeeper.test_logging")
    log.info("quiet info line")
    log.warning("loud warning line")
    print(end="")  # nothing of ours reaches stdout
    out, err = capfd.readouterr()
    assert out == ""
    assert "loud warning line" in err
    assert "quiet info line" not in err
    # calling it again replaces our handler instead of adding a second one
    setup_logging("WARNING")
    log.warning("once only")
    _, err = capfd.readouterr()
    assert err.count("once only") == 1


def test_scrub_and_redact_functions() -> None:
    register_secret(CANARY)
    register_secret("abc")  # too short to register: would redact ordinary words
    register_secret(None)
    assert scrub(f"value {CANARY}!") == "value ***!"
    assert scrub("abc def") == "abc def"
    assert redact("Authorization: Bearer zzz") == "Authorization: ***"
    assert "sekret-value" not in redact('{"value": "sekret-value"}')
    assert redact("nothing to hide here") == "nothing to hide here"


def test_crawl4ai_gets_a_logger_that_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # crawl4ai's default logger appends full URLs (query tokens included) and Playwright errors to crawler.log.
    from crawlkeeper import _crawl4ai

    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG, logger="crawlkeeper.crawl4ai")
    register_secret(CANARY)
    logger = _crawl4ai.quiet_logger()
    logger.info("fetched {url}", tag="FETCH", params={"url": "http://a.test/p?token=QUERYTOKEN"})
    logger.url_status("http://a.test/p?token=QUERYTOKEN", True, 0.25)
    logger.error_status("http://a.test/p?token=QUERYTOKEN", f"net::ERR_FAILED at http://a.test/?t=QUERYTOKEN {CANARY}")
    logger.warning("no params {here}")
    logger.verbose = True  # crawl4ai sets it per run; still nothing printed or written
    logger.success("done", tag="COMPLETE")
    assert "QUERYTOKEN" not in caplog.text and CANARY not in caplog.text
    assert "http://a.test/p" in caplog.text and "[FETCH]" in caplog.text and "no params {here}" in caplog.text
    assert list(tmp_path.rglob("*")) == []


def test_stale_crawl4ai_logs_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crawlkeeper import _crawl4ai

    monkeypatch.setenv("CRAWL4_AI_BASE_DIRECTORY", str(tmp_path))  # restored afterwards
    for name in _crawl4ai.STALE_LOGS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("http://a.test/?token=x\n")
    _crawl4ai.prepare_environment(tmp_path)
    assert not any((tmp_path / name).exists() for name in _crawl4ai.STALE_LOGS)


def test_secret_patterns_of_earlier_secret_sets_are_freed() -> None:
    # Every new secret rebuilds the pattern of all secrets; re.compile's module cache kept the last 512 of them
    # (each as large as all secrets so far): what a server that restored many sessions held for nothing.
    import gc
    import weakref

    from crawlkeeper import logs

    refs = []
    for i in range(5):
        register_secret(f"CANARY-pattern-{i}-5e1d")
        assert redact(f"x CANARY-pattern-{i}-5e1d y") == f"x {REDACTED} y"
        assert logs.scrub_secrets([f"CANARY-pattern-{i}-5e1d"]) == [REDACTED]
        refs += [weakref.ref(p) for p in logs._compiled()[:2] if p is not None]
    gc.collect()
    alive = {id(r()) for r in refs if r() is not None}
    assert len(alive) <= 2, "only the current log and result patterns may stay alive"
