"""The dashboards' static files (HTML, CSS, JavaScript), shipped as package data: no build step, nothing
loaded from anywhere else, so a page works on a fleet with no internet access (shoal.http.live serves them)."""
