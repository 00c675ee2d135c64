"""Voice sales agent domain: settings, catalog, prompts, conversation rules and call sessions.

Nothing in this package imports Ray, so it is tested in milliseconds; the Serve
deployments in `deployments/` are thin adapters over it.
"""
