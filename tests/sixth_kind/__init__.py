"""A sixth provider kind, made only of one connector module and one kind module, to prove
that adding a kind needs nothing else: no change to the puller, the store or the API."""
