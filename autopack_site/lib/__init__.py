"""Framework-free helpers shared by the apps (no Django imports at module level)."""
