"""Writes notebooks/demo.ipynb (outputs stripped): python notebooks/make_demo_notebook.py. CI executes the
notebook with nbmake (`pytest --nbmake notebooks/demo.ipynb`)."""

from pathlib import Path

import nbformat as nbf

cells = [
    ("md", """# ltx demo: generate, look at the latents, SLERP between two prompts

Everything here runs on a laptop CPU in seconds with the bundled ShapesWorld demo model
(`demo/ltx-demo.safetensors`, `demo/text_encoder`), which was trained from scratch by `train/`."""),
    ("code", """import sys, pathlib
root = pathlib.Path.cwd()
while not (root / "pyproject.toml").exists():
    root = root.parent
sys.path.insert(0, str(root))

import torch
import matplotlib.pyplot as plt
from omegaconf import OmegaConf

from ltx.ltxv.checkpoint import load_dit, load_vae, read_checkpoint
from ltx.ltxv.text import T5TextEncoder
from ltx.ltxv.pipelines import SchedulerSpec, denoise_pass, decode
from ltx.presets import ModelPreset
from ltx.ltxv.guidance import TextConditioning
from ltx.core.interp import slerp

torch.set_num_threads(2)
preset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset),
                                             OmegaConf.load(root / "configs/model/ltx-demo.yaml")))
ckpt = read_checkpoint(root / preset.generation.checkpoint_path)
dit, vae = load_dit(ckpt), load_vae(ckpt)
t5 = T5TextEncoder(root / preset.generation.text_encoder_path, dtype=torch.float32,
                   max_tokens=preset.generation.text_tokens)
sched = SchedulerSpec.from_official(ckpt.extra.get("scheduler"))
g = preset.generation
print(dit.cfg, vae.cfg.spatial_factor, vae.cfg.temporal_factor, sched)"""),
    ("md", "## 1. Generate"),
    ("code", """def text(prompts):
    ctx, mask = t5.encode(prompts)
    nctx, nmask = t5.encode([g.negative_prompt] * len(prompts))
    return TextConditioning(ctx, mask, nctx, nmask)

def sample(prompts, seed=0, noise=None):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = denoise_pass(dit, vae, text(prompts), preset.sampling.first_pass, sched, height=g.height,
                               width=g.width, num_frames=g.num_frames, fps=g.fps, generator=gen, noise=noise)
        frames = decode(vae, latents)
    return latents, frames  # normalized latents (B, C, F', H', W'); frames (B, 3, F, H, W) in [0, 1]

def strip(frames, every=4):
    # one row per video: frames 0, every, 2*every, ... side by side
    return torch.cat([torch.cat(list(v[:, ::every].unbind(1)), dim=2) for v in frames], dim=1).permute(1, 2, 0)

prompts = ["a red circle moves to the left", "a blue square moves up"]
latents, frames = sample(prompts)
plt.figure(figsize=(10, 4)); plt.imshow(strip(frames)); plt.axis("off"); plt.title(" | ".join(prompts)); plt.show()"""),
    ("md", "## 2. Inspect the latents\n\nThe demo VAE compresses 8x in space and time into 16 channels, normalized per channel."),
    ("code", """print("latent shape (B, C, F', H', W'):", tuple(latents.shape))
print("per-channel mean / std:", latents.mean((0, 2, 3, 4))[:4], latents.std((0, 2, 3, 4))[:4])
# the first three principal components of the 16 channels, as RGB, per latent frame
z = latents[0].flatten(1).T  # (F'H'W', C)
z = z - z.mean(0)
_, _, v = torch.pca_lowrank(z, q=3)
pc = (z @ v).T.reshape(3, *latents.shape[2:])  # (3, F', H', W')
pc = (pc - pc.amin()) / (pc.amax() - pc.amin())
plt.figure(figsize=(6, 2)); plt.imshow(torch.cat(list(pc.unbind(1)), dim=2).permute(1, 2, 0)); plt.axis("off")
plt.title("latent frames 0, 1, 2 (PCA -> RGB)"); plt.show()"""),
    ("md", """## 3. SLERP between two prompts

Spherical interpolation keeps Gaussian noise on its shell (a plain average shrinks its norm), so every
in-between start point is a valid sample. Here we walk from prompt A's starting noise to prompt B's
while also interpolating the prompt embeddings, and show the middle frame of each video."""),
    ("code", """from ltx.ltxv.pipelines import first_pass_tokens
T = first_pass_tokens(preset.sampling, vae.cfg, height=g.height, width=g.width, num_frames=g.num_frames)
C = dit.cfg.in_channels
na = torch.randn(1, T, C, generator=torch.Generator().manual_seed(1))
nb = torch.randn(1, T, C, generator=torch.Generator().manual_seed(2))
(ca, ma), (cb, mb) = t5.encode(prompts[:1]), t5.encode(prompts[1:])
nctx, nmask = t5.encode([g.negative_prompt])
ts = [0.0, 0.25, 0.5, 0.75, 1.0]
rows = []
for t in ts:
    noise = slerp(na.flatten(1), nb.flatten(1), t).view(1, T, C)
    cond = TextConditioning(torch.lerp(ca, cb, t), torch.maximum(ma, mb), nctx, nmask)
    with torch.no_grad():
        lat = denoise_pass(dit, vae, cond, preset.sampling.first_pass, sched, height=g.height, width=g.width,
                           num_frames=g.num_frames, fps=g.fps, generator=None, noise=noise)
        rows.append(decode(vae, lat)[0, :, g.num_frames // 2])
    print(f"t={t:.2f}  |noise| = {noise.norm():.1f}  (|A| = {na.norm():.1f}, |B| = {nb.norm():.1f})")
plt.figure(figsize=(10, 2.5)); plt.imshow(torch.cat(rows, dim=2).permute(1, 2, 0)); plt.axis("off")
plt.title("A -> B: middle frame at t = " + ", ".join(map(str, ts))); plt.show()"""),
]

nb = nbf.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
out = Path(__file__).with_name("demo.ipynb")
nbf.write(nb, out)
print(f"wrote {out}")
