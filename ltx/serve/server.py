"""Run the app with uvicorn: in the foreground (`serve`, what `python -m infer.serve` calls) or in a thread
(`start_in_thread`, for tests and notebooks). The socket is bound first, so `port=0` gets a free port that is
known (and printed) before the server starts."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from ltx.serve.app import create_app
from ltx.serve.settings import ServeSettings

log = logging.getLogger("ltx.serve")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 = a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror} (pick another port, or port=0)") \
            from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host == "0.0.0.0" else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _server(settings: ServeSettings, backend, **app_options) -> uvicorn.Server:
    app = create_app(settings, backend, **app_options)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                            log_config=None)
    return uvicorn.Server(config)


def serve(settings: ServeSettings, backend=None) -> None:
    """Serve with `backend` (None: the embedded one) until Ctrl-C / SIGTERM; prints the URL once the server
    answers (the model may still be loading: /readyz says when it is ready)."""
    sock = bind(settings.host, settings.port)
    server = _server(settings, backend)

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            print(f"ltx-serve: {settings.model} on {url_of(sock)}  (docs: {url_of(sock)}/docs, jobs in "
                  f"{settings.outputs})", flush=True)

    threading.Thread(target=announce, name="ltx-serve-announce", daemon=True).start()
    server.run(sockets=[sock])


@dataclass
class RunningServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def app(self):
        return self.server.config.app

    def stop(self, timeout: float = 60) -> None:
        """Stop serving and the backend (its running job goes back to the queue)."""
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(settings: ServeSettings, backend=None, *, ready_timeout: float = 60,
                    **app_options) -> RunningServer:
    """The server in a daemon thread, answering once this returns (the model may still be loading: /readyz).
    `app_options`: create_app's keywords (checker=, runner=)."""
    sock = bind(settings.host, settings.port)
    server = _server(settings, backend, **app_options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ltx-serve-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start within {ready_timeout} s")
        time.sleep(0.02)
    return RunningServer(url_of(sock), server, thread)
