"""share passes."""
