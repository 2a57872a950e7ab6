"""Secrets never reach ops output."""

from __future__ import annotations

from ops.masking import MASK, mask_body, mask_text

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjdXN0b21lci0xIn0.c2lnbmF0dXJl"


def test_json_bodies_lose_sensitive_values_at_any_depth() -> None:
    body = '{"order": {"payment_method": "pm_1", "card": {"n": 4}}, "Authorization": "x", "id": 1}'

    assert mask_body(body) == {
        "order": {"payment_method": MASK, "card": MASK},
        "Authorization": MASK,
        "id": 1,
    }


def test_jwts_are_masked_wherever_they_appear() -> None:
    assert JWT not in str(mask_body(f'{{"note": "sent {JWT} here"}}'))
    assert JWT not in mask_text(f"header was {JWT}")


def test_free_text_masks_key_values_bearer_tokens_and_echoed_input() -> None:
    text = "password=hunter2 Authorization: Bearer abc.def {'loc': ('x',), 'input': 'pm_1'}"

    masked = mask_text(text)

    assert "hunter2" not in masked
    assert "abc.def" not in masked
    assert "pm_1" not in masked
