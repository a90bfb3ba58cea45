"""The methods of the federated benchmark: defined in nnr.fl.catalog (nnr_make_test_material codes
with the same `nnr` method), re-exported here for the harness."""
from nnr.fl.catalog import Method, methods  # noqa: F401
