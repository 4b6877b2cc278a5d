"""The host software: the step language, host perf, and KVM's mediated vPMU."""
