"""Tables owned by ``auth`` (SQLAlchemy Core). Migrations: integrity/migrations, branch "auth"."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()

# API clients (other BHXH systems). Only a SHA-256 of the key's secret part is stored: the key
# carries 256 random bits, so a fast hash is enough (no password stretching needed).
api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("secret_hash", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# --- Accounts: people, their second factors, sessions and throttling counters ----------------
from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer  # noqa: E402

# People. ``username`` is stored NFKC-normalised and case-folded, so one name is one account.
users = Table(
    "users",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text, nullable=False),
    # Set by an admin or by policy: the account may do nothing but enrol TOTP until it has one.
    Column("mfa_required", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("password_changed_at", DateTime(timezone=True), nullable=False),
    # When a recovery code was last used (the owner is told on /v1/auth/me until regenerated).
    Column("recovery_used_at", DateTime(timezone=True), nullable=True),
)

# TOTP (RFC 6238). Secrets are AES-GCM ciphertexts; ``last_step`` is the replay guard: a code
# is accepted only by ``UPDATE … WHERE last_step < :step`` (-1 before any use).
totp_credentials = Table(
    "totp_credentials",
    metadata,
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
    Column("secret_ct", LargeBinary, nullable=True),
    Column("confirmed_at", DateTime(timezone=True), nullable=True),
    Column("pending_ct", LargeBinary, nullable=True),
    Column("pending_created_at", DateTime(timezone=True), nullable=True),
    Column("last_step", BigInteger, nullable=False),
)

# Recovery codes: salted SHA-256 of 80-bit random codes; ``used_at`` set once, atomically.
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("code_id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("salt", LargeBinary(16), nullable=False),
    Column("digest", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

# Sessions and half-logged-in MFA challenges, both stored as SHA-256 of the random token.
sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(8), nullable=False),  # "full" or "enrol" (may only enrol TOTP)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("mfa_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

mfa_challenges = Table(
    "mfa_challenges",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

# Failure counters: ``acct:<username>`` (known or not, so unknown names behave the same),
# ``addr:<source address>`` and ``dev:<device id>``. Kept in the database so they hold across
# instances and restarts; each attempt is reserved (counted) by one atomic upsert before its
# secret is checked (auth.lockout.reserve).
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_started_at", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("disabled", Boolean, nullable=False),
)
