"""Which path carries our messages: liveness first, then the round trip, with hysteresis.

:func:`choose_active` is pure: these tests give it paths whose liveness, round trip and
openness are set by hand, at chosen instants.
"""

from __future__ import annotations

from dataclasses import dataclass

from hotline import Liveness
from hotline.driver._paths import DWELL, RTT_MARGIN_FLOOR, Path, choose_active

INTERVAL = 1.0
LONG_AGO = -1000.0


@dataclass(eq=False)
class FakePath(Path):
    state: Liveness = Liveness.UP
    srtt: float | None = 0.05
    open: bool = True

    @property
    def liveness(self) -> Liveness:
        return self.state

    @property
    def live(self) -> bool:
        return self.open

    @property
    def smoothed_rtt(self) -> float | None:
        return self.srtt


def choose(paths: list[FakePath], current: FakePath | None, *, now: float = 0.0,
           switched_at: float = LONG_AGO) -> Path | None:
    return choose_active(paths, current, now=now, switched_at=switched_at, interval=INTERVAL)


def test_first_choice_is_the_up_path_with_the_shortest_round_trip() -> None:
    slow, fast, suspect = (FakePath(1, "a", srtt=0.08), FakePath(2, "b", srtt=0.02),
                           FakePath(3, "c", state=Liveness.SUSPECT, srtt=0.001))
    assert choose([slow, fast, suspect], None) is fast


def test_a_suspect_active_path_is_left_at_once() -> None:
    active = FakePath(1, "a", state=Liveness.SUSPECT, srtt=0.01)
    standby = FakePath(2, "b", srtt=0.5)
    # Even right after a switch, and for a slower path.
    assert choose([active, standby], active, now=0.1, switched_at=0.0) is standby


def test_a_suspect_active_path_stays_when_no_path_is_up() -> None:
    active = FakePath(1, "a", state=Liveness.SUSPECT)
    other = FakePath(2, "b", state=Liveness.SUSPECT, srtt=0.001)
    assert choose([active, other], active) is active


def test_a_closed_active_path_gives_way_to_any_open_one() -> None:
    active = FakePath(1, "a", open=False)
    other = FakePath(2, "b", state=Liveness.SUSPECT)
    assert choose([active, other], active) is other
    assert choose([active], active) is None


def test_hysteresis_a_slightly_faster_path_does_not_take_over() -> None:
    active = FakePath(1, "a", srtt=0.050)
    # Faster, but by less than half of the active path's round trip.
    other = FakePath(2, "b", srtt=0.030)
    assert choose([active, other], active) is active
    # Faster by more than half: it takes over.
    other.srtt = 0.024
    assert choose([active, other], active) is other


def test_hysteresis_differences_below_the_floor_are_noise() -> None:
    active = FakePath(1, "a", srtt=0.004)
    other = FakePath(2, "b", srtt=0.0001)
    assert RTT_MARGIN_FLOOR > 0.004 - 0.0001
    assert choose([active, other], active) is active


def test_no_switch_for_a_round_trip_within_the_dwell_time() -> None:
    active = FakePath(1, "a", srtt=0.2)
    other = FakePath(2, "b", srtt=0.01)
    switched_at = 5.0
    just_before = switched_at + DWELL * INTERVAL - 0.001
    assert choose([active, other], active, now=just_before, switched_at=switched_at) is active
    at_the_end = switched_at + DWELL * INTERVAL
    assert choose([active, other], active, now=at_the_end, switched_at=switched_at) is other


def test_a_path_without_a_round_trip_yet_does_not_take_over_a_healthy_one() -> None:
    active = FakePath(1, "a", srtt=0.2)
    new = FakePath(2, "b", srtt=None)
    assert choose([active, new], active) is active
