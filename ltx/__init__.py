"""ltx: a from-scratch, parity-tested PyTorch reimplementation of LTX-Video 0.9.x and LTX-2 / 2.3.

    import ltx
    pipe = ltx.load_pipeline()                       # the bundled demo; real models: see ltx.api
    frames = pipe("a red circle moves to the left", seed=0).frames
"""

__version__ = "0.1.0"

__all__ = ["Pipeline", "load_pipeline", "open_pipeline", "load_preset", "plan_memory"]


def __getattr__(name: str):  # lazy: `import ltx` stays light (no transformers, no media libraries)
    if name in ("load_pipeline", "open_pipeline"):  # dispatch on the preset's family
        from ltx import api

        return getattr(api, name)
    if name == "Pipeline":  # the 0.9.x pipeline (LTX-2: ltx.ltx2.api.Pipeline)
        from ltx.ltxv.api import Pipeline

        return Pipeline
    if name == "load_preset":
        from ltx.presets import load_preset

        return load_preset
    if name == "plan_memory":  # the memory planner: what fits a VRAM budget (ltx.plan)
        from ltx.plan import plan_memory

        return plan_memory
    raise AttributeError(f"module 'ltx' has no attribute {name!r}")
