"""The core PMU of one physical CPU: registers, MSR side effects, counting.

Facts: x86-pmu-hardware.md §1 (Intel) and §3 (AMD). Every rule cites its
fact id. All operations act on a mutable state list ``s`` in the layout the
PMU registered; they never keep state of their own, except :attr:`log`, the
list of architectural events of the step in progress (read by the checker's
properties and the trace writer, cleared before each step).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from vpmu.config import MachineConfig
from vpmu.errors import Fault
from vpmu.hw import msr as M
from vpmu.hw.layout import Layout

Reader = Callable[[list[int]], int]
Writer = Callable[[list[int], int], None]

#: One architectural event the hardware reports to observers (properties, traces).
HwEvent = tuple[str, int, int]


def _mask(width: int) -> int:
    return (1 << width) - 1


class Pmu(ABC):
    """Counters, selectors, global registers and their side effects."""

    def __init__(self, cfg: MachineConfig, layout: Layout, prefix: str = "", owner: str = "hw") -> None:
        self.cfg = cfg
        self.layout = layout
        self.log: list[HwEvent] = []
        n, m = cfg.num_gp, cfg.num_fixed
        self.gp_mask = _mask(cfg.gp_width)
        self.fixed_mask = _mask(cfg.fixed_width)
        self.gp_bits = _mask(n)
        self.fixed_bits = _mask(m) << M.FIXED_IDX_BASE
        self.counter_bits = self.gp_bits | self.fixed_bits
        L, p, o = layout, prefix, owner
        self.pmc = L.array(f"{p}PMC", n, o)
        self.evtsel = L.array(f"{p}EVTSEL", n, o)
        self.fixed_ctr = L.array(f"{p}FIXED_CTR", m, o)
        self.fixed_ctr_ctrl = L.field(f"{p}FIXED_CTR_CTRL", o) if m else -1
        # Power-up value: GP enable bits set (F-1.5.7, F-3.6.1).
        self.global_ctrl = L.field(f"{p}GLOBAL_CTRL", o, init=self.gp_bits) if cfg.has_global_regs else -1
        self.global_status = L.field(f"{p}GLOBAL_STATUS", o) if cfg.has_global_regs else -1
        self.debugctl = L.field(f"{p}DEBUGCTL", o)
        self.events = M.INTEL_EVENTS if cfg.intel else M.AMD_EVENTS
        self._amd = cfg.amd  # read on every count: a plain attribute, not the config's property
        self._readers: dict[int, Reader] = {}
        self._writers: dict[int, Writer] = {}
        if cfg.intel:
            self._intel_msrs()
        else:
            self._amd_msrs()

    # -- what the layers above provide: where a PMI goes, which mode the CPU is in ----
    @abstractmethod
    def lvtpc_signal(self, s: list[int]) -> None:
        """A PMI request reaches the local APIC (the Apic layer; the reference's own LVTPC)."""

    @abstractmethod
    def guest_mode(self, s: list[int]) -> bool:
        """VMX non-root / SVM guest mode."""

    @abstractmethod
    def svme(self, s: list[int]) -> bool:
        """EFER.SVME (AMD Host/GuestOnly filtering, F-3.4)."""

    # -- MSR access ------------------------------------------------------------
    def has_msr(self, msr: int) -> bool:
        return msr in self._readers or msr in self._writers

    def rdmsr(self, s: list[int], msr: int) -> int:
        """RDMSR; #GP for an MSR this CPU does not have (F-1.3, F-3.2)."""
        reader = self._readers.get(msr)
        if reader is None:
            if msr in self._writers:
                return 0  # write-only registers read as 0 (F-1.7.5, F-1.7.8)
            raise Fault("#GP", f"RDMSR {M.msr_name(self.cfg.vendor, msr)}: no such MSR")
        value = reader(s)
        self.log.append(("rdmsr", msr, value))
        return value

    def wrmsr(self, s: list[int], msr: int, value: int) -> None:
        """WRMSR with its architectural side effects; #GP as the manuals say."""
        writer = self._writers.get(msr)
        # The MSR's name only for the fault message: naming it on every write costs the checker time.
        if writer is None:
            what = "read-only" if msr in self._readers else "no such MSR"
            raise Fault("#GP", f"WRMSR {M.msr_name(self.cfg.vendor, msr)} <- {value:#x}: {what}")
        if not 0 <= value < 1 << 64:
            raise Fault("#GP", f"WRMSR {M.msr_name(self.cfg.vendor, msr)} <- {value:#x}: not a 64-bit value")
        writer(s, value)
        self.log.append(("wrmsr", msr, value))

    def rdpmc(self, s: list[int], ecx: int) -> int:
        """RDPMC (F-1.11.1-F-1.11.2); CR4.PCE is taken as set."""
        if self.cfg.intel:
            fast = ecx & M.RDPMC_FAST
            if fast and self.cfg.rdpmc_fast == "gp":
                raise Fault("#GP", f"RDPMC {ecx:#x}: fast read on an architectural PMU (F-1.11.2)")
            idx = ecx & 0x3FFFFFFF & ~M.RDPMC_FIXED
            if ecx & M.RDPMC_FIXED:
                if idx >= self.cfg.num_fixed:
                    raise Fault("#GP", f"RDPMC {ecx:#x}: no fixed counter {idx}")
                value = s[self.fixed_ctr + idx]
            else:
                if idx >= self.cfg.num_gp:
                    raise Fault("#GP", f"RDPMC {ecx:#x}: no GP counter {idx}")
                value = s[self.pmc + idx]
            if fast:
                value &= 0xFFFFFFFF
        else:
            if ecx >= self.cfg.num_gp:
                raise Fault("#GP", f"RDPMC {ecx:#x}: no counter {ecx}")
            value = s[self.pmc + ecx]
        self.log.append(("rdpmc", ecx, value))
        return value

    # -- Intel MSR table (F-1.3, F-1.5, F-1.6, F-1.7) --------------------------
    def _intel_msrs(self) -> None:
        cfg, R, W = self.cfg, self._readers, self._writers
        ver = int(cfg.pmu_version)
        for i in range(cfg.num_gp):
            ctr, sel = self.pmc + i, self.evtsel + i
            R[M.MSR_IA32_PERFCTR0 + i] = self._get(ctr)
            W[M.MSR_IA32_PERFCTR0 + i] = self._legacy_ctr_write(ctr)
            if cfg.full_width_writes:
                R[M.MSR_IA32_PMC0 + i] = self._get(ctr)
                W[M.MSR_IA32_PMC0 + i] = self._full_width_write(ctr, self.gp_mask, "IA32_PMC")
            R[M.MSR_P6_EVNTSEL0 + i] = self._get(sel)
            # ANY (bit 21) exists from v3 (F-1.1.3); bits 32+ (TSX, adaptive
            # PEBS, v6 fields) are outside this model and therefore reserved.
            allowed = 0xFFFFFFFF if ver >= 3 else 0xFFFFFFFF & ~M.EVENTSEL_ANY
            W[M.MSR_P6_EVNTSEL0 + i] = self._checked_write(sel, allowed, "IA32_PERFEVTSEL")
        for j in range(cfg.num_fixed):
            ctr = self.fixed_ctr + j
            R[M.MSR_CORE_PERF_FIXED_CTR0 + j] = self._get(ctr)
            if cfg.fixed_high_bits == "gp":
                W[M.MSR_CORE_PERF_FIXED_CTR0 + j] = self._full_width_write(ctr, self.fixed_mask, "IA32_FIXED_CTR")
            else:
                W[M.MSR_CORE_PERF_FIXED_CTR0 + j] = self._truncating_write(ctr, self.fixed_mask)
        if cfg.num_fixed:
            nib = M.FIXED_OS | M.FIXED_USR | M.FIXED_PMI | (M.FIXED_ANY if ver >= 3 else 0)
            allowed = sum(nib << (4 * j) for j in range(cfg.num_fixed))
            R[M.MSR_CORE_PERF_FIXED_CTR_CTRL] = self._get(self.fixed_ctr_ctrl)
            W[M.MSR_CORE_PERF_FIXED_CTR_CTRL] = self._checked_write(self.fixed_ctr_ctrl, allowed, "IA32_FIXED_CTR_CTRL")
        if ver >= 2:
            R[M.MSR_CORE_PERF_GLOBAL_STATUS] = self._get(self.global_status)
            R[M.MSR_CORE_PERF_GLOBAL_CTRL] = self._get(self.global_ctrl)
            W[M.MSR_CORE_PERF_GLOBAL_CTRL] = self._checked_write(
                self.global_ctrl, self.counter_bits, "IA32_PERF_GLOBAL_CTRL"
            )
            clearable = self.counter_bits | M.STATUS_OVF_BUF | M.STATUS_COND_CHGD
            if ver >= 3:
                clearable |= M.STATUS_OVF_UNCORE
            if ver >= 4:
                clearable |= M.STATUS_LBR_FRZ | M.STATUS_CTR_FRZ | M.STATUS_ASCI
                # Trace_ToPA_PMI (55) is clearable (F-1.7.5); STATUS_SET can set it.
                clearable |= 1 << 55
            W[M.MSR_CORE_PERF_GLOBAL_OVF_CTRL] = self._status_clear(clearable, "OVF_CTRL")
        if ver >= 4:
            settable = (
                self.counter_bits
                | M.STATUS_LBR_FRZ
                | M.STATUS_CTR_FRZ
                | M.STATUS_ASCI
                | M.STATUS_OVF_UNCORE
                | M.STATUS_OVF_BUF
                | (1 << 55)
            )
            W[M.MSR_CORE_PERF_GLOBAL_STATUS_SET] = self._status_set(settable, "STATUS_SET")
            R[M.MSR_CORE_PERF_GLOBAL_INUSE] = self._inuse
        # PERF_CAPABILITIES exists with PDCM; modelled as present from v2 (F-1.2.6).
        if ver >= 2:
            caps = M.PERF_CAP_FW_WRITE if cfg.full_width_writes else 0
            R[M.MSR_IA32_PERF_CAPABILITIES] = lambda s: caps
        R[M.MSR_IA32_DEBUGCTLMSR] = self._get(self.debugctl)
        W[M.MSR_IA32_DEBUGCTLMSR] = self._checked_write(self.debugctl, 0xFFFF, "IA32_DEBUGCTL")

    # -- AMD MSR table (F-3.2, F-3.3, F-3.6) -----------------------------------
    def _amd_msrs(self) -> None:
        cfg, R, W = self.cfg, self._readers, self._writers
        allowed = (
            0xFFFFFFFF & ~(M.EVENTSEL_PIN | M.EVENTSEL_ANY)
            | M.AMD64_EVENTSEL_EVENT_HI
            | M.AMD64_EVENTSEL_GUESTONLY
            | M.AMD64_EVENTSEL_HOSTONLY
        )
        for i in range(cfg.num_gp):
            ctr, sel = self.pmc + i, self.evtsel + i
            ctr_write = self._truncating_write(ctr, self.gp_mask)  # F-3.5.6
            sel_write = self._checked_write(sel, allowed, "PerfEvtSel")
            if i < 4:  # legacy K7 addresses alias counters 0-3 (F-3.2.1)
                R[M.MSR_K7_EVNTSEL0 + i] = self._get(sel)
                W[M.MSR_K7_EVNTSEL0 + i] = sel_write
                R[M.MSR_K7_PERFCTR0 + i] = self._get(ctr)
                W[M.MSR_K7_PERFCTR0 + i] = ctr_write
            if cfg.pmu_version != "legacy":
                R[M.MSR_F15H_PERF_CTL0 + 2 * i] = self._get(sel)
                W[M.MSR_F15H_PERF_CTL0 + 2 * i] = sel_write
                R[M.MSR_F15H_PERF_CTR0 + 2 * i] = self._get(ctr)
                W[M.MSR_F15H_PERF_CTR0 + 2 * i] = ctr_write
        if cfg.pmu_version == "perfmonv2":
            R[M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS] = self._get(self.global_status)
            R[M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL] = self._get(self.global_ctrl)
            W[M.MSR_AMD64_PERF_CNTR_GLOBAL_CTL] = self._checked_write(
                self.global_ctrl, self.gp_bits, "PerfCntrGlobalCtl"
            )
            status_bits = self.gp_bits | M.STATUS_LBR_FRZ | M.STATUS_CTR_FRZ  # F-3.6.2
            W[M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_CLR] = self._status_clear(status_bits, "StatusClr")
            W[M.MSR_AMD64_PERF_CNTR_GLOBAL_STATUS_SET] = self._status_set(status_bits, "StatusSet")
        R[M.MSR_IA32_DEBUGCTLMSR] = self._get(self.debugctl)
        W[M.MSR_IA32_DEBUGCTLMSR] = self._checked_write(self.debugctl, 0xFFFF, "DebugCtl")

    # -- register behaviours ------------------------------------------------------
    @staticmethod
    def _get(i: int) -> Reader:
        return lambda s: s[i]

    def _legacy_ctr_write(self, i: int) -> Writer:
        mask = self.gp_mask

        def write(s: list[int], v: int) -> None:
            # Only EAX counts; it is sign-extended to the width (F-1.5.2).
            lo = v & 0xFFFFFFFF
            if lo & 0x80000000:
                lo -= 1 << 32
            s[i] = lo & mask

        return write

    def _full_width_write(self, i: int, mask: int, what: str) -> Writer:
        def write(s: list[int], v: int) -> None:
            if v & ~mask:  # F-1.5.3, F-1.5.5
                raise Fault("#GP", f"WRMSR {what} <- {v:#x}: wider than the counter ({mask:#x})")
            s[i] = v

        return write

    @staticmethod
    def _truncating_write(i: int, mask: int) -> Writer:
        def write(s: list[int], v: int) -> None:
            s[i] = v & mask

        return write

    @staticmethod
    def _checked_write(i: int, allowed: int, what: str) -> Writer:
        def write(s: list[int], v: int) -> None:
            if v & ~allowed:
                raise Fault("#GP", f"WRMSR {what} <- {v:#x}: reserved bits {v & ~allowed:#x}")
            s[i] = v

        return write

    def _status_clear(self, allowed: int, what: str) -> Writer:
        st = self.global_status

        def write(s: list[int], v: int) -> None:
            if v & ~allowed:  # F-1.7.5, F-3.6.3
                raise Fault("#GP", f"WRMSR {what} <- {v:#x}: reserved bits {v & ~allowed:#x}")
            s[st] &= ~v

        return write

    def _status_set(self, allowed: int, what: str) -> Writer:
        st = self.global_status
        counter_bits = self.counter_bits
        raises = self.cfg.status_set_raises_pmi

        def write(s: list[int], v: int) -> None:
            if v & ~allowed:  # F-1.7.7 (CondChgd not settable), F-3.6.4
                raise Fault("#GP", f"WRMSR {what} <- {v:#x}: reserved bits {v & ~allowed:#x}")
            s[st] |= v
            # No overflow side effects (F-3.6.5; Intel open point 2).
            if raises and v & counter_bits:
                self.raise_pmi(s)

        return write

    def _inuse(self, s: list[int]) -> int:
        """IA32_PERF_GLOBAL_INUSE, derived (F-1.7.9)."""
        v = 0
        pmi = False
        for i in range(self.cfg.num_gp):
            sel = s[self.evtsel + i]
            if sel & M.EVENTSEL_EVENT:
                v |= 1 << i
            pmi |= bool(sel & M.EVENTSEL_INT)
        if self.cfg.num_fixed:
            fcc = s[self.fixed_ctr_ctrl]
            for j in range(self.cfg.num_fixed):
                nib = (fcc >> (4 * j)) & 0xF
                if nib & (M.FIXED_OS | M.FIXED_USR):
                    v |= 1 << (M.FIXED_IDX_BASE + j)
                pmi |= bool(nib & M.FIXED_PMI)
        return v | (1 << 63 if pmi else 0)

    # -- counting (F-1.7.2, F-1.8, F-3.4, F-3.5) --------------------------------
    def counts(self, s: list[int], i: int, guest: bool, cpl: int) -> str | None:
        """The event stream GP counter ``i`` counts right now, or None if it is stopped."""
        sel = s[self.evtsel + i]
        if not sel & M.EVENTSEL_EN:
            return None
        cfg = self.cfg
        if self.global_ctrl >= 0 and not (s[self.global_ctrl] >> i) & 1:
            return None
        if self.global_status >= 0 and s[self.global_status] & M.STATUS_CTR_FRZ:
            return None  # v4 CTR_Frz / AMD PMCF (F-1.7.2, F-3.5.1)
        if not sel & (M.EVENTSEL_OS if cpl == 0 else M.EVENTSEL_USR):
            return None
        if self._amd:
            go = sel & M.AMD64_EVENTSEL_GUESTONLY
            ho = sel & M.AMD64_EVENTSEL_HOSTONLY
            if self.svme(s):  # F-3.4, table "Host/Guest Only Bits"
                if go and not ho and not guest:
                    return None
                if ho and not go and guest:
                    return None
            elif cfg.svme_off_filter == "linux":  # F-3.4.1 (open point 6)
                if go or ho:
                    return None
            elif go and not ho:
                return None
            event = (sel & 0xFF) | ((sel >> 24) & 0xF00)
        else:
            event = sel & 0xFF
        return self.events.get((event, (sel >> 8) & 0xFF))

    def fixed_counts(self, s: list[int], j: int, cpl: int) -> str | None:
        """The event stream fixed counter ``j`` counts right now (F-1.6, F-1.7.2)."""
        nib = (s[self.fixed_ctr_ctrl] >> (4 * j)) & 0xF
        if not nib & (M.FIXED_OS if cpl == 0 else M.FIXED_USR):
            return None
        if not (s[self.global_ctrl] >> (M.FIXED_IDX_BASE + j)) & 1:
            return None
        if s[self.global_status] & M.STATUS_CTR_FRZ:
            return None
        return M.FIXED_EVENTS[j]

    def retire(
        self,
        s: list[int],
        guest: bool,
        cpl: int,
        instructions: int = 1,
        branches: int = 0,
        cycles: int | None = None,
        ipc: int = 1,
    ) -> None:
        """Retire instructions (one core cycle each) in a mode and ring.

        Every counter that counts the event in this mode advances; a wrap sets
        its status bit whether or not INT is set (F-1.7.3, F-3.5.3) and, with
        INT, requests one PMI for all simultaneous overflows (F-1.8.4).
        Retiring N at once equals N single retirements as long as no counter
        with INT wraps inside the batch (callers split batches there, see
        :meth:`units_until_pmi`). ``cycles`` defaults to one per instruction;
        ``ipc`` > 1: the instructions come from a loop retiring that many per cycle,
        and ``cycles`` is the number of its cycles that ended in this batch.
        """
        if cycles is None:
            cycles = instructions
        amount = {M.INSTRUCTIONS: instructions, M.CYCLES: cycles, M.BRANCHES: branches}
        pmi = False
        overflow = 0
        for i in range(self.cfg.num_gp):
            stream = self.counts(s, i, guest, cpl)
            if stream is None:
                continue
            inc = self._apply_cmask(s[self.evtsel + i], amount[stream], cycles, ipc if stream == M.INSTRUCTIONS else 0)
            if not inc:
                continue
            v = s[self.pmc + i] + inc
            if v > self.gp_mask:
                overflow |= 1 << i
                pmi |= bool(s[self.evtsel + i] & M.EVENTSEL_INT)
                v &= self.gp_mask
            s[self.pmc + i] = v
        for j in range(self.cfg.num_fixed):
            stream = self.fixed_counts(s, j, cpl)
            if stream is None:
                continue
            v = s[self.fixed_ctr + j] + amount[stream]
            if v > self.fixed_mask:
                overflow |= 1 << (M.FIXED_IDX_BASE + j)
                pmi |= bool((s[self.fixed_ctr_ctrl] >> (4 * j)) & M.FIXED_PMI)
                v &= self.fixed_mask
            s[self.fixed_ctr + j] = v
        if overflow:
            if self.global_status >= 0:
                s[self.global_status] |= overflow
            self.log.append(("overflow", overflow, 1 if guest else 0))
            if pmi:
                self.raise_pmi(s)

    @staticmethod
    def _apply_cmask(sel: int, occurrences: int, cycles: int, per_cycle: int = 0) -> int:
        """CMASK/INV threshold per cycle (F-1.4.1, F-3.3.2).

        ``per_cycle`` > 0: every cycle of the batch had exactly that many occurrences
        (instructions of a loop with ``ipc=K``; a cycle counts in the batch it ends in,
        so a VM-exit between two instructions of one cycle does not split it).
        Otherwise occurrences are spread as evenly as possible over the batch's cycles
        (``q`` or ``q + 1`` each; at most one per cycle when there are more cycles than
        occurrences). With CMASK=k the cycles that qualify are those whose count is
        >= k (< k with INV); an emulated instruction (no cycles) is one cycle of 1.
        EDGE is not modelled (docs/fidelity.md).
        """
        cmask = (sel >> 24) & 0xFF
        if not cmask:
            return occurrences
        if per_cycle:
            at_least = cycles if cmask <= per_cycle else 0
            return cycles - at_least if sel & M.EVENTSEL_INV else at_least
        slots = cycles if cycles else occurrences
        q, r = divmod(occurrences, slots) if slots else (0, 0)
        at_least = slots if cmask <= q else r if cmask == q + 1 else 0
        return slots - at_least if sel & M.EVENTSEL_INV else at_least

    def units_until_pmi(self, s: list[int], guest: bool, cpl: int, instructions: int, branches: int) -> int | None:
        """How many units of (instructions, branches) retire up to and including
        the first one that wraps a counter with PMI enabled; None if none will."""
        amount = {M.INSTRUCTIONS: instructions, M.CYCLES: instructions, M.BRANCHES: branches}
        best: int | None = None
        for i in range(self.cfg.num_gp):
            stream = self.counts(s, i, guest, cpl)
            if stream is None or not s[self.evtsel + i] & M.EVENTSEL_INT:
                continue
            # Exact for one instruction per cycle; a CMASK > 1 counter with INT inside an ipc > 1 loop
            # is not split at its wrap (none of the suites programs one; docs/fidelity.md).
            rate = self._apply_cmask(s[self.evtsel + i], amount[stream], instructions)
            if rate:
                k = -(-(self.gp_mask + 1 - s[self.pmc + i]) // rate)
                best = k if best is None else min(best, k)
        for j in range(self.cfg.num_fixed):
            stream = self.fixed_counts(s, j, cpl)
            if stream is None or not (s[self.fixed_ctr_ctrl] >> (4 * j)) & M.FIXED_PMI:
                continue
            rate = amount[stream]
            if rate:
                k = -(-(self.fixed_mask + 1 - s[self.fixed_ctr + j]) // rate)
                best = k if best is None else min(best, k)
        return best

    def raise_pmi(self, s: list[int]) -> None:
        """A PMI request: freeze per DEBUGCTL, then signal through LVTPC.

        Freeze happens when the PMI is raised, not when it is serviced (F-1.9.5):
        legacy Intel clears GLOBAL_CTRL (F-1.9.1), v4+ sets CTR_Frz (F-1.9.3),
        AMD FPMCI sets PMCF (F-3.7.1).
        """
        dbg = s[self.debugctl]
        if dbg & M.DEBUGCTL_FREEZE_PERFMON_ON_PMI and self.global_status >= 0:
            if self.cfg.intel and not self.cfg.streamlined_freeze:
                s[self.global_ctrl] = 0
            else:
                s[self.global_status] |= M.STATUS_CTR_FRZ
        if dbg & M.DEBUGCTL_FREEZE_LBRS_ON_PMI and self.global_status >= 0:
            if self.cfg.amd or self.cfg.streamlined_freeze:
                s[self.global_status] |= M.STATUS_LBR_FRZ
            else:
                s[self.debugctl] &= ~1  # legacy: clear DEBUGCTL.LBR (F-1.9.2)
        self.lvtpc_signal(s)
