"""The galleries and what is chosen from them: index locations and URI forms, index parsing and
fetching (with the index's own signature), the loaded catalog, name resolution, capability
choice, and the ordered candidates of an entry.

    sources     backend URI forms and index locations
    index       index bytes -> entries (one sha256 and one digest per entry; local paths only
                from local indexes)
    fetch       an index from its sources, verified, with the last good copy
    galleries   every configured gallery, loaded; lookups by name and alias
    resolve     a requested name -> the concrete entry (meta-backends included)
    capability  host detection and the capability preference
    candidates  the ordered candidates of a concrete entry
"""
