"""Import stub for `torchaudio`, used only by the LTX-2 parity tests (put on sys.path by tests/conftest.py).

`ltx-core` 1.0.0 imports torchaudio at module level (ltx_core/model/audio_vae/ops.py, for its
MelSpectrogram/resample preprocessing), and no torchaudio wheel loads beside torch 2.13. This stub lets the
reference modules import; anything that would *call* torchaudio fails loudly. Our audio preprocessing
(ltx.ltx2.audio) is checked against an independent implementation instead (tests/ltx2/test_ltx2_audio.py).
"""


class _Missing:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        raise ImportError(f"torchaudio.{self._name}.{attr} is a test stub (no torchaudio wheel for this torch)")


transforms = _Missing("transforms")
functional = _Missing("functional")
