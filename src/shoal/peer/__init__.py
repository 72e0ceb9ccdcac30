"""The swarm engine: the download engine, its fetchers, and the piece server."""
