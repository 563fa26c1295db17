"""Inference engines behind one small interface: llama.cpp (CPU, GGUF), exllamav2 (CUDA),
and a simulated engine for fleet-scale scheduler tests."""
