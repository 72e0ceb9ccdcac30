"""Public helpers for tests and demonstrations: a scriptable origin server, process helpers, a fake clock
(``clock``), waiting against a deadline (``poll``), a lock and an event that count their waiters
(``watched``) and the kernel's view of loopback sockets (``sockets``)."""
