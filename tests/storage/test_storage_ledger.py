"""The request ledger (ports.RequestLedger) on both adapters: claims, answers, releases, expiry,
and entries that die with their collection's scope."""

from __future__ import annotations

import time

from storage_helpers import collection_record, run_threads

from facebank.storage import RequestLedger


def test_adapters_implement_the_port(stores):
    assert isinstance(stores.ledger, RequestLedger)


def test_request_ledger(stores, cid):
    ledger, now = stores.ledger, time.time()
    key = "associate_faces:t"
    assert ledger.claim(cid, key, "d1", now - 60) == ("d1", None)
    # Another request with the token sees the claim, answered or not, and never takes it over.
    assert ledger.claim(cid, key, "d2", now - 60) == ("d1", None)
    assert ledger.answer(cid, key, '{"a": 1}') == '{"a": 1}'
    assert ledger.answer(cid, key, '{"a": 2}') == '{"a": 1}'  # the first answer stands
    assert ledger.claim(cid, key, "d1", now - 60) == ("d1", '{"a": 1}')
    # Entries made before `since` are expired: the token is free again.
    assert ledger.claim(cid, key, "d3", time.time() + 1) == ("d3", None)
    # A failed request releases its claim; an answered one is never released.
    ledger.release(cid, key)
    assert ledger.claim(cid, key, "d4", now - 60) == ("d4", None)
    ledger.answer(cid, key, "{}")
    ledger.release(cid, key)
    assert ledger.claim(cid, key, "d5", now - 60) == ("d4", "{}")
    # Not users, and gone with the collection.
    assert stores.meta.list_users(cid, 10)[0] == []
    stores.meta.delete_collection(cid)
    stores.meta.create_collection(collection_record(cid))
    assert ledger.claim(cid, key, "d6", 0) == ("d6", None)


def test_scopes_are_separate(stores, cid):
    ledger = stores.ledger
    stores.meta.create_collection(collection_record("other"))
    assert ledger.claim(cid, "create_user:t", "d1", 0) == ("d1", None)
    assert ledger.claim("other", "create_user:t", "d2", 0) == ("d2", None)
    assert ledger.answer("other", "create_user:t", '"other"') == '"other"'
    assert ledger.claim(cid, "create_user:t", "d3", 0) == ("d1", None)
    # Deleting one collection leaves the other's entries standing.
    stores.meta.delete_collection(cid)
    assert ledger.claim("other", "create_user:t", "d4", 0) == ("d2", '"other"')


def test_answer_and_release_of_an_unclaimed_key(stores, cid):
    """A claim that expired (or was released) meanwhile: answering returns the answer given and
    records nothing, releasing does nothing."""
    ledger = stores.ledger
    assert ledger.answer(cid, "delete_user:gone", '{"x": 1}') == '{"x": 1}'
    ledger.release(cid, "delete_user:gone")
    assert ledger.claim(cid, "delete_user:gone", "d1", 0) == ("d1", None)


def test_concurrent_claims_of_one_token_agree(stores, cid):
    claims = []
    run_threads(8, lambda i: claims.append(stores.ledger.claim(cid, "create_user:x", f"d{i}", 0)))
    assert len(claims) == 8 and len({digest for digest, _ in claims}) == 1
