"""What Shoal's HTTP services and clients share, below every one of them (it imports only shoal.core):
``listen`` starts an aiohttp application on an address, ``json_api`` reads JSON bodies and answers errors
as JSON, ``tls`` defers the load of the CA certificates until an https request needs them, ``limits`` holds
the timeouts, request sizes and open-file limit every server keeps."""
