"""Storage: the SQL store and its migrations, and piece files on disk."""
