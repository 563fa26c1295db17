"""The registry: owns the model store under OLLAMA_MODELS."""
