"""A team: accounts and sessions, leases on items, agreement between annotators, and training workers."""
