"""The pure core: values in, values out. No asyncio, sockets, SQL, files or clock reads here."""
