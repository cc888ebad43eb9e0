"""The hardware probe and hardware.json."""

from hal0.hardware.probe import SCHEMA, probe, run_nvidia_smi

__all__ = ["SCHEMA", "probe", "run_nvidia_smi"]
