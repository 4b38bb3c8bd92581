"""The livekit-server used by tests is the same helper the demo uses."""

from livenexus_dev.livekit_server import DevServerError, LiveKitServer, find_binary, free_port

__all__ = ["DevServerError", "LiveKitServer", "find_binary", "free_port"]
