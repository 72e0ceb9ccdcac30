"""Running under systemd: readiness and reload notifications (``notify``), and the service units shipped in
the package with the command that installs them (``units``, ``units/*.service``)."""
