"""The daemon: the long-running peer of a host, with the node cache (store in storage/, this package runs it)."""
