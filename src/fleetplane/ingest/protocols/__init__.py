"""Pure protocol layers: bytes or request fields in, decoded messages and answers out.

Nothing here touches sockets, the database or the web layer, so each protocol can be tested
and benchmarked on its own and wired to any transport.
"""
