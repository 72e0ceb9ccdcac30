"""What node caches tell each other (storage.cache_store): this node's export document, and recording what
another node's export (core.cache_export) or cloud-manager's dump (core.cloud_manager_dump) names.

Rules, and why:

- An export names every file by both ids, so the pending SHA-256s are completed first; an entry whose
  SHA-256 is still pending (evicted before it was completed) cannot be, and is left out.
- Content fetched with origin credentials only (CacheStore.private) is never exported: it is served to
  nobody by id.
- An import is all or nothing: the document is validated whole before anything is recorded, in one
  transaction. Imported entries are known, not cached: they say where a file can be fetched, and entries
  this node has keep their state.

Blocking (SQLite, hashing), like the store.
"""

from __future__ import annotations

from shoal.core.cache_export import ExportedFile, export_document, parse_export
from shoal.core.cloud_manager_dump import KnownFile, is_cloud_manager_dump, parse_cloud_manager_dump
from shoal.storage.cache_index import CacheEntry
from shoal.storage.cache_store import CacheStore


def export(store: CacheStore, *, since: float | None = None, node: str = "") -> dict[str, object]:
    """The export document (core.cache_export) of ``store``'s entries added since ``since`` (all: None);
    ``node``, this node's piece server, is named as a holder of every file it has on disk."""
    store.complete_sha256()
    private = store.index.private_digests()
    files = [
        ExportedFile(
            e.digest,
            e.name,
            e.size,
            e.sha256,
            e.added,
            e.sources,
            tuple(sorted({*e.holders, *([node] if node and e.cached else [])})),
        )
        for e in store.index.entries(since=since)
        if e.digest not in private
        if e.sha256
    ]
    return export_document(files, node=node, now=store.clock())


def import_files(store: CacheStore, files: list[ExportedFile]) -> int:
    """Record what another node holds (validated already; see core.cache_export). All or nothing; entries
    this node has keep their state. The number of new entries."""
    added = 0
    with store.index.transaction() as db:
        for f in files:
            entry = CacheEntry(
                f.digest, f.sha256, f.size, f.name, f.added, f.added, False, False, "", False, f.sources, f.peers
            )
            added += store.index.insert_known(db, entry)
    return added


def import_known_sha256(store: CacheStore, files: list[KnownFile]) -> int:
    """Record files known by their SHA-256 only (a cloud-manager dump, validated already). All or nothing; a
    SHA-256 the cache has an entry for is skipped. The number of new ones."""
    added = 0
    with store.index.transaction() as db:
        for known in files:
            added += store.index.insert_known_sha256(db, known)
    return added


def import_document(store: CacheStore, doc: object) -> tuple[int, int]:
    """Validate and record a document as JSON reads it: Shoal's export (an object) or cloud-manager's dump
    (an array). (entries in it, new ones). Nothing is recorded unless all of it is valid."""
    if is_cloud_manager_dump(doc):
        known = parse_cloud_manager_dump(doc)
        return len(known), import_known_sha256(store, known)
    files = parse_export(doc)
    return len(files), import_files(store, files)
