"""Per-vendor renderers: one `RenderedMessage` in, the vendor's JSON body out, within the vendor's limits.

Each renderer is pure (no I/O, no secrets) so golden-file tests pin its output and `Provider.preview` can show it.
Limits are met by truncating with a visible marker (`common.TRUNCATION_MARKER`), never by letting the vendor 400.
"""
