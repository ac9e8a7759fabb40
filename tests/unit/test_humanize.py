"""Durations as the CLI's tables and the console's pages show them."""

from llmnest.humanize import duration


def test_durations_read_in_the_largest_units_that_fit() -> None:
    assert [duration(s) for s in (None, 0, 41.9, 187, 3600, 7507)] == ["-", "0s", "41s", "3m07s", "1h00m", "2h05m"]
