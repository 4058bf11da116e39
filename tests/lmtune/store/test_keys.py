import pytest
from sqlalchemy import select

from lmtune.store.keys import authenticate, create_key
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
