"""The CPU thread governor follows the cores other processes leave free, and leaves a user's choice alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from hrnas.utils import threads
from hrnas.utils.signals import StopSignals
from hrnas.utils.threads import ThreadGovernor


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """A fake 4-core machine whose /proc counters the test advances: busy and own jiffies per interval."""
    state = {"busy": 0, "total": 0, "own": 0, "clock": 0.0}
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads, "_busy_and_total_jiffies", lambda: (state["busy"], state["total"]))
    monkeypatch.setattr(threads, "_own_cpu_jiffies", lambda: state["own"])
    monkeypatch.setattr(threads, "free_cores", lambda window_s=0.3: 4)
    monkeypatch.setattr(threads.time, "monotonic", lambda: state["clock"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: state.setdefault("threads", 4))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: state.__setitem__("threads", n))

    def advance(seconds: float, own_cores: float, other_cores: float) -> None:
        ticks = 100 * seconds
        state["clock"] += seconds
        state["total"] += int(4 * ticks)
        state["own"] += int(own_cores * ticks)
        state["busy"] += int((own_cores + other_cores) * ticks)

    return state, advance


def test_threads_follow_the_cores_others_leave_free(machine) -> None:
    state, advance = machine
    governor = ThreadGovernor(interval_s=2.0)
    assert governor.tick() == 4
    advance(2.0, own_cores=4, other_cores=0)
    assert governor.tick() == 4
    advance(2.0, own_cores=2, other_cores=2)  # another job took two cores
    assert governor.tick() == 2
    advance(1.0, own_cores=2, other_cores=0)  # within the interval: no re-check yet
    assert governor.tick() == 2
    advance(1.5, own_cores=2, other_cores=0)  # the other job ended
    assert governor.tick() == 4
    advance(2.0, own_cores=1, other_cores=4)  # everything busy with others: never below one thread
    assert governor.tick() == 1
    governor.restore()
    assert state["threads"] == 4


def test_user_thread_count_is_left_alone(machine, monkeypatch: pytest.MonkeyPatch) -> None:
    state, advance = machine
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    state["threads"] = 3
    governor = ThreadGovernor(interval_s=1.0)
    advance(2.0, own_cores=1, other_cores=3)
    assert governor.tick() == 3 and not governor.enabled and governor.changes == []


def test_governor_on_this_machine_keeps_a_valid_count() -> None:
    before = torch.get_num_threads()
    with ThreadGovernor(interval_s=0.0) as governor:
        assert 1 <= governor.tick() <= max(1, os.cpu_count() or 1)
    assert torch.get_num_threads() == before


def test_first_signal_is_recorded_second_acts() -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the test runner installed
    try:
        _first_signal_is_recorded_second_acts()
    finally:
        signal.signal(signal.SIGINT, previous)


def _first_signal_is_recorded_second_acts() -> None:
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.requested == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_outside_the_block_keeps_its_default() -> None:
    code = (
        "import os, signal, time\nfrom hrnas.utils.signals import StopSignals\n"
        "with StopSignals():\n    pass\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(5)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGTERM
