"""LiveNexus operator: reconciles TranscriptionRoom resources into one worker per room."""

__version__ = "0.1.0"
