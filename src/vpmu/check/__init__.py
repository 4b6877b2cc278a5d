"""The checker: the composed system, ghost state, properties, and the explorer."""
