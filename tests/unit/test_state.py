"""The service's one state: the in-flight count and its gauge together, readiness, drain."""

from __future__ import annotations

import threading

import pytest

from hndsr_service import metrics
from hndsr_service.settings import load_settings
from hndsr_service.state import ServiceState


def test_in_flight_count_and_gauge_move_together_even_on_errors() -> None:
    state = ServiceState(load_settings({}))
    gauge = metrics.ACTIVE_REQUESTS._value.get()
    with state.request_in_flight():
        assert state.in_flight == 1 and metrics.ACTIVE_REQUESTS._value.get() == gauge + 1
        with pytest.raises(RuntimeError), state.request_in_flight():
            raise RuntimeError("the request failed")
        assert state.in_flight == 1 and metrics.ACTIVE_REQUESTS._value.get() == gauge + 1
    assert state.in_flight == 0 and metrics.ACTIVE_REQUESTS._value.get() == gauge


def test_readiness_follows_the_model_and_the_drain() -> None:
    state = ServiceState(load_settings({}))
    assert not state.ready and state.alive and "loading" in state.not_ready_reason()
    state.model_ready({"bicubic": object()})  # type: ignore[dict-item]
    assert state.ready
    done = threading.Event()
    with state.request_in_flight():
        state.drain(5, done.set)
        assert not state.ready and state.draining and "draining" in state.not_ready_reason()
        assert not done.wait(0.2)  # waits for the request in flight
    assert done.wait(2)


def test_the_default_variant_must_be_loaded() -> None:
    state = ServiceState(load_settings({}))
    with pytest.raises(ValueError, match="default variant"):
        state.model_ready({"real": object()})  # type: ignore[dict-item]
    assert not state.ready


def test_a_failed_model_keeps_the_service_up_and_says_why() -> None:
    state = ServiceState(load_settings({}))
    state.model_failed("model not loaded: checksum mismatch")
    assert not state.alive and not state.ready and "checksum" in state.not_ready_reason()
    assert state.live_gauges()["hndsr_model_ready"][1] == 0.0
