"""`python -m services.gateway`: Ollama's HTTP API on OLLAMA_HOST."""

import uvicorn

from services.gateway.app import create_app
from services.runtime import service_settings


def main() -> None:
    settings = service_settings("gateway")
    uvicorn.run(
        create_app(settings),
        host=settings.host.host or "0.0.0.0",
        port=settings.host.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
