"""Public helpers for tests and demonstrations: a scriptable origin server, process helpers."""
