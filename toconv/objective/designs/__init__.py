"""Designs: what the critic compares and what the decoder rebuilds, one registered class each.

Adding a design is one new module with a :class:`Design` subclass decorated with
``@register_design("name")`` plus its import below.
"""

from toconv.objective.designs.anchored import AnchoredRFDesign
from toconv.objective.designs.base import Design, build_design, list_designs, register_design
from toconv.objective.designs.global_design import GlobalDesign
from toconv.objective.designs.rf import RFDesign
from toconv.objective.designs.slots import SlotDesign

__all__ = ["AnchoredRFDesign", "Design", "GlobalDesign", "RFDesign", "SlotDesign", "build_design", "list_designs", "register_design"]
