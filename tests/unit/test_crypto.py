"""Secrets at rest: AES-256-GCM with key ids, rotation, row binding; API key hashing."""

from __future__ import annotations

import uuid

import pytest

from shared.crypto import DecryptError, KeyRing, KeyRingError, generate_key_spec, hash_api_key, new_api_key
from shared.secrets_at_rest import decrypt_config, encrypt_config


def test_round_trip_and_rotation():
    old = generate_key_spec("old")
    ring_v1 = KeyRing.parse(old)
    row = uuid.uuid4()
    blob = encrypt_config(ring_v1, row, {"url": "https://hooks.example/secret"})
    assert b"secret" not in blob
    assert KeyRing.key_id_of(blob) == "old"
    # A new primary key is added in front: old rows still decrypt, new rows use the new key.
    ring_v2 = KeyRing.parse(f"{generate_key_spec('new')},{old}")
    assert decrypt_config(ring_v2, row, blob) == {"url": "https://hooks.example/secret"}
    assert KeyRing.key_id_of(encrypt_config(ring_v2, row, {})) == "new"
    # Once the old key is gone, its rows fail loudly (and without echoing anything).
    with pytest.raises(DecryptError, match="no key with id 'old'"):
        decrypt_config(KeyRing.parse(generate_key_spec("new")), row, blob)


def test_ciphertext_is_bound_to_its_row_and_tamper_evident():
    ring = KeyRing.parse(generate_key_spec())
    row = uuid.uuid4()
    blob = encrypt_config(ring, row, {"token": "t"})
    with pytest.raises(DecryptError):
        decrypt_config(ring, uuid.uuid4(), blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptError):
        decrypt_config(ring, row, tampered)


@pytest.mark.parametrize("spec", ["", "nokey", "k1:not-base64!", "k1:c2hvcnQ=", ":" + "A" * 44])
def test_malformed_key_specs_are_refused_without_echoing_them(spec):
    with pytest.raises(KeyRingError) as caught:
        KeyRing.parse(spec)
    if len(spec) > 8:
        assert spec.split(":", 1)[-1] not in str(caught.value)


def test_api_keys_are_random_and_hashed():
    a, b = new_api_key(), new_api_key()
    assert a != b and a.startswith("hk_") and len(a) > 40
    assert hash_api_key(a) != a and len(hash_api_key(a)) == 64
    assert hash_api_key(a) == hash_api_key(a)
