"""Real-time streaming: VAD, utterances, LocalAgreement, the shared inference thread, per-stream pipelines
and the process-wide runtime that owns the engines and the streams."""
