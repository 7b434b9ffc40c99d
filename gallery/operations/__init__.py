"""Operations on backends, split by job around the one trust gate.

session         what one run builds once (clients, caches, verifier, catalog, store, swapper)
modes           each operation as data (install, upgrade, dry-run, preload, lock, export, repair)
job             one backend's run: resolution, mode, trust plan, what is installed
gate            the trust gate: pins a candidate and proves what its plan demands; the only
                maker of ``Verified``
candidate_loop  the failure rules over the candidates; returns what was used, or ``Unchanged``
deploy          fetch, extract, run.sh, metadata, swap: accepts only ``Verified``
store           ``backends_path``: installed backends, meta-backend links
runner          plan -> lock -> loop -> use -> meta link, for every entry point
locking, bundles, maintenance   lock files, air-gapped bundles, repair/rollback/uninstall
"""
