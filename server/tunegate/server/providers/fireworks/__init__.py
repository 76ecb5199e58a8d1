"""Fireworks AI provider."""
