"""`python -m infer.serve` / `ltx-serve`: the HTTP job API over one resident model (ltx/serve), configured by
Hydra (configs/serve.yaml; the schema is ltx.serve.settings.ServeSettings).

    python -m infer.serve                                   # the bundled demo on this machine; prints the URL
    python -m infer.serve device=cpu port=0                 # a free port
    python -m infer.serve model=ltx2-demo                   # the LTX-2 demo: videos with sound
    python -m infer.serve 'api_keys={alice: alice-secret-key, bob: bob-secret-key}' lora_dir=loras/
    python -m infer.serve backend=ray ray.replicas=2        # generation replicas on Ray Serve

Everything that can be wrong with the configuration (the preset, its weights, the device, the port) is found
before the server answers: the pipeline is opened (headers read) here, so a bad `model` or `checkpoint` ends in
one line, not in a server that refuses every request.
"""

from __future__ import annotations

import logging
import sys

from ltx.serve.settings import ServeSettings


def run(settings: ServeSettings) -> None:
    from ltx.serve.runner import open_model
    from ltx.serve.server import serve

    handler = logging.StreamHandler(sys.stdout)  # what the server does, one timestamped line each
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log = logging.getLogger("ltx.serve")
    log.handlers, log.propagate = [handler], False
    log.setLevel(logging.INFO)
    open_model(settings)  # a missing checkpoint or an unknown preset: one line now, before binding the port
    if settings.backend == "ray":  # the whole API as a Ray Serve application: ingress + generation replicas
        from ltx.serve.ray_backend import run as run_on_ray  # Ray is an optional extra: imported only when asked

        run_on_ray(settings)
        return
    serve(settings)


def main() -> None:
    from infer.app import hydra_app

    hydra_app(ServeSettings, "serve", run)


_main = main  # the name pyproject's `ltx-serve` entry point uses

if __name__ == "__main__":
    main()
