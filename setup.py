"""Build hook for the optional compiled build (mypyc); without it vpmu is pure Python.

``VPMU_MYPYC=1`` compiles the checker's hot modules (the explorer, the composed system,
the ghost, the hardware and kernel models) to C extensions with mypyc, which needs mypy
(the ``test`` extra) and a C compiler. The results are identical to pure Python's
(tests/test_golden_results.py runs on whichever build is installed);
README "Performance" says how to build it and what it gains. Without ``VPMU_MYPYC``
nothing is compiled and ``pip install -e .`` needs nothing but setuptools.
"""

from __future__ import annotations

import os

from setuptools import setup

#: The modules the explorer runs for every transition (issue 15's profile). kernel/env.py stays
#: interpreted: its Observer is subclassed by interpreted code (conform's Tap), and interpreted
#: classes cannot inherit from compiled ones. For the same reason the compiled System cannot be
#: subclassed.
COMPILED = [
    "src/vpmu/frozen.py",
    "src/vpmu/hw/layout.py",
    "src/vpmu/hw/msr.py",
    "src/vpmu/hw/pmu.py",
    "src/vpmu/hw/apic.py",
    "src/vpmu/hw/virt.py",
    "src/vpmu/kernel/lang.py",
    "src/vpmu/kernel/kvm.py",
    "src/vpmu/kernel/perf.py",
    "src/vpmu/guest/isa.py",
    "src/vpmu/guest/program.py",
    "src/vpmu/check/reference.py",
    "src/vpmu/check/ghost.py",
    "src/vpmu/check/fpset.py",
    "src/vpmu/check/system.py",
    "src/vpmu/check/smp.py",
    "src/vpmu/check/explore.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("VPMU_MYPYC", "").lower() not in ("1", "true", "yes"):
        return []
    from mypyc.build import mypycify

    return list(mypycify([p for p in COMPILED if os.path.exists(p)], opt_level="3"))


setup(ext_modules=ext_modules())
