"""LLM agents: roles, prompts, the coordinator and the engine. No Django here."""
