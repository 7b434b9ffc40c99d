"""OCI: references, manifest and index documents, image layouts on disk, and our registry client.

references  reference grammar and Docker Hub normalisation
models      manifests, indexes, descriptors, media types (parsed from verified bytes only)
layout      OCI image layouts (directories and tars)
registry    the distribution client on httpx: capped, digest-checked, retried, authenticated
"""
