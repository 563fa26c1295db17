"""`python -m services.scheduler`: the one place that decides where requests run."""

from services import telemetry
from services.runtime import new_broker, run_service, service_settings
from services.scheduler.lease import Lease
from services.scheduler.service import lead, register, tick


def main() -> None:
    settings = service_settings("scheduler")
    broker = new_broker(settings.nats_url or "", "scheduler")
    scheduler = register(broker, settings)
    interval = min(settings.queue_ack_wait / 3, settings.heartbeat_interval)
    lease = Lease(
        lambda: broker.connection.jetstream(),
        holder=telemetry.identity()[1],
        replicas=settings.stream_replicas,
    )
    run_service(
        broker,
        background=[
            scheduler.run,
            lambda: lead(broker, settings, scheduler, lease),
            lambda: tick(scheduler, interval),
        ],
        on_stop=[scheduler.release_all, lease.close],
    )


if __name__ == "__main__":
    main()
