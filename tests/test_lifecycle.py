"""The agent's lifecycle events: what a stop request and SIGTERM/SIGINT set."""

from __future__ import annotations

from agent.pipeline import Lifecycle


async def test_a_first_signal_stops_cleanly_and_a_second_forces() -> None:
    life = Lifecycle()

    life.signal("SIGTERM")

    assert (life.stop.is_set(), life.drain.is_set(), life.force.is_set()) == (True, True, False)
    assert life.reason == "SIGTERM"
    life.signal("SIGTERM")
    assert life.force.is_set()


async def test_a_signal_during_a_requested_drain_is_the_first_signal() -> None:
    # `tailseal drain` (an ASG lifecycle hook, a preStop hook) then the host's own SIGTERM:
    # the drain goes on to its deadline and seal; only a second signal cuts it short.
    life = Lifecycle()
    life.request("drain request")

    life.signal("SIGTERM")

    assert not life.force.is_set()
    assert life.reason == "drain request"  # the first reason wins: it goes into the seal
    life.signal("SIGINT")
    assert life.force.is_set()
