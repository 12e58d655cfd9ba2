"""Measure one stage's activation peak as RSS on the CPU (run in a fresh process by tests/test_memory_plan.py and
tools/bench_memory.py): prints JSON {"measured": bytes above the RSS before the stage, "predicted": the planner's
trace of the same call on `meta`}."""

from __future__ import annotations

import json
import resource
import sys

import torch

from ltx.core.memory_plan import traced_peak


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def reset_peak() -> None:
    """Linux: VmHWM (the peak RSS) back to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def dit_case(tokens: int):
    from ltx.ltxv.transformer import DiT, DiTConfig

    cfg = DiTConfig(num_layers=2, num_heads=8, head_dim=32, in_channels=16, out_channels=16, caption_channels=64)

    def inputs(device):
        g = dict(device=device)
        return (torch.randn(1, tokens, 16, **g) if device != "meta" else torch.empty(1, tokens, 16, **g),
                torch.full((1,), 0.5, **g), torch.zeros(1, 32, 64, **g), torch.ones(1, 32, **g),
                torch.zeros(1, 3, tokens, **g))

    with torch.device("meta"):
        meta = DiT(cfg)
    model = DiT(cfg).init_weights(torch.Generator().manual_seed(0))
    return model, meta, inputs


def vae_case(frames: int, size: int):
    import ltx
    from ltx.ltxv.vae import VideoVAE

    vae = ltx.load_pipeline(device="cpu").vae
    with torch.device("meta"):
        meta = VideoVAE(vae.cfg)
    s, t = vae.cfg.spatial_factor, vae.cfg.temporal_factor
    shape = (1, vae.cfg.latent_channels, (frames - 1) // t + 1, size // s, size // s)

    def inputs(device):
        return (torch.randn(shape) if device != "meta" else torch.empty(shape, device="meta"),)

    class Decode(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, z):
            return self.v.decode(z)

    return Decode(vae), Decode(meta), inputs


def main() -> None:
    torch.set_num_threads(1)
    case, *sizes = sys.argv[1:]
    model, meta, inputs = {"dit": dit_case, "vae": vae_case}[case](*map(int, sizes))
    predicted = traced_peak(lambda: meta(*inputs("meta")))
    args = inputs("cpu")
    with torch.no_grad():
        model(*args)  # warm up: one-time allocations (oneDNN primitives, thread pools) are not the stage's
        reset_peak()
        before = rss()
        out = model(*args)
    del out
    print(json.dumps({"measured": peak_rss() - before, "predicted": predicted, "rss_before": before}))


if __name__ == "__main__":
    main()
