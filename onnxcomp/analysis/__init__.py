"""Graph analyses shared by passes (channel dependency groups, ...)."""
