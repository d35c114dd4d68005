"""Voice activity, window by window, with the Silero model that ships inside faster-whisper.

faster-whisper runs Silero over a whole recording at once (``SileroVADModel.__call__``): each 512-sample
window is given the last 64 samples of the window before it as context, and the model's recurrent state
is carried from window to window. A live microphone arrives a few windows at a time, so this class
feeds the same ONNX session the same inputs, keeping the context and the state between calls; the
probabilities are identical to a pass over the whole recording (a test checks this).
"""

from __future__ import annotations

import numpy as np

from avatar.types import ASR_SAMPLE_RATE, AudioArray, FloatArray

WINDOW = 512
"""Samples per decision at 16 kHz (32 ms): the window Silero is trained on."""
CONTEXT = 64
WINDOW_SECONDS = WINDOW / ASR_SAMPLE_RATE


class StreamingVad:
    """Speech probability of each 32 ms window of a 16 kHz stream, fed in pieces of any length.

    ``feed`` is cheap (about 0.1 ms per window on one core): the model is shared by every session of the
    process (ONNX Runtime sessions may be run from several threads at once), while the context and state
    are this stream's own.
    """

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self._pending = np.zeros(0, np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far (a new stream begins)."""
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def feed(self, audio: AudioArray) -> FloatArray:
        """The probabilities of the whole windows completed by ``audio`` (the rest waits for more)."""
        samples = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        whole = samples.size // WINDOW * WINDOW
        self._pending = samples[whole:]
        if whole == 0:
            return np.zeros(0, np.float32)
        windows = samples[:whole].reshape(-1, WINDOW)
        contexts = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]])
        batch = np.concatenate([contexts, windows], axis=1)
        out, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = windows[-1, -CONTEXT:].copy()
        return np.asarray(out, np.float32).reshape(-1)
