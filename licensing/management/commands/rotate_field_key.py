"""Re-encrypt every encrypted model field from the previous field key to the current one.

Rotation: set ``WEFT_FIELD_ENCRYPTION_KEY`` to the new key and ``WEFT_FIELD_ENCRYPTION_KEY_PREVIOUS``
to the old one, run this command, then drop the previous key. Values already readable with the
current key are left alone, so running it twice is harmless.

django_cryptography stores ``pickle(value)`` AES-CBC encrypted with a key derived by PBKDF2 from
``CRYPTOGRAPHY_KEY`` and ``CRYPTOGRAPHY_SALT``, and signed with an HMAC keyed by Django's
``SECRET_KEY``, so a change of ``SECRET_KEY`` makes the stored values unreadable too: put the old
one in ``SECRET_KEY_FALLBACKS`` and run this command, which re-signs them with the current one.
It works on the stored bytes directly and never unpickles or prints a value.

That format is not the ``cryptography`` package's Fernet (AES-256 rather than AES-128, and the
HMAC keyed by ``SECRET_KEY``), so ``MultiFernet`` cannot read it. The command reads and writes it
with the field library's public ``FernetBytes`` and ``FernetSigner``, and before it changes
anything it proves that they still match what the fields themselves write and read, through the
fields' public Django API (:func:`field_format_problem`): an upgrade of the library that changes
its key derivation or its format stops the command with nothing changed, never half-rotates.
"""

import getpass
import pickle
import pickletools
import struct
from collections import deque
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.core.signing import BadSignature
from django.db import connection, models, transaction
from django.utils.encoding import force_bytes
from django_cryptography.core.signing import FernetSigner
from django_cryptography.fields import EncryptedMixin
from django_cryptography.utils.crypto import FernetBytes, InvalidToken, pbkdf2

from history.services import AuditTarget, audit_log_record

# django_cryptography.conf derives CRYPTOGRAPHY_KEY by PBKDF2 over its CRYPTOGRAPHY_DIGEST and
# CRYPTOGRAPHY_SALT settings with this many iterations (not a setting). key_derivation_problem()
# checks it against the key the library derived, every run.
KDF_ITERATIONS = 30000
#: What the format check writes through each field and reads back.
PROBE = "weft-field-key-rotation-probe"


def derive_field_key(raw_key: str) -> bytes:
    """The AES key django_cryptography derives from a ``CRYPTOGRAPHY_KEY`` value."""
    digest = settings.CRYPTOGRAPHY_DIGEST
    return pbkdf2(raw_key, settings.CRYPTOGRAPHY_SALT, KDF_ITERATIONS, digest.digest_size, digest)


def current_writer() -> FernetBytes:
    """Encrypts as a field without a key of its own does: the library's derived key, signed with SECRET_KEY."""
    return FernetBytes(settings.CRYPTOGRAPHY_KEY, FernetSigner(settings.SECRET_KEY))


def key_derivation_problem() -> str:
    """Why :func:`derive_field_key` would not give the key the library derived itself, or ``""``."""
    if derive_field_key(settings.FIELD_ENCRYPTION_KEY) != force_bytes(settings.CRYPTOGRAPHY_KEY):
        return (
            "django_cryptography no longer derives CRYPTOGRAPHY_KEY as this command does "
            f"(PBKDF2, {KDF_ITERATIONS} iterations): nothing was changed."
        )
    return ""


def driver_bytes(value) -> bytes:
    """The bytes in a driver's ``Binary(...)``: psycopg wraps them (``.obj``), sqlite3's is a memoryview."""
    return bytes(getattr(value, "obj", value))


def field_format_problem(field: models.Field, writer: FernetBytes) -> str:
    """Why ``writer`` would not read and write ``field``'s stored bytes as the field does, or ``""``.

    Both directions go through the field's public Django API (``get_db_prep_value``,
    ``from_db_value``), so the check knows nothing of the library's internals.
    """
    written_by_field = driver_bytes(field.get_db_prep_value(PROBE, connection))
    try:
        read = writer.decrypt(written_by_field)
    except (BadSignature, InvalidToken):
        read = None
    try:
        readable_by_field = field.from_db_value(writer.encrypt(pickle.dumps(PROBE)), None, connection) == PROBE
    except (BadSignature, InvalidToken):
        readable_by_field = False
    if read != pickle.dumps(PROBE) or not readable_by_field:
        return (
            f"{field.model._meta.label}.{field.name}: django_cryptography's stored format is not the one "
            "this command reads and writes: nothing was changed."
        )
    return ""


def encrypted_fields() -> list[tuple[type[models.Model], models.Field]]:
    """Every concrete encrypted field using the global key, over all installed models."""
    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedMixin) and field.key is None and not model._meta.proxy
    ]


def is_whole_pickle(data: bytes) -> bool:
    """Whether ``data`` parses as exactly one pickle, read without executing it.

    The signature covers the ciphertext, not the AES key: decrypting with the wrong key passes
    the padding check about once in 256 tries and yields noise, which this tells apart.
    """
    try:
        last = deque(pickletools.genops(data), maxlen=1)
    except (ValueError, EOFError, struct.error):
        return False
    if not last:
        return False
    opcode, _, position = last[0]
    return opcode.name == "STOP" and position == len(data) - 1


@dataclass
class FieldReport:
    label: str
    rotated: int = 0
    current: int = 0


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted field from FIELD_ENCRYPTION_KEY_PREVIOUS to FIELD_ENCRYPTION_KEY "
        "(idempotent; one transaction)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be re-encrypted, then roll back.")
        parser.add_argument(
            "--actor",
            metavar="USERNAME",
            help="The operator running the rotation, for the audit log (default: the system and the shell user).",
        )

    def handle(self, *args, dry_run: bool = False, actor: str | None = None, **options):
        actor = self._actor(actor)
        previous = settings.FIELD_ENCRYPTION_KEY_PREVIOUS
        fallbacks = list(getattr(settings, "SECRET_KEY_FALLBACKS", []))
        if not previous and not fallbacks:
            raise CommandError(
                "Set WEFT_FIELD_ENCRYPTION_KEY_PREVIOUS to the key the stored values were written with "
                "(or SECRET_KEY_FALLBACKS after a change of SECRET_KEY)."
            )
        signing_keys = [settings.SECRET_KEY, *fallbacks]
        field_keys = [settings.CRYPTOGRAPHY_KEY, *([derive_field_key(previous)] if previous else [])]
        readers = [
            FernetBytes(field_key, FernetSigner(signing_key))
            for field_key in field_keys
            for signing_key in signing_keys
        ]

        writer = current_writer()
        fields = encrypted_fields()
        problem = key_derivation_problem() or next(
            (found for _, field in fields if (found := field_format_problem(field, writer))), ""
        )
        if problem:
            raise CommandError(problem)

        reports = []
        with transaction.atomic():
            for model, field in fields:
                reports.append(self._rotate_field(model, field, readers, writer))
            if dry_run:
                transaction.set_rollback(True)
            else:
                self._audit(actor=actor, reports=reports, previous_key=bool(previous), fallbacks=len(fallbacks))

        for report in reports:
            verb = "would re-encrypt" if dry_run else "re-encrypted"
            self.stdout.write(f"{report.label}: {verb} {report.rotated}, already current {report.current}")

    @staticmethod
    def _actor(username: str | None):
        if username is None:
            try:
                return f"system ({getpass.getuser()})"
            except (KeyError, OSError):  # no login name and no passwd entry for this uid
                return "system"
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"--actor: there is no user {username!r}.")
        return user

    @staticmethod
    def _audit(*, actor, reports: list[FieldReport], previous_key: bool, fallbacks: int) -> None:
        """One row for the whole rotation: what was re-encrypted, counted per field; never a key."""
        audit_log_record(
            actor=actor,
            action="field_key.rotate",
            target=AuditTarget(type="settings.field_encryption_key", id="FIELD_ENCRYPTION_KEY", repr="field key"),
            payload={
                "re_encrypted": sum(report.rotated for report in reports),
                "already_current": sum(report.current for report in reports),
                "fields": {
                    report.label: {"re_encrypted": report.rotated, "current": report.current} for report in reports
                },
                "from_previous_field_key": previous_key,
                "secret_key_fallbacks": fallbacks,
            },
        )

    def _rotate_field(self, model, field, readers: list[FernetBytes], writer: FernetBytes) -> FieldReport:
        report = FieldReport(label=f"{model._meta.label}.{field.name}")
        table = connection.ops.quote_name(model._meta.db_table)
        column = connection.ops.quote_name(field.column)
        pk_column = connection.ops.quote_name(model._meta.pk.column)
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {pk_column}, {column} FROM {table} WHERE {column} IS NOT NULL{lock}")  # noqa: S608
            rows = cursor.fetchall()
            for pk, stored in rows:
                stored = force_bytes(stored)
                if self._readable(writer, stored):
                    report.current += 1
                    continue
                plaintext = self._decrypt(readers, stored, report.label, pk)
                cursor.execute(
                    f"UPDATE {table} SET {column} = %s WHERE {pk_column} = %s",  # noqa: S608
                    [connection.Database.Binary(writer.encrypt(plaintext)), pk],
                )
                report.rotated += 1
        return report

    @staticmethod
    def _readable(reader: FernetBytes, stored: bytes) -> bool:
        try:
            return is_whole_pickle(reader.decrypt(stored))
        except (BadSignature, InvalidToken):
            return False

    @staticmethod
    def _decrypt(readers: list[FernetBytes], stored: bytes, label: str, pk) -> bytes:
        for reader in readers:
            try:
                plaintext = reader.decrypt(stored)
            except (BadSignature, InvalidToken):
                continue
            if is_whole_pickle(plaintext):
                return plaintext
        raise CommandError(
            f"{label} of row {pk} is readable with neither the current nor the previous key; nothing was changed."
        )
