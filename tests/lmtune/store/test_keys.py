import pytest
from sqlalchemy import select

from lmtune.store.jobs import create_job
from lmtune.store.keys import authenticate, authenticate_for_job, create_key, list_keys, revoke_key
from lmtune.store.models import ApiKey
from tests.helpers import BOTH_DATABASES

pytestmark = pytest.mark.parametrize("database_url", BOTH_DATABASES, indirect=True)


def test_a_key_authenticates_and_only_its_hash_is_stored(db):
    key_id, secret = create_key(db, "alice")
    assert authenticate(db, secret) == key_id
    assert authenticate(db, secret + "x") is None
    with db.session() as session:
        stored = session.scalar(select(ApiKey))
    assert secret not in (stored.hashed, stored.id, stored.name)


def test_a_revoked_key_no_longer_authenticates_and_leaves_the_list(db):
    kept, _ = create_key(db, "kept")
    gone, secret = create_key(db, "gone")
    assert [(key.id, key.name) for key in list_keys(db)] == [(kept, "kept"), (gone, "gone")]
    assert revoke_key(db, gone) is True
    assert authenticate(db, secret) is None
    assert [key.id for key in list_keys(db)] == [kept]
    assert revoke_key(db, gone) is False


def test_a_key_and_its_job_are_read_together_and_no_key_reads_anothers_job(db):
    alice, alice_secret = create_key(db, "alice")
    bob, bob_secret = create_key(db, "bob")
    job = create_job(db, owner=alice, spec={"model": "lmtune-tiny", "training_file": "file-a"}, queue="cpu", suffix="x")
    owner, read = authenticate_for_job(db, alice_secret, job.id)
    assert (owner, read.id, read.owner, read.status, read.suffix, read.spec) == (
        alice,
        job.id,
        alice,
        "queued",
        "x",
        {"model": "lmtune-tiny", "training_file": "file-a"},
    )
    assert authenticate_for_job(db, bob_secret, job.id) == (bob, None)  # answered as a job that does not exist
    assert authenticate_for_job(db, alice_secret, "ftjob-none") == (alice, None)
    assert authenticate_for_job(db, alice_secret + "x", job.id) == (None, None)
