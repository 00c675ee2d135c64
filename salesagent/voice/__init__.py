"""Voice: audio, speech-to-text, text-to-speech, voice activity and turns, the voice protocols."""
