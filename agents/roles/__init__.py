"""Agent roles, one file each, prompts readable top to bottom."""
