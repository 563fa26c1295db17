"""The scheduler: the one place that decides where a request runs."""
