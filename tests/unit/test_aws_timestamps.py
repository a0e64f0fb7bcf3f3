"""The operator's timestamp parser for AWS responses gives botocore's instants."""

from __future__ import annotations

import datetime as dt

import botocore.utils
import pytest

from spotfleet_operator.aws import credentials


@pytest.mark.parametrize(
    "value",
    [
        "2021-05-20T12:00:00.000Z",
        "2021-05-20T12:00:00Z",
        "2021-05-20T12:00:00+02:00",
        "2021-05-20T12:00:00",
        "Thu, 20 May 2021 12:00:00 GMT",
        1621512000,
    ],
)
def test_same_instant_as_botocore(value: object) -> None:
    ours = credentials.parse_timestamp(value)
    theirs = botocore.utils.parse_timestamp(value)
    if theirs.tzinfo is None:  # botocore leaves a zone-less one naive; AWS means UTC
        theirs = theirs.replace(tzinfo=dt.UTC)
    assert ours.tzinfo is not None
    assert ours == theirs


def test_a_client_parses_with_it() -> None:
    cache = credentials.ClientCache("http://127.0.0.1:1")
    client = cache.client("ec2", "us-east-1")
    parser = client._endpoint._response_parser_factory  # what every response goes through
    ec2 = parser.create_parser("ec2")
    assert ec2._timestamp_parser is credentials.parse_timestamp
    assert isinstance(ec2._timestamp_parser("2021-05-20T12:00:00.000Z"), dt.datetime)
