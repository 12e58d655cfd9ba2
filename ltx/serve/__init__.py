"""Serving: an HTTP job API over one resident model (`python -m infer.serve`, `ltx-serve`).

    settings.py   ServeSettings: what a server is configured with
    store.py      JobStore: the SQLite job store, the only place job state changes (leases, fair order)
    schema.py     the request's JSON fields and their checks; the mapping onto the family APIs
    runner.py     Runner: the resident pipeline and one job; RequestChecker: the pipeline's own validation
    worker.py     EmbeddedBackend: the worker thread in the server's process
    app.py        create_app(settings, backend): the FastAPI app
    metrics.py    Prometheus metrics in the app's own registry
    server.py     uvicorn in the foreground (serve) or in a thread (start_in_thread)
    ray_backend.py  the same API with generation replicas on Ray Serve

Needs the `serve` extra (fastapi, uvicorn, prometheus_client, python-multipart); nothing else in `ltx` imports this
package, and importing it imports none of them (the modules above do).
"""
