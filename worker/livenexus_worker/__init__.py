"""LiveNexus worker: real-time, VAD-gated faster-whisper transcription for LiveKit rooms."""

__version__ = "0.1.0"
