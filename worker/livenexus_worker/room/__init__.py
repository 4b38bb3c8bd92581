"""`livenexus-worker run`: the worker as a LiveKit agent in one room, its environment settings and the
service that wires runtime, metrics, health endpoints and tier control together."""
