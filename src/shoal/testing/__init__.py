"""Public helpers for tests and demonstrations: a scriptable origin server, process helpers, a fake clock
(``clock``), waiting against a deadline (``poll``), a lock that counts its waiters (``lock``) and the
kernel's view of loopback sockets (``sockets``)."""
