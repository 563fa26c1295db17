"""The gateway: the only HTTP surface (Ollama native API)."""
