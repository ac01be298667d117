"""Test-time decoding with MRO's rewards: the search, best-of-n, the verified cascade, and
the one `decode` that dispatches between them and plain sampling."""
