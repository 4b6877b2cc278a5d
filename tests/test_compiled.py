"""The compiled build (mypyc, ``VPMU_MYPYC=1``, README "Performance") gives pure Python's results.

The golden comparisons (tests/test_golden_results.py) run on whichever build is importable;
this test says which one that is, and on a compiled build runs them on the default worlds
in fingerprint mode too. Without a compiled build it is skipped.
"""

from __future__ import annotations

import pytest

import vpmu.check.explore as explore
import vpmu.check.system as system_mod
from golden_results import DEFAULT_DESIGNS
from test_golden_results import GOLDEN, _same
from vpmu.check.system import System
from vpmu.check.world import DEFAULT_WORLDS, resolve_world
from vpmu.designs import get_design

COMPILED = not explore.__file__.endswith(".py")


@pytest.mark.skipif(not COMPILED, reason="no compiled build (VPMU_MYPYC=1 python setup.py build_ext --inplace)")
def test_compiled_build_matches_golden_results() -> None:
    from golden_results import summary

    assert not system_mod.__file__.endswith(".py")
    got = {}
    for vendor in ("intel", "amd"):
        world = resolve_world(DEFAULT_WORLDS[vendor])
        for design in DEFAULT_DESIGNS:
            got[f"{design}@{world.name}"] = summary(System(get_design(design), world), fingerprint=True)
    _same(got, GOLDEN["default"])
