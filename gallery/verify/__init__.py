"""Verification: what each candidate must prove (the plan), gallery policies, Sigstore bundle
checks against a trusted root, where signatures are found, the evidence recorded, and the
re-check of installed backends.

    plan        the one decision: what each candidate must prove, or why it is refused
    policy      a gallery's signature policy (regexes matched in full)
    evidence    Evidence (what metadata records) and the verifier and signature-source protocols
    signatures  sigstore-python offline, plus our policy, statement and not_before checks
    discovery   signature bundles of a digest: referrers, tag-schema fallback, layouts
    recheck     ``gallery verify``: installed backends against today's policy
"""
