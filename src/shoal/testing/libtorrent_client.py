"""libtorrent (the wheel, BSD) as an independent BitTorrent client for tests and benchmarks: one set of
session settings. libtorrent is a test dependency; only tests and benchmarks import this module."""

from __future__ import annotations

import libtorrent as lt

SESSION_SETTINGS = {
    "listen_interfaces": "127.0.0.1:0",
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    # Every test peer is on 127.0.0.1 (DESIGN.md).
    "allow_multiple_connections_per_ip": True,
    # Shoal's seeder speaks plain BEP 3 over TCP: without these libtorrent first tries uTP (BEP 29) and
    # protocol encryption, and falls back to plain TCP only seconds later.
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "out_enc_policy": int(lt.enc_policy.disabled),
    "alert_mask": int(lt.alert.category_t.error_notification | lt.alert.category_t.storage_notification),
}


def add_torrent(session: lt.session, info: lt.torrent_info, save_path: str) -> lt.torrent_handle:
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = save_path
    # Not auto-managed: libtorrent would otherwise hold a new torrent paused for its queue's next turn.
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    return session.add_torrent(params)
