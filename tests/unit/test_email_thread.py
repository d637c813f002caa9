"""providers/templates/email_thread.py: the References chain of a lifecycle's mails (RFC 5322 section 3.6.4)."""

from __future__ import annotations

from providers.templates.email_thread import MAX_REFERENCES_CHARS, chain, kept_ref, reply_headers


def ids(n: int) -> list[str]:
    return [f"<{i:032x}@example.com>" for i in range(n)]


def test_each_mail_keeps_the_whole_chain_for_the_next():
    m = ids(4)
    ref = None
    for message_id in m:
        ref = kept_ref(ref, message_id)
    assert ref == " ".join(m)
    assert reply_headers(ref) == {"In-Reply-To": m[-1], "References": " ".join(m)}
    assert reply_headers(None) == {} and kept_ref(None, m[0]) == m[0]


def test_a_long_chain_keeps_the_root_and_the_newest_within_the_limit():
    m = ids(40)  # 40 x 46 characters: more than the limit
    ref = None
    for message_id in m:
        ref = kept_ref(ref, message_id)
    assert ref is not None and len(ref) <= MAX_REFERENCES_CHARS
    kept = chain(ref)
    assert kept[0] == m[0] and kept[-1] == m[-1]
    assert kept[1:] == m[len(m) - len(kept) + 1 :]  # the newest, in order, after the root


def test_a_reference_that_is_not_message_ids_starts_a_new_thread():
    for bad in ("<x@y>\r\nBcc: evil@example.com", "1503435956.000247", "<a@b> c", "", "<a b@c>"):
        assert chain(bad) == [] and reply_headers(bad) == {}
    assert kept_ref("C123:1503435956.000247", "<n@example.com>") == "<n@example.com>"
