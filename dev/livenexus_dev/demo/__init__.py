"""The `make demo` pieces: a speaker bot, a listener, and the orchestration around a local livekit-server."""
