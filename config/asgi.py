"""ASGI entry point for daphne: HTTP through Django, websockets through Channels."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from config.proxy import TrustedProxyMiddleware  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402
from config.shutdown import stop_with_server  # noqa: E402

if settings.EMBEDDED:
    # Embedded mode: this server process is also the worker. Starting the engine now lets its
    # reaper resume runs a previous process left running, before anyone starts a new one.
    from workflows.execution.run_loop import server_run_loop
    from workflows.schedules.embedded import schedule_ticker

    server_run_loop.start()
    schedule_ticker.start()

# SIGTERM: hand the server run loop's runs back, and exit within seconds (config/shutdown.py).
stop_with_server(engine=server_run_loop if settings.EMBEDDED else None)

# TrustedProxyMiddleware outside all: the client's address comes from a trusted proxy's header only
# (config/proxy.py), for HTTP and websockets alike.
application = TrustedProxyMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)

# What is loaded now lives as long as the process: out of the collector's way. With a thousand
# consumers coming and going, full collections walked it all and paused the loop (13 to 300 ms,
# the tail of the websocket bench's 500x2).
gc.freeze()
