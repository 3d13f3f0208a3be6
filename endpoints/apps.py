from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "endpoints"

    def ready(self) -> None:
        from endpoints import schema  # noqa: F401 - registers the OpenAPI auth extension
