"""Getting the bytes: pin a candidate to a digest, fetch by digest into the verified-only blob
cache, tarballs as one-layer images, and the layer compressions.

    pin          candidate -> digest (once) -> platform manifest, by digest
    blobcache    cache_path/blobs/sha256/<hex>: bytes checked against a digest known in advance
    tarball      http(s):// and file:// tarballs, by sha256
    compression  gzip, zstd, plain tar: recognised and undone as a stream
"""
