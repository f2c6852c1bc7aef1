"""``gc_paused``: the cyclic collector is off inside and as it was after, also
after an error (ingest, classify and report run inside it)."""

from __future__ import annotations

import gc

import pytest

from celltrials.runtime import gc_paused

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_restores_the_collector(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(ValueError), gc_paused():
            raise ValueError("inside")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
