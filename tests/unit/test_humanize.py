from datetime import UTC, datetime, timedelta

import pytest

from api.humanize import human_bytes, human_time, table


@pytest.mark.parametrize(
    "n, text",
    [(0, "0 B"), (999, "999 B"), (1000, "1 KB"), (1500, "1.5 KB"), (98_362_432, "98 MB"),
     (2_019_393_189, "2.0 GB"), (4_661_211_424, "4.7 GB"), (12_000_000_000, "12 GB"), (10**12, "1 TB")],
)
def test_human_bytes(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    "delta, text",
    [(timedelta(0), "Less than a second ago"), (timedelta(seconds=1), "1 second ago"),
     (timedelta(seconds=30), "30 seconds ago"), (timedelta(seconds=90), "About a minute ago"),
     (timedelta(minutes=59), "59 minutes ago"), (timedelta(minutes=70), "About an hour ago"),
     (timedelta(hours=47), "47 hours ago"), (timedelta(days=3), "3 days ago"),
     (timedelta(days=20), "2 weeks ago"), (timedelta(days=90), "3 months ago"),
     (timedelta(days=800), "2 years ago"), (-timedelta(minutes=5), "5 minutes from now")],
)
def test_human_time(delta, text):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert human_time(now - delta, now=now) == text


def test_table():
    assert table(["NAME", "ID"], [["a:latest", "123"]]) == "NAME        ID\na:latest    123"
