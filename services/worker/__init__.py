"""The worker: holds models on its devices and runs generations."""
