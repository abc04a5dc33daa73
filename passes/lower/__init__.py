"""lower passes."""
