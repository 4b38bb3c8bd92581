"""Whisper inference: the engine, where models come from, hallucination guards and text normalisation for WER."""
