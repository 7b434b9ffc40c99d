"""Our OCI distribution client on httpx: capped, digest-checked, retried, authenticated.

client    RegistryClient: tags to digests, manifests and referrers, blobs with resume
auth      Authorization per registry and scope; refused tokens fetched again
endpoint  a registry or a mirror of it; Docker config.json credentials
errors    what a registry fails with
retry     retries of transient failures only
capped    one capped read of a response body
"""

from gallery.oci.registry.client import RegistryClient
from gallery.oci.registry.endpoint import Endpoint, load_docker_credentials
from gallery.oci.registry.errors import ManifestNotFound, RegistryError, RegistryUnauthorized
from gallery.oci.registry.retry import RetryPolicy

__all__ = [
    "Endpoint",
    "ManifestNotFound",
    "RegistryClient",
    "RegistryError",
    "RegistryUnauthorized",
    "RetryPolicy",
    "load_docker_credentials",
]
