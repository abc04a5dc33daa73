"""cleanup passes."""
