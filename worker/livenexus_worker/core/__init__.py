"""The bottom layer: the audio format every stage speaks, the transcript event, and the tier ladder's rungs."""
