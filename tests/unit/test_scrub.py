"""The scrubber: credential values shaped to slip through (line breaks, base64, split
over lines, embedded in an exception) never come out of anything the operator writes."""

from __future__ import annotations

import base64
import io
import logging

import pytest

from spotfleet_operator import scrub
from spotfleet_operator.aws import credentials

TOKEN = "IQoJb3JpZ2luX2VjEPr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD1x2y3z4example0987654321abcdefXYZ"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY9"
AKID = "AKIAZZZZSCRUBTEST001"


def fragments(value: str, n: int = 12) -> list[str]:
    return [value[i : i + n] for i in range(len(value) - n + 1)]


def leaks(text: str, *values: str) -> list[str]:
    return [f for v in values for f in fragments(v) if f in text]


@pytest.fixture
def s() -> scrub.Scrubber:
    sc = scrub.Scrubber()
    for v in (TOKEN, SECRET, AKID):
        sc.register(v)
    return sc


@pytest.mark.parametrize(
    "text",
    [
        f"HTTPClientError: Invalid header value b'{TOKEN}'",
        f"token={TOKEN[:40]}\n{TOKEN[40:]}",  # split over two lines
        f"key {SECRET} and {AKID}",
        f"base64 {base64.b64encode(SECRET.encode()).decode()}",
        f"an excerpt …{TOKEN[17:35]}… of it",
        f'{{"aws_secret_access_key": "{SECRET}"}}',
    ],
)
def test_no_fragment_survives(s: scrub.Scrubber, text: str) -> None:
    out = s.scrub(text)
    assert leaks(out, TOKEN, SECRET, AKID) == [], out
    assert scrub.REDACTED in out


def test_a_value_pasted_with_a_line_break_is_caught_line_by_line(s: scrub.Scrubber) -> None:
    pasted = TOKEN[:30] + "\n" + TOKEN[30:]
    s.register(pasted)
    out = s.scrub(f"header value {pasted!r}")
    assert leaks(out, TOKEN) == []


def test_ordinary_text_is_left_alone(s: scrub.Scrubber) -> None:
    text = "CreateFleet c5.large/us-east-1a/spot: InsufficientInstanceCapacity: try later"
    assert s.scrub(text) == text


def test_the_log_filter_scrubs_messages_arguments_and_tracebacks() -> None:
    scrub.register(TOKEN)
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test.scrub")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        scrub.install(log)
        log.debug("header %s", TOKEN)
        try:
            raise ValueError(f"Invalid header value b'{TOKEN}'")
        except ValueError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
    out = buf.getvalue()
    assert "ValueError" in out and "boom" in out
    assert leaks(out, TOKEN) == [], out
    # and the libraries that dump signed requests stay above DEBUG
    assert all(logging.getLogger(n).level >= logging.INFO for n in scrub.NOISY_LOGGERS)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("aws_session_token", TOKEN[:40] + "\n" + TOKEN[40:]),
        ("aws_secret_access_key", SECRET[:10] + " " + SECRET[10:]),
        ("aws_access_key_id", AKID + "\x00"),
    ],
)
def test_control_characters_are_refused_when_read_naming_the_key(key: str, value: str) -> None:
    data = {"aws_access_key_id": AKID, "aws_secret_access_key": SECRET, key: value}
    with pytest.raises(credentials.CredentialsError) as e:
        credentials.StaticKeys.from_secret_data(data, "team-a/aws")
    msg = str(e.value)
    assert key in msg and "team-a/aws" in msg
    assert leaks(msg, TOKEN, SECRET, AKID) == []


def test_surrounding_whitespace_is_trimmed_not_refused() -> None:
    keys = credentials.StaticKeys.from_secret_data(
        {"aws_access_key_id": AKID + "\n", "aws_secret_access_key": " " + SECRET}, "ns/s"
    )
    assert keys.access_key_id == AKID and keys.secret_access_key == SECRET
    assert AKID not in repr(keys) and SECRET not in repr(keys)
