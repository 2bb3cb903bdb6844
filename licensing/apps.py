from django.apps import AppConfig


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "Apps and licenses"

    def ready(self):
        from .access import access_signals_connect

        access_signals_connect()
