"""Slots: one backend process, one port, one model and one lifecycle each (DESIGN.md)."""

from hal0.slots.changes import ChangeChannel
from hal0.slots.manager import SlotManager
from hal0.slots.policy import Supervision
from hal0.slots.slot import Slot, SlotDeps
from hal0.slots.state import DISPATCHABLE, SlotChanged, SlotSnapshot, SlotState

__all__ = ["DISPATCHABLE", "ChangeChannel", "Slot", "SlotChanged", "SlotDeps", "SlotManager", "SlotSnapshot",
           "SlotState", "Supervision"]
