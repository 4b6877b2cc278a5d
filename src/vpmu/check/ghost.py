"""Ghost state and the detection of every property in :mod:`vpmu.check.properties`.

The ghost watches from outside the machine: it is the model's
:class:`~vpmu.kernel.env.Observer`, it keeps a reference PMU for the guest
(:mod:`vpmu.check.reference`), per-event "not yet counted" tallies for host
perf, and who owns each hardware counter (host perf, the guest, nobody; by
which code last programmed its selector). A violation is written into one
state slot, so a violating state is a value like any other and the checker
stops expanding it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from vpmu.check import properties as P
from vpmu.check.reference import RefPmu
from vpmu.errors import Fault
from vpmu.hw import msr as M
from vpmu.hw.layout import Layout
from vpmu.hw.pmu import HwEvent
from vpmu.kernel import kvm, kvm_legacy, perf
from vpmu.kernel.env import KernelEnv, Observer
from vpmu.kernel.lang import Instr

NONE, HOST, GUEST = 0, 1, 2
OWNER_NAMES = ("none", "host", "guest")
KVM_FUNCS = frozenset(kvm.BUILDERS) | frozenset(kvm_legacy.KVM_BUILDERS)
PERF_FUNCS = frozenset(perf.BUILDERS)
LOADED_BY = ("kvm_mediated_pmu_load", "kvm_mediated_pmu_put")


class Ghost(Observer):
    def __init__(self, env: KernelEnv, layout: Layout, enabled: Iterable[str]) -> None:
        self.env = env
        cpu = env.cpu
        self.cpu = cpu
        self.enabled = frozenset(enabled)
        self.ref = RefPmu(cpu.cfg, env.vcpu, layout)
        self.violation = layout.field("check.violation", "ghost", fmt="int")
        self.owner_gp = layout.array("ghost.owner.PMC", cpu.cfg.num_gp, "ghost", fmt="int")
        self.owner_fixed = layout.array("ghost.owner.FIXED_CTR", cpu.cfg.num_fixed, "ghost", fmt="int")
        self.uncounted = [layout.field(f"ghost.{e.name}.uncounted", "ghost", fmt="int") for e in env.host_events]
        self.owed = [layout.field(f"ghost.{e.name}.ovf_owed", "ghost", fmt="bool") for e in env.host_events]
        # With masked_pmi = "latch", who owned the counters whose PMI the masked LVTPC latched
        # (bit HOST, bit GUEST): the PMI is routed when LVTPC is unmasked, and judged then.
        self.latched_owners = (
            layout.field("ghost.latched_pmi_owners", "ghost", fmt="int") if cpu.pmi_latched >= 0 else -1
        )
        # PERF_GLOBAL_CTRL as the vCPU task's own code (and VM transitions) left it:
        # I1 is an ordering property of that straight-line code; what interrupt
        # handlers do in between is judged by the other properties.
        self.task_gc = layout.field("ghost.task_global_ctrl", "ghost", init=cpu.gp_bits)
        self.message = ""
        #: Observations, when a simulation asks for them: (kind, what, seen, expected).
        self.journal: list[tuple[str, str, int, int]] | None = None
        self.instr: Instr | None = None
        self.context = ""
        self.loaded_window: frozenset[int] = frozenset()  # task pcs where the guest PMU is loaded
        self.task_pc = -1
        self._selectors: dict[int, int] = {}
        for i in range(cpu.cfg.num_gp):
            self._selectors[env.GP_EVENTSEL(i)] = i
            if cpu.cfg.amd and i < 4:
                self._selectors[M.MSR_K7_EVNTSEL0 + i] = i
        self.gs_read_mask = cpu.counter_bits
        self._amd = cpu.cfg.amd  # read after every step: a plain attribute, not the config's property

    # -- recording -------------------------------------------------------------------
    def fail(self, s: list[int], prop: str, msg: str) -> None:
        if prop in self.enabled and not s[self.violation]:
            s[self.violation] = P.INDEX[prop]
            self.message = msg

    def where(self) -> str:
        return self.instr.qualified if self.instr else "?"

    # -- Observer hooks -----------------------------------------------------------------
    def warn(self, s: list[int], what: str) -> None:
        self.fail(s, "no-warn", f"WARN_ON_ONCE fired at {what}")

    def guest_read(self, s: list[int], kind: str, index: int, value: int) -> None:
        ref = self.ref
        try:
            expect = ref.rdpmc(s, index) if kind == "rdpmc" else ref.rdmsr(s, index)
        except Fault as f:
            self.fail(s, "guest-transparency", f"guest {kind}({index:#x}) read {value:#x}; a native CPU faults: {f}")
            return
        ref.log.clear()
        if self.journal is None and value == expect:
            return  # the common case: no MSR name to build (issue 15's profile)
        what = f"rdpmc({index:#x})" if kind == "rdpmc" else f"rdmsr({M.msr_name(self.cpu.cfg.vendor, index)})"
        if self.journal is not None:
            self.journal.append(("guest read", what, value, expect))
        if value != expect:
            self.fail(s, "guest-transparency", f"guest {what} read {value:#x}; a native CPU shows {expect:#x}")

    def guest_write(self, s: list[int], msr: int, value: int) -> None:
        ref = self.ref
        if msr == M.MSR_X2APIC_LVTPC:
            ref.write_lvtpc(s, value)
        elif ref.has_msr(msr):
            # A write a native CPU refuses: the virtualized CPU decides what the guest sees; a read will tell.
            with contextlib.suppress(Fault):
                ref.wrmsr(s, msr, value)
            ref.log.clear()

    def guest_emulated(self, s: list[int], cpl: int, branches: int = 0) -> None:
        # A native CPU retires the instruction in guest mode; its cycles were
        # spent in the host, where the guest's counters are stopped.
        self.ref.retire(s, True, cpl, 1, branches, cycles=0)
        self.ref.log.clear()
        if (
            self.task_pc >= 0
            and s[self.task_pc] in self.loaded_window
            and kvm.counting_instructions_enabled(self.env, s)
        ):
            self.fail(
                s,
                "no-emulated-count-while-loaded",
                f"{self.where()}: KVM counted an emulated instruction in pmc->counter while the guest PMU is "
                "loaded; put will overwrite it with the hardware value",
            )

    def unknown_nmi(self, s: list[int], panic: bool) -> None:
        cpu = 0  # the vCPU's CPU
        msg = f"{self.where()}: Uhhuh. NMI received for unknown reason 00 on CPU {cpu}."
        if panic:
            msg += " Kernel panic - not syncing: NMI: Not continuing (unknown_nmi_panic)"
        else:
            msg += " Dazed and confused, but trying to continue"
        self.fail(s, "no-unknown-nmi", msg)

    def guest_pmi(self, s: list[int]) -> None:
        if self.journal is not None:
            self.journal.append(("guest PMI", "delivered", 1, s[self.ref.pmi_pending]))
        if not s[self.ref.pmi_pending]:
            self.fail(s, "guest-pmi-accounting", "the guest took a PMI that none of its counters raised")
        s[self.ref.pmi_pending] = 0

    def host_count(self, s: list[int], event: int, delta: int) -> None:
        slot = self.uncounted[event]
        if self.journal is not None:
            self.journal.append(("host count", self.env.host_events[event].name, delta, s[slot]))
        s[slot] -= delta
        if s[slot]:
            name = self.env.host_events[event].name
            ghost = s[slot] + delta
            self.fail(
                s,
                "host-isolation",
                f"host event {name!r} counted {delta} since its last read; it saw {ghost} host-mode events",
            )
            s[slot] = 0

    def host_pmi_handled(self, s: list[int], event: int) -> None:
        slot = self.owed[event]
        if not s[slot]:
            name = self.env.host_events[event].name
            self.fail(
                s,
                "host-pmi-accounting",
                f"host perf handled an overflow of {name!r} that its counter never had (a guest status bit)",
            )
        s[slot] = 0

    # -- called by the system around every step -------------------------------------------
    def guest_retired(
        self, s: list[int], ring: int, n: int, branches: int, cycles: int | None = None, ipc: int = 1
    ) -> None:
        self.ref.retire(s, True, ring, n, branches, cycles, ipc)
        self.ref.log.clear()

    def host_retired(self, s: list[int], n: int) -> None:
        env = self.env
        if not s[env.cpuc_enabled]:
            return
        for e, ev in enumerate(env.host_events):
            if s[env.ev_active[e]] and ev.event in (M.INSTRUCTIONS, M.CYCLES):
                s[self.uncounted[e]] += n

    def after_step(self, before: tuple[int, ...], s: list[int], log: list[HwEvent]) -> None:
        """Judge one transition: its hardware events, then the new state."""
        env, ins = self.env, self.instr
        overflow = 0
        prev = ""
        for kind, a, b in log:
            if kind == "wrmsr":
                self._track_owner(s, a, b)
                if a == env.PERF_GLOBAL_CTRL and self.context != "nmi" and self.context != "irq":
                    s[self.task_gc] = b
            elif kind in ("vmexit", "vmcs_load_pgc"):
                s[self.task_gc] = b if kind == "vmexit" else a
            elif kind == "lvtpc":
                path = (*ins.path, ins.function) if ins else ()  # built only here: after_step is hot
                if s[self.task_gc] and any(f in path for f in LOADED_BY):
                    self.fail(
                        s,
                        "lvtpc-written-while-enabled",
                        f"{self.where()} wrote LVTPC = {M.lvtpc_str(a)} while PERF_GLOBAL_CTRL = {s[self.task_gc]:#x}",
                    )
            elif kind == "overflow":
                overflow |= a
                for e, ev in enumerate(env.host_events):
                    if (a >> ev.counter) & 1 and s[self.owner_gp + ev.counter] == HOST and s[env.ev_active[e]]:
                        s[self.owed[e]] = 1
            elif kind == "pmi":
                owners = self._pmi_owners(s, overflow)
                if a == -1:  # LVTPC masked: dropped, or latched until it is unmasked
                    if self.latched_owners >= 0:
                        s[self.latched_owners] |= owners
                else:
                    if prev == "lvtpc" and self.latched_owners >= 0:  # the latched PMI, on unmask
                        owners |= s[self.latched_owners]
                        s[self.latched_owners] = 0
                    self._check_route(s, a, owners)
            prev = kind
        for e in range(len(env.host_events)):
            if before[env.ev_active[e]] and not s[env.ev_active[e]]:
                # perf stopped the event: its count is folded in, and an overflow not yet
                # handled loses only its sample (handle_pmi_common skips inactive counters).
                s[self.owed[e]] = 0
        if self.context == "nmi" and before[env.guest_lvtpc_loaded] and log:
            touched = [k for k, _, _ in log if k in ("rdmsr", "wrmsr", "rdpmc", "lvtpc")]
            if touched:
                self.fail(
                    s,
                    "nmi-handler-hands-off",
                    f"{self.where()} ({touched[0]}) ran in the NMI handler while guest_lvtpc_loaded",
                )
        if env.mediated_vm >= 0 and s[env.mediated_vm] and env.nr_include_guest_events(s):
            self.fail(
                s,
                "mediated-exclusive",
                f"{self.where()}: the mediated VM exists together with an include-guest core event (H14)",
            )
        self._state_invariants(s)

    def _track_owner(self, s: list[int], msr: int, value: int) -> None:
        i = self._selectors.get(msr)
        fn = self.instr.function if self.instr else ""
        if i is not None:
            if self.context.startswith("guest") or fn in KVM_FUNCS:
                s[self.owner_gp + i] = GUEST if value else NONE
            else:
                s[self.owner_gp + i] = HOST if value else NONE
        elif msr == M.MSR_CORE_PERF_FIXED_CTR_CTRL and self.cpu.cfg.intel:
            guest = self.context.startswith("guest") or fn in KVM_FUNCS
            for j in range(self.cpu.cfg.num_fixed):
                nib = (value >> (4 * j)) & 0xF
                s[self.owner_fixed + j] = (GUEST if guest else HOST) if nib else NONE

    def _pmi_owners(self, s: list[int], overflow: int) -> int:
        """Who owns the counters in ``overflow`` that raise a PMI: a bit set of HOST and GUEST."""
        cpu = self.cpu
        owners = 0
        for i in range(cpu.cfg.num_gp):
            if (overflow >> i) & 1 and s[cpu.evtsel + i] & M.EVENTSEL_INT:
                owners |= 1 << s[self.owner_gp + i]
        for j in range(cpu.cfg.num_fixed):
            if (overflow >> (M.FIXED_IDX_BASE + j)) & 1 and (s[cpu.fixed_ctr_ctrl] >> (4 * j)) & M.FIXED_PMI:
                owners |= 1 << s[self.owner_fixed + j]
        return owners

    def _check_route(self, s: list[int], route: int, owners: int) -> None:
        if route == M.PERF_GUEST_MEDIATED_PMI_VECTOR and owners >> HOST & 1:
            self.fail(
                s,
                "host-pmi-accounting",
                f"{self.where()}: a host counter overflowed and its PMI was routed to the guest vector 0xF5",
            )
        elif route == 2 and owners >> GUEST & 1 and not self.env.perf_based:  # legacy: by design
            self.fail(
                s,
                "guest-pmi-accounting",
                f"{self.where()}: a guest counter overflowed and its PMI was delivered as a host NMI",
            )

    def _state_invariants(self, s: list[int]) -> None:
        env, cpu = self.env, self.cpu
        gc = s[cpu.global_ctrl]
        lvt = s[cpu.lvtpc]
        routed = (lvt & M.APIC_DM_MASK) == M.APIC_DM_FIXED and (lvt & 0xFF) == M.PERF_GUEST_MEDIATED_PMI_VECTOR
        if bool(s[env.guest_lvtpc_loaded]) != routed and gc:
            armed = self._pmi_armed(s)
            if armed:
                self.fail(
                    s,
                    "lvtpc-route-consistent",
                    f"{self.where()}: guest_lvtpc_loaded={s[env.guest_lvtpc_loaded]} but LVTPC = {M.lvtpc_str(lvt)} "
                    f"while {armed} can raise a PMI (PERF_GLOBAL_CTRL = {gc:#x})",
                )
        if s[cpu.mode]:
            self._filter_enforced(s)
        else:
            for i in range(cpu.cfg.num_gp):
                if s[self.owner_gp + i] == GUEST and cpu.counts(s, i, False, 0) is not None:
                    self.fail(
                        s,
                        "no-guest-counting-in-host",
                        f"{self.where()}: PMC{i} holds guest selector {s[cpu.evtsel + i]:#x} and counts in host mode "
                        f"(PERF_GLOBAL_CTRL = {gc:#x})",
                    )
            for j in range(cpu.cfg.num_fixed):
                if s[self.owner_fixed + j] == GUEST and cpu.fixed_counts(s, j, 0) is not None:
                    self.fail(
                        s,
                        "no-guest-counting-in-host",
                        f"{self.where()}: FIXED_CTR{j} has guest control and counts in host mode",
                    )
        if self._amd:
            for i in range(cpu.cfg.num_gp):
                sel = s[cpu.evtsel + i]
                if (
                    s[self.owner_gp + i] == GUEST
                    and sel & M.EVENTSEL_EN
                    and (not sel & M.AMD64_EVENTSEL_GUESTONLY or sel & M.AMD64_EVENTSEL_HOSTONLY)
                ):
                    self.fail(
                        s,
                        "amd-guest-only",
                        f"{self.where()}: guest selector {sel:#x} in PerfEvtSel{i} is not GuestOnly",
                    )

    def _filter_enforced(self, s: list[int]) -> None:
        """event-filter: in guest mode, no hardware counter of the guest's is set to count a denied event."""
        env, cpu = self.env, self.cpu
        vcpu = env.vcpu
        if env.filter_slot < 0 and env.filters[0] is None:
            return
        for i in range(vcpu.num_gp):
            sel = s[cpu.evtsel + i]
            if s[self.owner_gp + i] == GUEST and not kvm.event_allowed(env, sel, s) and self._counts(s, i):
                self.fail(
                    s, "event-filter", f"{self.where()}: PMC{i} counts event {sel & 0xFF:#x}, which the filter denies"
                )
                return
        for j in range(vcpu.num_fixed):
            if not kvm.fixed_allowed(env, j, s) and any(cpu.fixed_counts(s, j, cpl) for cpl in (0, 3)):
                self.fail(s, "event-filter", f"{self.where()}: FIXED_CTR{j} counts, and the filter denies it")
                return

    def _counts(self, s: list[int], i: int) -> bool:
        return any(self.cpu.counts(s, i, True, cpl) for cpl in (0, 3))

    def _pmi_armed(self, s: list[int]) -> str:
        """A counter that counts in the current mode with its PMI enabled, or ""."""
        cpu = self.cpu
        guest = bool(s[cpu.mode])
        for i in range(cpu.cfg.num_gp):
            if s[cpu.evtsel + i] & M.EVENTSEL_INT and cpu.counts(s, i, guest, 0) is not None:
                return f"PMC{i}"
        for j in range(cpu.cfg.num_fixed):
            if (s[cpu.fixed_ctr_ctrl] >> (4 * j)) & M.FIXED_PMI and cpu.fixed_counts(s, j, 0) is not None:
                return f"FIXED_CTR{j}"
        return ""

    # -- checkpoints -------------------------------------------------------------------------
    def after_put(self, s: list[int]) -> None:
        """I5: before perf_put_guest_context re-schedules host events."""
        env, cpu = self.env, self.cpu
        bad = []
        for i in range(env.vcpu.num_gp):
            if s[cpu.pmc + i] or s[cpu.evtsel + i]:
                bad.append(f"PMC{i}={s[cpu.pmc + i]:#x}/EVTSEL{i}={s[cpu.evtsel + i]:#x}")
        for j in range(env.vcpu.num_fixed):
            if s[cpu.fixed_ctr + j]:
                bad.append(f"FIXED_CTR{j}={s[cpu.fixed_ctr + j]:#x}")
        if cpu.fixed_ctr_ctrl >= 0 and s[cpu.fixed_ctr_ctrl]:
            bad.append(f"FIXED_CTR_CTRL={s[cpu.fixed_ctr_ctrl]:#x}")
        if s[cpu.global_status] & cpu.counter_bits:
            bad.append(f"GLOBAL_STATUS={s[cpu.global_status]:#x}")
        if bad:
            self.fail(s, "clean-after-put", "guest state left in hardware after put: " + ", ".join(bad))

    def after_put_end(self, s: list[int]) -> None:
        """I5's LVTPC part, at the end of kvm_mediated_pmu_put (v5 restores it inside perf's
        context put): PMIs are routed to the host NMI again. The mask bit is not judged: a host
        PMI raised in perf's last steps auto-masks it until perf's handler acks (Intel)."""
        lvt = s[self.cpu.lvtpc]
        if lvt & M.APIC_DM_MASK != M.APIC_DM_NMI:
            self.fail(
                s, "clean-after-put", f"after put LVTPC = {M.lvtpc_str(lvt)}: PMIs still go to the guest's vector"
            )

    def after_load(self, s: list[int]) -> None:
        """I6: at the end of kvm_mediated_pmu_load."""
        env, cpu = self.env, self.cpu
        bad = []
        hw = s[cpu.global_status] & cpu.counter_bits
        if hw != s[env.pmu_global_status] & cpu.counter_bits:
            bad.append(f"GLOBAL_STATUS={hw:#x} but pmu->global_status={s[env.pmu_global_status]:#x}")
        for i in range(env.vcpu.num_gp):
            if s[cpu.evtsel + i] != s[env.pmc_eventsel_hw + i]:
                bad.append(f"EVTSEL{i}={s[cpu.evtsel + i]:#x} but eventsel_hw={s[env.pmc_eventsel_hw + i]:#x}")
        if (s[cpu.lvtpc] ^ s[env.vlvtpc]) & M.APIC_LVT_MASKED:
            bad.append(f"LVTPC={M.lvtpc_str(s[cpu.lvtpc])} but the guest's LVTPC={M.lvtpc_str(s[env.vlvtpc])}")
        if bad:
            self.fail(s, "restored-after-load", "after load: " + "; ".join(bad))

    def terminal(self, s: list[int]) -> None:
        if s[self.ref.pmi_pending]:
            self.fail(s, "guest-pmi-accounting", "a PMI the guest's own counter raised was never delivered to it")
        for e, ev in enumerate(self.env.host_events):
            if s[self.owed[e]]:
                self.fail(s, "host-pmi-accounting", f"an overflow of host event {ev.name!r} never reached host perf")
