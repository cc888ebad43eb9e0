"""Slots: one backend process, one port, one model and one lifecycle each (DESIGN.md)."""

from hal0.slots.manager import SlotManager
from hal0.slots.slot import Slot, SlotDeps, Supervision
from hal0.slots.state import DISPATCHABLE, SlotSnapshot, SlotState

__all__ = ["DISPATCHABLE", "Slot", "SlotDeps", "SlotManager", "SlotSnapshot", "SlotState", "Supervision"]
