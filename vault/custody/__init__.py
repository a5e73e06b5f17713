"""Custody: what keeps keys and secrets apart from the data: the key store and its HSM sealer,
the shred ledger, backups, private files and the site PKI."""
