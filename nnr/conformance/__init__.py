"""nnr's conformance suite: a manifest of bitstreams with checksums, features and expected results,
a runner with decoder plugins (nnr in-process, the nnr_decode CLI, the reference NNCodec, any
command), reports, syntax coverage and the generator of the streams nnr writes (issue 4)."""
from nnr.conformance.manifest import ManifestError, load_manifest, validate_manifest, write_manifest

__all__ = ["ManifestError", "load_manifest", "validate_manifest", "write_manifest"]
