"""Online experiments: shoppers split by session id between arms (model versions the catalog
holds, or ranking settings), measured on their own clicks, with a test that may be looked at
as often as one likes.

- :mod:`.design`: what an experiment is (its arms and shares), checked once.
- :mod:`.assignment`: which arm a session sees (sticky, deterministic, by the shares).
- :mod:`.interleaving`: team draft, for comparing two arms within one result list.
- :mod:`.routing`: a search inside the running experiment, recorded for its arm.
- :mod:`.analysis`: each arm's figures with confidence intervals, and the sequential test.
- :mod:`.service`: start, status and stop over the catalog.
"""
