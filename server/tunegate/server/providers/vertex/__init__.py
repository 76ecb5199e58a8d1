"""Google Vertex AI provider (Gemini tuning): being built; its modules are not wired yet."""
