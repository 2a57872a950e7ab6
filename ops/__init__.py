"""``orders-ops``: the operator's command line (DLQs, sagas, intake switch)."""
