"""Sealing pending rows into versions: when (`policy`), how (`version`: profile, assess,
write once), in the background (`jobs`: at most one seal in flight per dataset), and what
the sealed versions say to the loop (`history`: watermarks, heads, references).
"""
