"""The sales conversation: catalog, prompts, call state, grounding, turns, evaluation."""
