"""WSGI entry point for gunicorn (the Procfile's ``web``): HTTP through Django."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_wsgi_app = get_wsgi_application()

from django.conf import settings  # noqa: E402

from config.proxy import TrustedProxyWSGIMiddleware  # noqa: E402

if settings.EMBEDDED:
    # Embedded mode (no Redis), as config.asgi: this process is also the worker and the scheduler.
    from workflows.execution.run_loop import server_run_loop
    from workflows.schedules.embedded import schedule_ticker

    server_run_loop.start()
    schedule_ticker.start()

# The client's address comes from a trusted proxy's header only (config/proxy.py).
application = TrustedProxyWSGIMiddleware(django_wsgi_app)
