"""Platform: settings, Redis sessions, API keys, phone numbers, metrics, health, the LLM engine."""
