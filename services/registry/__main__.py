"""`python -m services.registry`: owns the model store under $OLLAMA_MODELS."""

from services.registry.service import register
from services.runtime import new_broker, run_service, service_settings


def main() -> None:
    settings = service_settings("registry")
    broker = new_broker(settings.nats_url or "", "registry")
    background = register(broker, settings)
    run_service(broker, background=[background])


if __name__ == "__main__":
    main()
