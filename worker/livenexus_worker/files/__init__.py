"""Audio files through the real-time pipeline: `livenexus-worker transcribe` and `bench`, and their sinks."""
