"""corral's services: gateway, scheduler, worker and registry, sharing only `protocol` and `config`."""
