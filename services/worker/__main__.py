"""`python -m services.worker`: holds models on this host's devices and runs generations."""

from services.runtime import new_broker, run_service, service_settings
from services.worker.service import register


def main() -> None:
    settings = service_settings("worker")
    broker = new_broker(settings.nats_url or "", "worker")
    worker = register(broker, settings)
    run_service(broker, background=[worker.heartbeat_loop], on_stop=[worker.stop])


if __name__ == "__main__":
    main()
