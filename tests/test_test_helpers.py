"""The suite's own helpers, where a mistake in them makes other tests fail at random."""

from __future__ import annotations

from tests.helpers import env
from tests.helpers.env import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    """Five slot ports and a serving port are picked before any is bound; two of them once came out
    equal and hal0 refused its config ("port ... is also used by slot 'embed'"). 500 picks from a
    random range would repeat one with near certainty if nothing kept track."""
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    env._HANDED_OUT.difference_update(ports)  # never bound: the rest of the run may have them


def test_a_port_range_overlaps_no_other_port_handed_out() -> None:
    lo = free_port(span=31)
    singles = [free_port() for _ in range(300)]
    assert not set(range(lo, lo + 31)) & set(singles)
    env._HANDED_OUT.difference_update([*range(lo, lo + 31), *singles])
