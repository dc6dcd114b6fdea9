"""Small helpers shared across the package (no torch imports at module level)."""
