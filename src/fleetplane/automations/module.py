"""The `automations` module: a customer's rules (trigger, conditions, actions), what they
fired and how each delivery went."""

from fleetplane import module_catalog
from fleetplane.core.modules import Module

module = Module(module_catalog.AUTOMATIONS)
router = module.router
