"""LiveNexus dev kit: speech synthesis, a local livekit-server, room bots and `make demo`.

Used by the tests, the benchmarks and the demo; no product package (livenexus_worker, livenexus_operator)
imports it, and the images do not carry it.
"""
