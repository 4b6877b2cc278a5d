"""vpmu: an executable model of x86 PMU virtualization and a checker for it."""

__version__ = "0.1.0"
