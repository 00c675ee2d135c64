"""Ray Serve deployments: thin adapters that own an engine or the HTTP app, one per file."""
