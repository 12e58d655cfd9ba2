"""What both model families share: safetensors IO and strict loading (`checkpoint`), the key-map engine (`keymap`),
attention dispatch (`attention`), the LoRA engine and its file formats (`lora`, `lora_formats`), sigma schedules
(`sigmas`), the sampling loop (`sampling`), guidance arithmetic (`guidance`), parallelism (`parallel`), media and
audio IO (`media`, `audio_io`), losses, SLERP (`interp`), control signals and pictures (`control`, `viz`).

Nothing here imports a family package (`ltx.ltxv`, `ltx.ltx2`): tests/test_layout.py checks it.
"""
