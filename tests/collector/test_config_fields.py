"""Collector settings added for limits and stream states: defaults and validation."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import parse_collector_config
from agent.errors import ConfigError


def test_defaults_are_unlimited_rate_and_documented_timeouts() -> None:
    config = parse_collector_config({"tokens": [{"name": "a", "token": "s"}]}, environ={})

    assert (config.body_timeout, config.silent_after, config.reorder_wait) == (30.0, 300.0, 2.0)
    assert (config.tokens[0].rate_limit_batches_per_second, config.tokens[0].burst) == (0.0, 0)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"body_timeout": 0}, "body_timeout"),
        ({"silent_after": -1}, "silent_after"),
        ({"reorder_wait": -0.5}, "reorder_wait"),
        ({"reorder_wait": "soon"}, "reorder_wait"),
        ({"reorder_wait": 61}, "reorder_wait"),
        ({"reorder_wait": float("nan")}, "reorder_wait"),
        (
            {"tokens": [{"name": "a", "token": "s", "rate_limit_batches_per_second": -2}]},
            "tokens[0].rate_limit_batches_per_second",
        ),
        ({"tokens": [{"name": "a", "token": "s", "burst": -1}]}, "tokens[0].burst"),
    ],
)
def test_invalid_limit_is_an_error_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_collector_config(data, environ={})

    assert caught.value.field == field
