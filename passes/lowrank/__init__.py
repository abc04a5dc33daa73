"""lowrank passes."""
