"""A daphne server's shutdown (SIGTERM, SIGINT): prompt, whatever its requests and runs were doing.

Daphne stops its reactor and kills the requests in progress, but a request in a synchronous
view or middleware holds a thread of asgiref's pool, waiting for the stopped loop: Python's exit
then waits for that thread forever. So once the reactor has stopped, the process exits after
EXIT_GRACE_S even if such threads remain (the code sandbox's workers are stopped first).

In embedded mode the engine is stopped before the reactor (its runs handed back, see
workflows.execution.run_loop), on a thread: the reactor's own is async, no database there.
"""

import logging
import os
import sys
import threading

from workflows.engine.sandbox import shutdown as sandbox_shutdown

logger = logging.getLogger(__name__)

#: How long a stopped server waits for its threads before it exits all the same (seconds).
EXIT_GRACE_S = 2.0


def stop_with_server(*, engine=None) -> None:
    """Hook the server's shutdown (under daphne; elsewhere there is no reactor and nothing to do)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return
    if engine is not None:
        from twisted.internet.threads import deferToThread

        reactor.addSystemEventTrigger("before", "shutdown", deferToThread, engine.stop)
    reactor.addSystemEventTrigger("after", "shutdown", _exit_soon)


def _exit_soon() -> None:
    threading.Thread(target=_exit_if_stuck, name="weft-exit", daemon=True).start()


def _exit_if_stuck() -> None:
    """Exit after EXIT_GRACE_S unless the process has ended by then (this thread is a daemon)."""
    threading.Event().wait(EXIT_GRACE_S)
    busy = [thread.name for thread in threading.enumerate() if not thread.daemon and thread.is_alive()]
    logger.warning("Exiting with %d thread(s) still busy (requests cut short by the shutdown).", len(busy))
    try:
        sandbox_shutdown()
    finally:
        logging.shutdown()
        os._exit(0)
