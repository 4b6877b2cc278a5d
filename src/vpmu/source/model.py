"""The model's side of the anchors: the step order of each function of a design.

A function's labels depend on the machine (vendor hooks, unrolled counters,
the Intel PMI handler's ack placement, AMD's wait for a pending overflow with
PMI skid) and on the world (the VM's creation and destruction with ``[vm]
lifecycle``), so a design is built on the default Intel world once per ack
placement, on the default AMD world, and on the default AMD world with PMI
skid and the VM lifecycle; a kernel function must agree with every one of
those builds.
"""

from __future__ import annotations

import fnmatch
from dataclasses import replace

from vpmu.errors import VpmuError
from vpmu.kernel.lang import Design, Function, Step
from vpmu.source.anchors import CFunction

_CACHE: dict[int, tuple[Design, tuple[dict[str, Function], ...]]] = {}


def require_mediated(design: Design) -> None:
    """Refuse a design of the perf-based (legacy) vPMU: the anchors are the mediated vPMU's functions, and a
    kernel tree holds both vPMUs (the kvm_intel/kvm_amd parameter enable_mediated_pmu, off by default, picks
    one when the module loads), so its code cannot say which of them runs."""
    if design.vpmu != "mediated":
        raise VpmuError(
            f"design {design.name!r} is KVM's {design.vpmu} (perf-based) vPMU, whose steps are not anchored: the "
            f"anchors are the mediated vPMU's kernel functions, and a Linux v7.0 tree holds both vPMUs (the "
            f"kvm_intel/kvm_amd parameter enable_mediated_pmu picks one when the module loads); "
            f"run vpmu check --design {design.name}"
        )


def _builds(design: Design) -> tuple[dict[str, Function], ...]:
    hit = _CACHE.get(id(design))
    if hit is not None and hit[0] is design:
        return hit[1]
    from vpmu.check.system import System
    from vpmu.check.world import DEFAULT_WORLDS, resolve_world

    intel = resolve_world(DEFAULT_WORLDS["intel"])
    amd = resolve_world(DEFAULT_WORLDS["amd"])
    worlds = [intel, amd]
    for ack in ("early", "mid", "late"):
        if ack != intel.machine.host_ack:
            worlds.append(replace(intel, machine=replace(intel.machine, host_ack=ack)))
    # amd_pmu_v2_disable_all()'s wait (amd_pmu_check_overflow) exists only with PMI skid; vcpu_run's
    # kvm_arch_vcpu_precreate/kvm_destroy_vm steps only with the VM lifecycle.
    worlds.append(replace(amd, machine=replace(amd.machine, pmi_skid=1), lifecycle=True))
    builds: list[dict[str, Function]] = []
    errors: list[VpmuError] = []
    for w in worlds:
        try:
            builds.append(System(design, w).functions)
        except VpmuError as e:  # an edit of a step only some worlds have (no-mediated-exclusion)
            errors.append(e)
            builds.append({})
    if len(errors) == len(worlds):
        raise errors[0]
    _CACHE[id(design)] = (design, tuple(builds))
    return tuple(builds)


def label_orders(design: Design, model: str) -> list[list[str]]:
    """The step labels of ``model`` in each build that has it."""
    return [fns[model].labels() for fns in _builds(design) if model in fns]


def key_of(cf: CFunction, label: str) -> str | None:
    """The anchor step (a label or glob) of ``cf`` that stands for ``label``."""
    for st in cf.body:
        if st.step and (st.step == label or fnmatch.fnmatchcase(label, st.step)):
            return st.step
    return None


def key_orders(design: Design, cf: CFunction) -> list[list[str]]:
    """Per build, the anchor steps of ``cf`` in the design's order (first occurrence of each)."""
    out = []
    for labels in label_orders(design, cf.model):
        seq: list[str] = []
        for label in labels:
            k = key_of(cf, label)
            if k is not None and k not in seq:
                seq.append(k)
        out.append(seq)
    return out


def _upstream() -> Design:
    from vpmu.designs import UPSTREAM

    return UPSTREAM


def lineage(design: Design) -> tuple[str, ...]:
    """The design's name and its bases' names (a design derived from ``linux-next`` has its C forms)."""
    from vpmu.designs import DESIGNS

    names = [design.name]
    base = design.base
    while base and base not in names:
        names.append(base)
        base = DESIGNS[base].base if base in DESIGNS else ""
    return tuple(names)


def mentioned(design: Design, model_fn: str, key: str) -> bool:
    """Does the anchors table know a C form of ``key`` specific to ``design`` or a base (only/unless)?"""
    from vpmu.source.anchors import FUNCTIONS

    names = set(lineage(design))
    return any(
        st.step == key and names & set(st.only + st.unless)
        for cf in FUNCTIONS
        if cf.model == model_fn
        for st in cf.body
    )


def changed_keys(design: Design, cf: CFunction) -> set[str]:
    """Anchor steps whose step the design replaced (its text differs from upstream's) and whose
    C the anchors do not know for that design: their upstream statements do not stand for them."""
    if design.name == "upstream":
        return set()
    out = set()
    for ups, fns in zip(_builds(_upstream()), _builds(design), strict=True):
        if cf.model not in fns or cf.model not in ups:
            continue
        up = {label: st.listing() for label, st in _steps(ups[cf.model])}
        for label, st in _steps(fns[cf.model]):
            k = key_of(cf, label)
            if k is not None and label in up and up[label] != st.listing() and not mentioned(design, cf.model, k):
                out.add(k)
    return out


def _steps(fn: Function) -> list[tuple[str, Step]]:
    return [(s.label, s) for s in fn.steps]


def present_keys(design: Design, cf: CFunction) -> set[str]:
    """The anchor steps of ``cf`` the design has in some build, as the anchored C has them."""
    return {k for seq in key_orders(design, cf) for k in seq} - changed_keys(design, cf)


def unanchored_labels(design: Design) -> list[str]:
    """``function:label`` of every step of the design that stands for no anchored statement and is not
    listed in :data:`~vpmu.source.anchors.NOT_C` (an inserted step with no C form, say)."""
    from vpmu.source.anchors import COMPOSITE, NOT_C, by_model

    anchored = by_model()
    out: list[str] = []
    for fns in _builds(design):
        for name, fn in fns.items():
            if name in COMPOSITE or name not in design.builders:  # guest code has no kernel source
                continue
            cfs = anchored.get(name, [])
            for label in fn.labels():
                if any(key_of(cf, label) for cf in cfs):
                    continue
                if any(fnmatch.fnmatchcase(label, pat) for pat in NOT_C.get(name, {})):
                    continue
                item = f"{name}:{label}"
                if item not in out:
                    out.append(item)
    return out


def outside_changes(a: Design, b: Design) -> list[str]:
    """``function:label`` of steps listed in NOT_C (their code is not in an anchored function) that ``b``
    adds, deletes or changes relative to ``a``: ``vpmu diff --c`` cannot show them."""
    from vpmu.source.anchors import NOT_C

    out: list[str] = []
    for fa, fb in zip(_builds(a), _builds(b), strict=True):
        for name, pats in NOT_C.items():
            sa = {x.label: x.listing() for x in fa[name].steps} if name in fa else {}
            sb = {x.label: x.listing() for x in fb[name].steps} if name in fb else {}
            for label in sorted(set(sa) | set(sb)):
                if any(fnmatch.fnmatchcase(label, p) for p in pats) and sa.get(label) != sb.get(label):
                    item = f"{name}:{label}"
                    if item not in out:
                        out.append(item)
    return out
