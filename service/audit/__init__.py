"""The access audit log: who read which audio and who changed what, as one append-only,
hash-chained line of events per business (service/audit/chain.py explains the chain)."""
