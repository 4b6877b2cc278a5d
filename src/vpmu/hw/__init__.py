"""The physical CPU: PMU registers, local APIC LVTPC, VMX and SVM."""
