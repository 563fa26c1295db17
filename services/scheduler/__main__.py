"""`python -m services.scheduler`: the one place that decides where requests run."""

from services.runtime import new_broker, run_service, service_settings
from services.scheduler.service import consume, register, tick


def main() -> None:
    settings = service_settings("scheduler")
    broker = new_broker(settings.nats_url or "", "scheduler")
    scheduler = register(broker, settings)
    interval = min(settings.queue_ack_wait / 3, settings.heartbeat_interval)
    run_service(
        broker,
        background=[
            scheduler.run,
            lambda: consume(broker, settings, scheduler),
            lambda: tick(scheduler, interval),
        ],
        on_stop=[scheduler.release_all],
    )


if __name__ == "__main__":
    main()
