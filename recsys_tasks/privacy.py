"""Pseudonymous user ids: raw user ids are replaced at ingest, and in the serving app's log, by a keyed hash
(HMAC-SHA256).

Without the key nobody can link a pseudonym back to a person, even by hashing guessed ids; with
the same key the same user gets the same pseudonym in every run, so histories stay joinable.
Where the key comes from, in order:
1. ``ADAPTREC_PSEUDONYMISATION_KEY`` (or, inside an Airflow task, the password of the Airflow
   connection ``adaptrec_pseudonymisation``, i.e. any configured secrets backend);
2. in the embedded default only, a random key generated on first use and kept with mode 0600 in
   ``$ADAPTREC_HOME/secrets/pseudonymisation.key``. ``ADAPTREC_MODE=production`` refuses to run
   without a configured key instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import pyarrow as pa
import pyarrow.compute as pc

from recsys_tasks.errors import ConfigError
from recsys_tasks.settings import Settings

AIRFLOW_CONNECTION_ID = "adaptrec_pseudonymisation"
# 128 bits of the digest: collisions stay negligible for billions of users and files stay small.
_PSEUDONYM_HEX_CHARS = 32


def local_key_file(settings: Settings):
    return settings.resolved_home / "secrets" / "pseudonymisation.key"


def resolve_key(settings: Settings) -> bytes:
    if settings.pseudonymisation_key is not None:
        return settings.pseudonymisation_key.get_secret_value().encode()
    if settings.mode == "production":
        raise ConfigError(
            "production mode needs a pseudonymisation key: set ADAPTREC_PSEUDONYMISATION_KEY or the password of "
            f"the Airflow connection '{AIRFLOW_CONNECTION_ID}'"
        )
    path = local_key_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: when two tasks start at once, exactly one creates the key and the other reads it.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip().encode()
    with os.fdopen(descriptor, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def pseudonymise(user_ids: pa.ChunkedArray | pa.Array, key: bytes) -> pa.Array:
    """Replace every id by its keyed hash; nulls stay null (the data gate reports them).

    Each distinct id is hashed once, so cost grows with users, not with interactions.
    """
    column = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
    encoded = pc.dictionary_encode(column)
    pseudonyms = pa.array([pseudonym(raw, key) for raw in encoded.dictionary.to_pylist()], pa.string())
    return pc.take(pseudonyms, encoded.indices)


def pseudonym(user_id: object, key: bytes) -> str:
    """The keyed hash of one raw user id: what ingest stores and the serving app logs instead of it."""
    return hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:_PSEUDONYM_HEX_CHARS]
