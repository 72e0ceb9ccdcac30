"""The seeder: publishes watched directories to the swarm, as .torrent files, and over the BitTorrent wire."""
