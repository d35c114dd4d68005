"""Live mode: a hands-free conversation with the face over WebRTC (aiortc).

``api`` answers the browser's SDP offer; ``hub`` keeps the sessions; each ``session`` listens to the
microphone (``listener``, ``vad``), runs turns (``turn``) through the same stages as every other turn,
and plays the face's voice and video in real time (``playout``, ``output``, ``tracks``, ``codecs``),
idling between replies on a loop drawn once per persona (``idle``).
"""
